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
//! request; each change is written through to the `auth_sessions` setting so a restart keeps
//! logouts, and expired sessions are dropped as the table changes.

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
    /// Serialises write-through so the last write carries the newest table.
    persist: tokio::sync::Mutex<()>,
}

impl Sessions {
    pub fn load(store: Arc<dyn Store>) -> coapgate_storage::Result<Sessions> {
        let table: HashMap<Uuid, Session> = match store.setting(SETTING)? {
            Some(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!("ignoring unreadable login sessions (everyone logs in again): {e}");
                HashMap::new()
            }),
            None => HashMap::new(),
        };
        Ok(Sessions { table: Mutex::new(table), store, persist: tokio::sync::Mutex::new(()) })
    }

    pub fn is_live(&self, session_id: Uuid, now: u64) -> bool {
        self.table.lock().unwrap().get(&session_id).is_some_and(|s| s.expires > now)
    }

    pub async fn start(&self, user_id: Uuid, expires: u64, now: u64) -> coapgate_storage::Result<(Uuid, Uuid)> {
        let (id, jti) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let mut table = self.table.lock().unwrap();
            table.retain(|_, s| s.expires > now);
            if table.len() >= MAX_SESSIONS {
                // The session closest to its end goes first.
                if let Some(oldest) = table.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                    table.remove(&oldest);
                }
            }
            table.insert(id, Session { user_id, refresh_jti: jti, expires });
        }
        self.save().await?;
        Ok((id, jti))
    }

    pub async fn rotate(&self, session_id: Uuid, jti: Uuid, now: u64) -> coapgate_storage::Result<Rotation> {
        let rotation = {
            let mut table = self.table.lock().unwrap();
            match table.get_mut(&session_id) {
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
            }
        };
        if !matches!(rotation, Rotation::Unknown) {
            self.save().await?;
        }
        Ok(rotation)
    }

    pub async fn end(&self, session_id: Uuid) -> coapgate_storage::Result<()> {
        let removed = self.table.lock().unwrap().remove(&session_id).is_some();
        if removed {
            self.save().await?;
        }
        Ok(())
    }

    pub async fn end_all_of(&self, user_id: Uuid) -> coapgate_storage::Result<()> {
        self.table.lock().unwrap().retain(|_, s| s.user_id != user_id);
        self.save().await
    }

    async fn save(&self) -> coapgate_storage::Result<()> {
        let _turn = self.persist.lock().await;
        let text = serde_json::to_string(&*self.table.lock().unwrap()).expect("sessions serialise");
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.put_setting(SETTING, &text))
            .await
            .map_err(|e| coapgate_storage::StorageError::Other(format!("task failed: {e}")))?
    }
}
