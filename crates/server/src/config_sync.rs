//! Keeps this node's routing table in step with configuration changes made on other nodes
//! (several nodes on one PostgreSQL database), and converts again the uplinks such a change
//! overtook.
//!
//! Two threads:
//! - `config-watch` waits on the store's [`ConfigWatch`] (LISTEN/NOTIFY on PostgreSQL, with the
//!   configuration epoch read at least every second: the fallback for a notification lost with
//!   its connection), reloads the registry whenever the epoch moved, and reports the epoch it
//!   routes by (also a heartbeat). A REST change returns once every live node reported it
//!   ([`Store::await_config_applied`], bounded by [`APPLY_WAIT`]). Each node records the
//!   lifecycle events of its own routing table, whichever of its reloads (the REST call's or
//!   this one) found the change.
//! - `config-refresh` serves [`ConfigSync::refresh_then`]: the writer refused a record because its
//!   converter was saved (on any node) after the record was converted. Everything waiting gets
//!   one reload, started after it asked, and is then converted again with the saved version.
//!   The notification usually got there first; this path is what makes "no uplink is stored with
//!   a converter older than one whose save returned" hold without waiting for it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use coapgate_script::EnginePool;
use coapgate_storage::{ConfigWatch, Store};

use crate::events::EventSink;
use crate::registry::Registry;

/// How long the watch waits for a notification before reading the epoch anyway.
const POLL: Duration = Duration::from_secs(1);
/// The longest a REST change waits for the other nodes to apply it (a node killed a moment ago
/// counts as live for three seconds).
pub const APPLY_WAIT: Duration = Duration::from_secs(2);

type Then = Box<dyn FnOnce() + Send>;

pub struct ConfigSync {
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    /// Where uplinks are converted again.
    pool: Arc<EnginePool>,
    /// The lifecycle events of the changes a reload here finds.
    events: Arc<EventSink>,
    waiting: Mutex<Vec<Then>>,
    wake: Condvar,
}

impl ConfigSync {
    /// Starts the refresh thread, and the watch thread when the store is shared with other nodes.
    pub fn start(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        pool: Arc<EnginePool>,
        events: Arc<EventSink>,
    ) -> anyhow::Result<Arc<ConfigSync>> {
        let watch = store.config_watch()?;
        let sync = Arc::new(ConfigSync { registry, store, pool, events, waiting: Mutex::new(Vec::new()), wake: Condvar::new() });
        let refresher = sync.clone();
        std::thread::Builder::new().name("config-refresh".into()).spawn(move || refresher.serve_refreshes())?;
        if let Some(watch) = watch {
            let watcher = sync.clone();
            std::thread::Builder::new().name("config-watch".into()).spawn(move || watcher.follow(watch))?;
        }
        Ok(sync)
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn pool(&self) -> &EnginePool {
        &self.pool
    }

    /// Runs `then` on the refresh thread after a reload of the routing table that started after
    /// this call (whether or not it succeeded: `then` decides what a stale route means).
    pub fn refresh_then(&self, then: Then) {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).push(then);
        self.wake.notify_one();
    }

    fn serve_refreshes(&self) {
        loop {
            let batch = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                while waiting.is_empty() {
                    waiting = self.wake.wait(waiting).unwrap_or_else(|e| e.into_inner());
                }
                std::mem::take(&mut *waiting)
            };
            match self.registry.reload(self.store.as_ref()) {
                Ok(changes) => self.events.record_lifecycle(&changes),
                Err(e) => tracing::warn!("reloading the configuration for {} uplinks failed: {e}", batch.len()),
            }
            for then in batch {
                then();
            }
        }
    }

    fn follow(&self, mut watch: Box<dyn ConfigWatch>) {
        let mut loaded: Option<i64> = None;
        let mut failing = false;
        loop {
            match watch.wait(POLL) {
                Ok(epoch) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("following other nodes' configuration changes again");
                    }
                    // The first epoch read reloads too: a change may have come between the
                    // start-up load and this watch's first LISTEN.
                    if loaded != Some(epoch) {
                        match self.registry.reload(self.store.as_ref()) {
                            Ok(changes) => {
                                self.events.record_lifecycle(&changes);
                                loaded = Some(epoch);
                            }
                            Err(e) => tracing::warn!("reloading the configuration another node changed failed: {e}"),
                        }
                    }
                    // Also the heartbeat that keeps this node among those a change waits for.
                    if let Some(epoch) = loaded
                        && let Err(e) = watch.report(epoch)
                    {
                        tracing::debug!("reporting the applied configuration failed: {e}");
                    }
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!("cannot follow other nodes' configuration changes: {e}; retrying every second");
                    }
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}
