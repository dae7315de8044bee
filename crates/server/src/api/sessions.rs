//! Login sessions: what makes tokens revocable.
//!
//! Every login starts a session; its access and refresh tokens carry the session's id
//! (`sessionId`, as ThingsBoard's tokens do). A token is honoured only while its session exists:
//! logout and a password change end sessions on the server, not only in the client.
//!
//! Refresh tokens rotate: a session remembers the id (`jti`) of the one refresh token it issued
//! last, and a refresh hands out a new one. Presenting an older refresh token of the session —
//! a stolen copy used after its owner refreshed, or the owner's after the thief did — ends the
//! whole session (the token family), as OAuth 2.0's security BCP recommends. The session's
//! lifetime is fixed at login (ThingsBoard's refresh token lifetime, one week): refreshing no
//! longer extends it.
//!
//! The table is small (one entry per live login) and kept in memory for the check on every
//! request; each change is made to the `auth_sessions` setting (read, changed and written as one
//! step, under the row's lock on PostgreSQL), so a restart keeps logouts and nodes sharing a
//! database share the sessions: there, a node reads the table again when its copy is older than
//! a second, so a login on one node works on all and a logout ends the session everywhere within
//! that second. Expired sessions are dropped as the table changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coapgate_storage::Store;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const SETTING: &str = "auth_sessions";
/// A bound on the table, far above what one administrator's clients need.
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    /// The refresh token this session issued last; any other one is a reuse.
    pub refresh_jti: Uuid,
    /// Seconds since the epoch.
    pub expires: u64,
}

/// What presenting a refresh token found.
pub enum Rotation {
    /// The current refresh token: here is the session's new one.
    Rotated { new_jti: Uuid, expires: u64 },
    /// An already-rotated refresh token: the session was ended.
    Reused,
    /// No such session (logged out, expired or ended by a reuse).
    Unknown,
}

pub struct Sessions {
    table: Mutex<HashMap<Uuid, Session>>,
    store: Arc<dyn Store>,
    /// Serialises this process's updates (the store serialises them across nodes).
    persist: tokio::sync::Mutex<()>,
    /// Several nodes share the store: the table is read again when older than [`REFRESH`], so a
    /// login on one node is honoured on every node, and a logout ends the session everywhere
    /// within that bound.
    shared: bool,
    loaded: Mutex<std::time::Instant>,
}

/// How stale a node's copy of the sessions may be on a store several nodes share.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

type Table = HashMap<Uuid, Session>;

fn parse(text: Option<&str>) -> Table {
    match text {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|e| {
            tracing::warn!("ignoring unreadable login sessions (everyone logs in again): {e}");
            HashMap::new()
        }),
        None => HashMap::new(),
    }
}

impl Sessions {
    pub fn load(store: Arc<dyn Store>) -> coapgate_storage::Result<Sessions> {
        let table = parse(store.setting(SETTING)?.as_deref());
        Ok(Sessions {
            table: Mutex::new(table),
            shared: store.shared_by_nodes(),
            store,
            persist: tokio::sync::Mutex::new(()),
            loaded: Mutex::new(std::time::Instant::now()),
        })
    }

    pub async fn is_live(&self, session_id: Uuid, now: u64) -> bool {
        if self.shared && self.loaded.lock().unwrap().elapsed() >= REFRESH {
            self.refresh().await;
        }
        self.table.lock().unwrap().get(&session_id).is_some_and(|s| s.expires > now)
    }

    /// Reads the table other nodes may have changed (on failure the copy in memory stays).
    async fn refresh(&self) {
        let _turn = self.persist.lock().await;
        if self.loaded.lock().unwrap().elapsed() < REFRESH {
            return; // another request just did
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.setting(SETTING)).await {
            Ok(Ok(text)) => {
                *self.table.lock().unwrap() = parse(text.as_deref());
                *self.loaded.lock().unwrap() = std::time::Instant::now();
            }
            Ok(Err(e)) => tracing::warn!("reading login sessions failed: {e}"),
            Err(e) => tracing::warn!("reading login sessions failed: {e}"),
        }
    }

    /// Applies `op` to the stored table (as one step across nodes) and keeps the result.
    async fn update<R: Send + 'static>(&self, op: impl FnMut(&mut Table) -> R + Send + 'static) -> coapgate_storage::Result<R> {
        let _turn = self.persist.lock().await;
        let store = self.store.clone();
        let (table, result) = tokio::task::spawn_blocking(move || {
            let mut op = op;
            let mut outcome: Option<(Table, R)> = None;
            store.update_setting(SETTING, &mut |text| {
                let mut table = parse(text.as_deref());
                let result = op(&mut table);
                let text = serde_json::to_string(&table).expect("sessions serialise");
                outcome = Some((table, result));
                text
            })?;
            Ok::<_, coapgate_storage::StorageError>(outcome.expect("the update ran"))
        })
        .await
        .map_err(|e| coapgate_storage::StorageError::Other(format!("task failed: {e}")))??;
        *self.table.lock().unwrap() = table;
        *self.loaded.lock().unwrap() = std::time::Instant::now();
        Ok(result)
    }

    pub async fn start(&self, user_id: Uuid, expires: u64, now: u64) -> coapgate_storage::Result<(Uuid, Uuid)> {
        let (id, jti) = (Uuid::new_v4(), Uuid::new_v4());
        self.update(move |table| {
            table.retain(|_, s| s.expires > now);
            if table.len() >= MAX_SESSIONS {
                // The session closest to its end goes first.
                if let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                    table.remove(&oldest);
                }
            }
            table.insert(id, Session { user_id, refresh_jti: jti, expires });
        })
        .await?;
        Ok((id, jti))
    }

    pub async fn rotate(&self, session_id: Uuid, jti: Uuid, now: u64) -> coapgate_storage::Result<Rotation> {
        self.update(move |table| match table.get_mut(&session_id) {
            Some(s) if s.expires <= now => Rotation::Unknown,
            Some(s) if s.refresh_jti == jti => {
                s.refresh_jti = Uuid::new_v4();
                Rotation::Rotated { new_jti: s.refresh_jti, expires: s.expires }
            }
            Some(s) => {
                tracing::warn!("refresh token reused: ending the login session of user {}", s.user_id);
                table.remove(&session_id);
                Rotation::Reused
            }
            None => Rotation::Unknown,
        })
        .await
    }

    pub async fn end(&self, session_id: Uuid) -> coapgate_storage::Result<()> {
        self.update(move |table| {
            table.remove(&session_id);
        })
        .await
    }

    pub async fn end_all_of(&self, user_id: Uuid) -> coapgate_storage::Result<()> {
        self.update(move |table| table.retain(|_, s| s.user_id != user_id)).await
    }
}
