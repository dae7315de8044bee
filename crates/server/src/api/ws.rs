//! ThingsBoard's WebSocket API for live data: `/api/ws` and `/api/ws/plugins/telemetry`.
//!
//! Commands come as ThingsBoard's wrappers: the older `{"tsSubCmds": […], "attrSubCmds": […],
//! "historyCmds": […]}` and the newer `{"authCmd": {…}, "cmds": [{"type": "TIMESERIES", …}]}`.
//! Served: time-series subscriptions (latest values of all or given keys, or a time window of
//! raw points, then every committed point of those keys), attribute subscriptions (all scopes
//! or one), one-shot history queries, and `unsubscribe`. Every answer is ThingsBoard's
//! `TelemetrySubscriptionUpdate`: `{subscriptionId, errorCode, errorMsg, data: {key: [[ts,
//! "value"], …]}, latestValues: {key: ts}}`, with `subscriptionId` the command's `cmdId`.
//! `entityDataCmds` are served for every filter `POST /api/entitiesQuery/find` serves
//! (`singleEntity`, `entityList`, `entityType`, `entityName`, `deviceType`, `assetType`): the query
//! is parsed and run by [`super::entity_query`], its page sent as ThingsBoard's `EntityDataUpdate`
//! with the same rows as `/find`, then an `update` with the new latest values (of
//! `query.latestValues` and `latestCmd.keys`) of an entity on that page whenever they change; a
//! query the parser refuses gets errorCode 2 with its reason. A `historyCmd` or `tsCmd` inside
//! fills each row's `timeseries` as REST's history read fills it (aggregation included); a
//! `tsCmd`'s keys then arrive live as time-series rows. A page (at most `allowedEntities`
//! long) is re-run, at most once per [`PAGE_REFRESH_INTERVAL`], after entities were created (by
//! uplinks), or created, deleted, renamed or assigned through REST, and after the latest value
//! it sorts by changed for an entity on it; a page that changed is sent whole, as ThingsBoard's
//! dynamic page links send it. (An entity off the page whose sort value changes is not noticed
//! until another re-run.) Counts, alarms and notifications are not served. History commands and a time-series
//! subscription's window read their points as `…/values/timeseries` does (`agg`, `interval`).
//!
//! Authentication: `?token=<JWT>` in the URL (refused with the REST API's 401 before the
//! upgrade), or an `authCmd` in the first message within [`AUTH_TIMEOUT`] (refused with close
//! code 1008 and the token's error, as ThingsBoard closes a pending session).
//!
//! A session reads the committed changes of the entities it subscribed to from its bounded
//! inbox ([`crate::live`]); one that falls [`crate::config::Config::ws_queue_capacity`] changes
//! behind — its client does not read — is closed with 1008 "Max pending updates limit
//! reached!" (ThingsBoard's text) and a log line. Sends wait for the socket, and the kill signal
//! interrupts a send that waits forever.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use coapgate_storage::model::{KvValue, Millis, User};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::authority::Caller;
use super::{ApiError, AppState, Query, auth, blocking, entity_query};
use crate::live::{Change, ChangeData, Inbox, KillSignal};

/// How long a session without a token in its URL has to send its `authCmd` (ThingsBoard's
/// `server.ws.auth_timeout_ms`).
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// A command message larger than this is refused by the WebSocket layer: commands are small,
/// and each session holds at most one while parsing it.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// The socket's read buffer. tungstenite zeroes the free part of it before every read attempt,
/// and a session attempts one each time it wakes (the command branch of its loop is polled
/// again): at the default 128 KiB that memset was a fifth of the server's CPU with 1,000
/// subscribers (perf). Commands are small; a larger one still fits, the buffer grows.
const READ_BUFFER_BYTES: usize = 4096;

/// Subscriptions one session may hold: each costs a place in the hub and a snapshot query.
const MAX_SUBSCRIPTIONS: usize = 1000;

/// An entity data query is re-run at most this often (after entities changed, or the latest
/// value it sorts by changed on its page): each run is one query of the database.
const PAGE_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// A ping goes out after this much silence from the client; a client silent for three times
/// as long is gone (ThingsBoard's `ping_timeout` of 30 s, pinged every 10 s).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long the close frame of a session being dropped may take to leave: a client that does
/// not read may never take it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// History points per key when a command gives no `limit` (ThingsBoard's `DEFAULT_LIMIT`).
const DEFAULT_LIMIT: u32 = 100;

/// ThingsBoard's `SubscriptionErrorCode`s.
const INTERNAL_ERROR: i32 = 1;
const BAD_REQUEST: i32 = 2;

/// `GET /api/ws[/plugins/telemetry][?token=…]` with an upgrade to WebSocket.
pub async fn upgrade(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<Query>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let user = match q.get("token").filter(|t| !t.is_empty()) {
        Some(token) => match auth::authenticate(&state, token).await {
            Ok((user, _)) => Some(user),
            Err(e) => return e.into_response(),
        },
        None => None,
    };
    let Some(inbox) = state.live.open() else {
        tracing::warn!("refusing a WebSocket session from {peer}: the maximum number of sessions is open");
        return ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "Max sessions limit reached!".into(), error_code: 2 }
            .into_response();
    };
    let entity_changes = state.live.entity_changes();
    ws.max_message_size(MAX_COMMAND_BYTES)
        .max_frame_size(MAX_COMMAND_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            let session = Session {
                entity_changes,
                pages: HashMap::new(),
                dirty_pages: BTreeSet::new(),
                next_refresh: tokio::time::Instant::now(),
                page_watch: None,
                kill: inbox.kill_signal(),
                state,
                socket,
                inbox,
                peer,
                user: String::new(),
                caller: None,
                subscriptions: BTreeMap::new(),
                watching: HashMap::new(),
            };
            session.run(user)
        })
}

/// After a REST write that succeeded, other than of telemetry or attributes (which reach the
/// sessions as changes): entities may have been created, deleted, renamed or assigned, so the
/// sessions' entity data queries are re-run ([`Session::refresh_pages`]). A write that changed
/// no entity costs at most one re-run of each query a second later.
pub async fn entities_changed_after_writes(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let writes_entities = request.method() != axum::http::Method::GET
        && request.method() != axum::http::Method::HEAD
        && !request.uri().path().starts_with("/api/plugins/")
        && !request.uri().path().starts_with("/api/entitiesQuery/");
    let response = next.run(request).await;
    if writes_entities && response.status().is_success() && state.live.has_page_watchers() {
        state.live.entities_changed();
    }
    response
}

/// What one subscription wants.
#[derive(Debug)]
enum Wants {
    Timeseries { keys: Option<Vec<String>> },
    Attributes { keys: Option<Vec<String>>, scope: Option<String> },
    /// An `entityDataCmd`: the latest values of these (key type, key) pairs of the entities
    /// on its page, all of one entity type, and every new point of `ts_keys` (its `tsCmd`'s).
    EntityData { entity_type: String, keys: Vec<(String, String)>, ts_keys: Vec<String> },
}

#[derive(Debug)]
struct Subscription {
    /// The entities it watches: one, or an entity data query's page.
    entities: Vec<Uuid>,
    wants: Wants,
}

/// One WebSocket session: its socket, its inbox and its subscriptions by `cmdId`.
struct Session {
    state: AppState,
    socket: WebSocket,
    inbox: Inbox,
    kill: KillSignal,
    peer: SocketAddr,
    /// The user's name, for log lines.
    user: String,
    /// Who authenticated the session: what its subscriptions may reach ([`Caller`]). Set before
    /// any command is handled.
    caller: Option<Caller>,
    subscriptions: BTreeMap<i64, Subscription>,
    /// Subscriptions per watched entity: the hub is told when the first starts and the last ends.
    watching: HashMap<Uuid, usize>,
    /// The entity data subscriptions' queries by `cmdId`, re-run when their page may have
    /// changed (ThingsBoard's dynamic page links).
    pages: HashMap<i64, entity_query::DataQuery>,
    /// Queries to re-run at `next_refresh`.
    dirty_pages: BTreeSet<i64>,
    next_refresh: tokio::time::Instant,
    /// Moves when entities are created, deleted, renamed or assigned.
    entity_changes: tokio::sync::watch::Receiver<u64>,
    /// Held while `pages` is not empty, so that producers report created entities.
    page_watch: Option<crate::live::PageWatch>,
}

/// Why a session ends.
enum End {
    /// The client closed, went away or failed.
    Gone,
    /// Its inbox overflowed: it does not read its updates.
    Slow,
}

impl Session {
    async fn run(mut self, user: Option<User>) {
        let first = match user {
            Some(user) => {
                self.signed_in(user);
                None
            }
            None => match self.authenticate().await {
                Some(rest) => Some(rest),
                None => return,
            },
        };
        tracing::debug!("WebSocket session of {} from {} opened", self.user, self.peer);
        let end = match first {
            Some(message) => self.handle_commands(&message).await,
            None => Ok(()),
        };
        let end = match end {
            Ok(()) => self.serve().await,
            Err(end) => end,
        };
        if let End::Slow = end {
            tracing::warn!(
                "closing the WebSocket session of {} from {}: more than {} updates waited unread (WS_MAX_QUEUE_MESSAGES_PER_SESSION)",
                self.user,
                self.peer,
                self.state.live.queue_capacity()
            );
            self.close(close_code::POLICY, "Max pending updates limit reached!").await;
        }
        for entity in self.watching.keys() {
            self.state.live.unwatch(self.inbox.id, *entity);
        }
        tracing::debug!("WebSocket session of {} from {} closed", self.user, self.peer);
    }

    /// Waits for the first message's `authCmd`; gives back that message (it may hold commands
    /// too), or `None` after closing the session.
    async fn authenticate(&mut self) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
        let text = loop {
            match tokio::time::timeout_at(deadline, self.socket.recv()).await {
                Err(_) => {
                    self.close(close_code::POLICY, "Auth timeout").await;
                    return None;
                }
                Ok(Some(Ok(Message::Text(text)))) => break text,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(_) => return None,
            }
        };
        let message: Value = match serde_json::from_str(text.as_str()) {
            Ok(message) => message,
            Err(e) => {
                self.close(close_code::INVALID, &e.to_string()).await;
                return None;
            }
        };
        let token = message.pointer("/authCmd/token").and_then(Value::as_str).unwrap_or_default();
        if token.is_empty() {
            self.close(close_code::POLICY, "Auth cmd is missing").await;
            return None;
        }
        match auth::authenticate(&self.state, token).await {
            Ok((user, _)) => {
                self.signed_in(user);
                Some(message)
            }
            Err(e) => {
                tracing::debug!("WebSocket authentication from {} refused: {}", self.peer, e.message);
                self.close(close_code::POLICY, &e.message).await;
                None
            }
        }
    }

    /// Commands in, updates out, until the client leaves or falls behind.
    async fn serve(&mut self) -> End {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut heard = Instant::now();
        loop {
            let step = tokio::select! {
                biased;
                _ = self.kill.killed() => Err(End::Slow),
                message = self.socket.recv() => {
                    heard = Instant::now();
                    match message {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<Value>(text.as_str()) {
                            Ok(message) => self.handle_commands(&message).await,
                            // ThingsBoard's answer to a message it cannot parse.
                            Err(_) => self.send(error(1, BAD_REQUEST, "Failed to parse the payload")).await,
                        },
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => Err(End::Gone),
                        Some(Ok(_)) => Ok(()),
                    }
                }
                change = self.inbox.rx.recv() => match change {
                    Some(change) => {
                        // Everything waiting goes out together (at most the inbox's capacity).
                        let mut changes = vec![change];
                        while changes.len() < self.state.live.queue_capacity()
                            && let Ok(change) = self.inbox.rx.try_recv()
                        {
                            changes.push(change);
                        }
                        self.deliver(&changes).await
                    }
                    None => Err(End::Gone),
                },
                changed = self.entity_changes.changed(), if !self.pages.is_empty() => match changed {
                    Ok(()) => {
                        self.dirty_pages.extend(self.pages.keys().copied());
                        Ok(())
                    }
                    // The hub is gone: the server is stopping.
                    Err(_) => Err(End::Gone),
                },
                _ = tokio::time::sleep_until(self.next_refresh), if !self.dirty_pages.is_empty() => self.refresh_pages().await,
                _ = ping.tick() => {
                    if heard.elapsed() > 3 * PING_INTERVAL {
                        Err(End::Gone)
                    } else {
                        self.send_message(Message::Ping(Default::default())).await
                    }
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Sends a close frame if the socket takes it within [`CLOSE_TIMEOUT`].
    fn signed_in(&mut self, user: User) {
        self.caller = Some(Caller::of(&user));
        self.user = user.email;
    }

    /// The session's caller; a session handles commands only once authenticated, and a missing
    /// caller (never expected) reaches nothing.
    fn caller(&self) -> Caller {
        self.caller.unwrap_or(Caller::CustomerUser { user: Uuid::nil(), customer: Uuid::nil() })
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame { code, reason: reason.chars().take(120).collect::<String>().into() };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.socket.send(Message::Close(Some(frame)))).await;
    }

    async fn send(&mut self, update: Value) -> Result<(), End> {
        self.send_message(Message::Text(update.to_string().into())).await
    }

    /// Waits for the socket to take the message, unless the session is killed meanwhile.
    async fn send_message(&mut self, message: Message) -> Result<(), End> {
        tokio::select! {
            sent = self.socket.send(message) => sent.map_err(|_| End::Gone),
            _ = self.kill.killed() => Err(End::Slow),
        }
    }

    /// Runs every command of one message, in ThingsBoard's order.
    async fn handle_commands(&mut self, message: &Value) -> Result<(), End> {
        let mut commands: Vec<(&str, &Value)> = Vec::new();
        for (list, kind) in [
            ("attrSubCmds", "ATTRIBUTES"),
            ("tsSubCmds", "TIMESERIES"),
            ("historyCmds", "TIMESERIES_HISTORY"),
            ("entityDataCmds", "ENTITY_DATA"),
            ("entityDataUnsubscribeCmds", "ENTITY_DATA_UNSUBSCRIBE"),
        ] {
            if let Some(list) = message.get(list).and_then(Value::as_array) {
                commands.extend(list.iter().map(|cmd| (kind, cmd)));
            }
        }
        if let Some(list) = message.get("cmds").and_then(Value::as_array) {
            commands.extend(list.iter().map(|cmd| (cmd.get("type").and_then(Value::as_str).unwrap_or_default(), cmd)));
        }
        for (kind, cmd) in commands {
            match kind {
                "ATTRIBUTES" | "TIMESERIES" => self.subscribe(kind, cmd).await?,
                "TIMESERIES_HISTORY" => self.history(cmd).await?,
                "ENTITY_DATA" => self.entity_data(cmd).await?,
                "ENTITY_DATA_UNSUBSCRIBE" => self.unsubscribe(number(cmd, "cmdId")),
                // Counts, alarms, notifications: not served here; ThingsBoard also ignores
                // a command it has no handler for.
                _ => tracing::debug!("WebSocket command of type {kind:?} ignored"),
            }
        }
        Ok(())
    }

    /// `tsSubCmds` / `attrSubCmds` (and `type` TIMESERIES / ATTRIBUTES).
    async fn subscribe(&mut self, kind: &str, cmd: &Value) -> Result<(), End> {
        let cmd_id = number(cmd, "cmdId");
        if cmd_id < 0 {
            return self.send(error(cmd_id, BAD_REQUEST, "Cmd id is negative value!")).await;
        }
        let entity_id = text(cmd, "entityId");
        if cmd.get("unsubscribe").and_then(Value::as_bool).unwrap_or(false) {
            // ThingsBoard: an unsubscribe without an entity ends all of the session's subscriptions.
            if entity_id.is_empty() {
                let all: Vec<i64> = self.subscriptions.keys().copied().collect();
                all.into_iter().for_each(|id| self.unsubscribe(id));
            } else {
                self.unsubscribe(cmd_id);
            }
            return Ok(());
        }
        if entity_id.is_empty() {
            return self.send(error(cmd_id, BAD_REQUEST, "Device id is empty!")).await;
        }
        let failed = if kind == "ATTRIBUTES" { "Failed to fetch attributes!" } else { "Failed to fetch data!" };
        let Some(entity) = super::telemetry::entity(&self.state, self.caller(), &text(cmd, "entityType"), &entity_id).await.ok() else {
            return self.send(error(cmd_id, INTERNAL_ERROR, failed)).await;
        };
        if !self.subscriptions.contains_key(&cmd_id) && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return self.send(error(cmd_id, BAD_REQUEST, "Max subscriptions per session reached!")).await;
        }
        let keys = keys(cmd);
        let wants = if kind == "ATTRIBUTES" {
            let scope = Some(text(cmd, "scope")).filter(|s| !s.is_empty());
            if let Some(scope) = &scope
                && !matches!(scope.as_str(), "CLIENT_SCOPE" | "SERVER_SCOPE" | "SHARED_SCOPE")
            {
                return self.send(error(cmd_id, BAD_REQUEST, &format!("Invalid attribute scope '{scope}'"))).await;
            }
            Wants::Attributes { keys, scope }
        } else {
            Wants::Timeseries { keys }
        };
        // Watch first, then read the snapshot: a change committed in between is delivered after
        // the snapshot (this task sends both), never lost.
        self.unsubscribe(cmd_id);
        self.state.live.watch(&self.inbox, entity);
        *self.watching.entry(entity).or_default() += 1;
        let permit = self.state.live.snapshot_permit().await;
        let snapshot = snapshot(self.state.clone(), entity, &wants, cmd).await;
        drop(permit);
        self.subscriptions.insert(cmd_id, Subscription { entities: vec![entity], wants });
        match snapshot {
            Ok(data) => self.send(update(cmd_id, data)).await,
            Err(e) => {
                tracing::warn!("WebSocket subscription snapshot failed: {}", e.message);
                self.send(error(cmd_id, INTERNAL_ERROR, failed)).await
            }
        }
    }

    fn unsubscribe(&mut self, cmd_id: i64) {
        self.forget_page(cmd_id);
        let Some(old) = self.subscriptions.remove(&cmd_id) else { return };
        self.unwatch(old.entities);
    }

    fn forget_page(&mut self, cmd_id: i64) {
        self.pages.remove(&cmd_id);
        self.dirty_pages.remove(&cmd_id);
        if self.pages.is_empty() {
            self.page_watch = None;
        }
    }

    /// Stops watching `entities` for one subscription.
    fn unwatch(&mut self, entities: Vec<Uuid>) {
        for entity in entities {
            if let Some(count) = self.watching.get_mut(&entity) {
                *count -= 1;
                if *count == 0 {
                    self.watching.remove(&entity);
                    self.state.live.unwatch(self.inbox.id, entity);
                }
            }
        }
    }

    /// Watches `entities` for subscription `cmd_id` (which must not be held).
    fn watch(&mut self, cmd_id: i64, entities: Vec<Uuid>, wants: Wants) {
        for entity in &entities {
            let count = self.watching.entry(*entity).or_default();
            if *count == 0 {
                self.state.live.watch(&self.inbox, *entity);
            }
            *count += 1;
        }
        self.subscriptions.insert(cmd_id, Subscription { entities, wants });
    }

    /// `entityDataCmds` (and `type` ENTITY_DATA): the query is parsed and run as `POST
    /// /api/entitiesQuery/find` runs it (any filter it serves), its page sent with the fields
    /// and latest values it selects, then an `update` for every committed change of the keys in
    /// `query.latestValues` and `latestCmd.keys` of an entity on that page. A `latestCmd` alone
    /// adds keys to the command's subscription, a `tsCmd` or `historyCmd` alone reads a new
    /// window for its page. A query the parser refuses is answered with errorCode 2 and its
    /// reason.
    async fn entity_data(&mut self, cmd: &Value) -> Result<(), End> {
        let cmd_id = number(cmd, "cmdId");
        if cmd_id < 0 {
            return self.send(entity_error(cmd_id, BAD_REQUEST, "Cmd id is negative value!")).await;
        }
        let Some(query) = cmd.get("query").and_then(Value::as_object) else {
            if let Some(ts_cmd) = ts_command(cmd) {
                return self.entity_timeseries_update(cmd_id, ts_cmd).await;
            }
            // A later latestCmd for an existing subscription: more keys, their values now.
            let latest_cmd_keys = key_list(cmd.pointer("/latestCmd/keys"));
            let Some(Subscription { entities, wants: Wants::EntityData { entity_type, keys, .. } }) = self.subscriptions.get_mut(&cmd_id) else {
                return self.send(entity_error(cmd_id, BAD_REQUEST, "Query is empty!")).await;
            };
            let added: Vec<_> = latest_cmd_keys.into_iter().filter(|k| !keys.contains(k)).collect();
            keys.extend(added.iter().cloned());
            let (entities, entity_type) = (entities.clone(), entity_type.clone());
            let mut rows = Vec::new();
            for entity in entities {
                match entity_latest(self.state.clone(), entity, &added).await {
                    Ok(latest) => rows.push(entity_data(&entity_type, entity, latest)),
                    Err(_) => return self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await,
                }
            }
            return self.send(entity_update(cmd_id, rows)).await;
        };
        let parsed = entity_query::data_query(query).and_then(|mut q| {
            q.add_latest_values(cmd.pointer("/latestCmd/keys"))?;
            Ok(q)
        });
        let mut q = match parsed {
            Ok(q) => q,
            Err(e) => return self.send(entity_error(cmd_id, BAD_REQUEST, &e.message)).await,
        };
        q.query.owner = self.caller().customer();
        // Each entity on the page is watched: a page is at most `allowedEntities` long.
        q.query.page_size = q.query.page_size.min(MAX_SUBSCRIPTIONS as u32);
        if !self.subscriptions.contains_key(&cmd_id) && self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return self.send(entity_error(cmd_id, BAD_REQUEST, "Max subscriptions per session reached!")).await;
        }
        self.unsubscribe(cmd_id);
        let entity_type = q.query.filter.kind().as_str().to_string();
        let keys = q.latest_keys();
        // The page's entities first, then watch them, then read their values: a change committed
        // after the read is delivered after the page (this task sends both), never lost.
        let store = self.state.store.clone();
        let found = blocking(move || store.query_entities(&q.query).map(|page| (q, page))).await;
        let (q, page) = match found {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("WebSocket entity data query failed: {}", e.message);
                return self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await;
            }
        };
        let ids: Vec<Uuid> = page.data.iter().map(|row| row.id).collect();
        let ts_cmd = ts_command(cmd);
        let ts_keys = match &ts_cmd {
            Some(TsCommand { subscribe: true, keys, .. }) => keys.clone(),
            _ => Vec::new(),
        };
        self.watch(cmd_id, ids.clone(), Wants::EntityData { entity_type, keys, ts_keys });
        let store = self.state.store.clone();
        let mut data = match blocking(move || entity_query::page_json(store.as_ref(), &q, &page).map(|data| (data, q))).await {
            Ok((data, q)) => {
                self.pages.insert(cmd_id, q);
                if self.page_watch.is_none() {
                    self.page_watch = Some(self.state.live.page_watch());
                }
                data
            }
            Err(e) => {
                tracing::warn!("WebSocket entity data query failed: {}", e.message);
                return self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await;
            }
        };
        // A historyCmd or tsCmd fills each row's `timeseries` before the page goes out.
        if let Some(ts_cmd) = ts_cmd {
            let rows = data.get_mut("data").and_then(Value::as_array_mut).map(std::mem::take).unwrap_or_default();
            match entity_series(&self.state, rows, &ids, &ts_cmd).await {
                Ok(rows) => data["data"] = Value::Array(rows),
                Err(e) => {
                    tracing::warn!("WebSocket entity data history failed: {}", e.message);
                    return self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch historical data!")).await;
                }
            }
        }
        self.send(entity_page(cmd_id, data)).await
    }

    /// A `tsCmd` or `historyCmd` without a query, for a subscription already held (a widget
    /// changing its time window): the page's entities' points as an `update`, and from now on a
    /// `tsCmd`'s keys are the subscription's live time series.
    async fn entity_timeseries_update(&mut self, cmd_id: i64, ts_cmd: TsCommand<'_>) -> Result<(), End> {
        let Some(Subscription { entities, wants: Wants::EntityData { entity_type, ts_keys, .. } }) = self.subscriptions.get_mut(&cmd_id) else {
            return self.send(entity_error(cmd_id, BAD_REQUEST, "Query is empty!")).await;
        };
        if ts_cmd.subscribe {
            *ts_keys = ts_cmd.keys.clone();
        }
        let (entities, entity_type) = (entities.clone(), entity_type.clone());
        let rows = entities.iter().map(|entity| json!({"entityId": {"entityType": entity_type, "id": entity}, "latest": {}})).collect();
        match entity_series(&self.state, rows, &entities, &ts_cmd).await {
            Ok(rows) => self.send(entity_update(cmd_id, rows)).await,
            Err(e) => {
                tracing::warn!("WebSocket entity data history failed: {}", e.message);
                self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch historical data!")).await
            }
        }
    }

    /// `historyCmds` (and `type` TIMESERIES_HISTORY): one answer with the stored points.
    async fn history(&mut self, cmd: &Value) -> Result<(), End> {
        let cmd_id = number(cmd, "cmdId");
        if cmd_id < 0 {
            return self.send(error(cmd_id, BAD_REQUEST, "Cmd id is negative value!")).await;
        }
        let entity_id = text(cmd, "entityId");
        if entity_id.is_empty() || text(cmd, "entityType").is_empty() {
            return self.send(error(cmd_id, BAD_REQUEST, "Device id is empty!")).await;
        }
        let Some(keys) = keys(cmd) else {
            return self.send(error(cmd_id, BAD_REQUEST, "Keys are empty!")).await;
        };
        let Some(entity) = super::telemetry::entity(&self.state, self.caller(), &text(cmd, "entityType"), &entity_id).await.ok() else {
            return self.send(error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await;
        };
        let (start_ts, end_ts) = (number(cmd, "startTs"), number(cmd, "endTs"));
        match super::telemetry::read_history(&self.state, entity, keys, start_ts, end_ts, &history_params(cmd)).await {
            Ok(history) => self.send(update(cmd_id, history_points(history))).await,
            // A parameter the REST route refuses (an unknown `agg`): its reason, as errorCode 2.
            Err(e) if e.status == StatusCode::BAD_REQUEST => self.send(error(cmd_id, BAD_REQUEST, &e.message)).await,
            Err(e) => {
                tracing::warn!("WebSocket history query failed: {}", e.message);
                self.send(error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await
            }
        }
    }

    /// Sends each subscription the part of the changes it wants: one update per subscription
    /// for all the changes that waited, written to the socket together. A session that keeps
    /// up sends one update per change; one that falls behind (1,000 sessions on two cores)
    /// catches up with fewer, larger updates instead of a message and a system call per change.
    async fn deliver(&mut self, changes: &[std::sync::Arc<Change>]) -> Result<(), End> {
        let mut updates = Vec::new();
        let mut resorted = Vec::new();
        for (cmd_id, subscription) in &self.subscriptions {
            let mine: Vec<&std::sync::Arc<Change>> =
                changes.iter().filter(|change| subscription.entities.contains(&change.entity)).collect();
            if let Wants::EntityData { entity_type, keys, ts_keys } = &subscription.wants {
                // A changed value of the key the page is sorted by may reorder it.
                if let Some(q) = self.pages.get(cmd_id)
                    && mine.iter().any(|change| changes_sort_key(q, &change.data))
                {
                    resorted.push(*cmd_id);
                }
                // A tsCmd's keys: every new point, as ThingsBoard's time-series rows
                // (`timeseries`, no `latest`), apart from the latest-value rows.
                let mut series_rows: Vec<(Uuid, Map<String, Value>)> = Vec::new();
                for change in mine.iter().filter(|_| !ts_keys.is_empty()) {
                    let ChangeData::Timeseries(points) = &change.data else { continue };
                    for (ts, values) in points {
                        for (key, value) in values.iter().filter(|(key, _)| ts_keys.contains(key)) {
                            let row = match series_rows.iter().position(|(entity, _)| *entity == change.entity) {
                                Some(i) => &mut series_rows[i].1,
                                None => {
                                    series_rows.push((change.entity, Map::new()));
                                    &mut series_rows.last_mut().expect("just pushed").1
                                }
                            };
                            let list = row.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
                            if let Value::Array(list) = list {
                                list.push(ts_value(*ts, value.to_display_string()));
                            }
                        }
                    }
                }
                if !series_rows.is_empty() {
                    let rows = series_rows
                        .into_iter()
                        .map(|(entity, series)| json!({"entityId": {"entityType": entity_type, "id": entity}, "latest": null, "timeseries": series}))
                        .collect();
                    updates.push(entity_update(*cmd_id, rows));
                }
                // Each entity's newest value of each key, entities in the order they changed.
                let mut rows: Vec<(Uuid, Latest)> = Vec::new();
                for change in &mine {
                    let latest = changed_latest(keys, &change.data);
                    if latest.is_empty() {
                        continue;
                    }
                    match rows.iter_mut().find(|(entity, _)| *entity == change.entity) {
                        Some((_, seen)) => merge_latest(seen, latest),
                        None => rows.push((change.entity, latest)),
                    }
                }
                if !rows.is_empty() {
                    let rows = rows.into_iter().map(|(entity, latest)| entity_data(entity_type, entity, latest)).collect();
                    updates.push(entity_update(*cmd_id, rows));
                }
                continue;
            }
            let mut points = Points::new();
            for change in mine {
                match (&subscription.wants, &change.data) {
                    (Wants::Timeseries { keys }, ChangeData::Timeseries(changed)) => {
                        for (ts, values) in changed {
                            add(&mut points, *ts, values, keys);
                        }
                    }
                    (Wants::Attributes { keys, scope }, ChangeData::Attributes { scope: changed, ts, values })
                        if scope.as_ref().is_none_or(|s| s == changed) =>
                    {
                        add(&mut points, *ts, values, keys);
                    }
                    _ => {}
                }
            }
            if !points.is_empty() {
                updates.push(update(*cmd_id, points));
            }
        }
        self.dirty_pages.extend(resorted);
        self.send_all(updates).await
    }

    /// Re-runs the entity data queries whose page may have changed; a page that did (other
    /// entities, or another order) is watched anew and sent whole, as ThingsBoard's dynamic
    /// page refresh sends it (`data` with the page, `update` null).
    async fn refresh_pages(&mut self) -> Result<(), End> {
        self.next_refresh = tokio::time::Instant::now() + PAGE_REFRESH_INTERVAL;
        for cmd_id in std::mem::take(&mut self.dirty_pages) {
            let Some(q) = self.pages.remove(&cmd_id) else { continue };
            let store = self.state.store.clone();
            let (q, page) = match blocking(move || store.query_entities(&q.query).map(|page| (q, page))).await {
                Ok(found) => found,
                Err(e) => {
                    // The query is lost with the error; the page stays as it is.
                    tracing::warn!("WebSocket entity data query re-run failed: {}", e.message);
                    self.forget_page(cmd_id);
                    continue;
                }
            };
            let ids: Vec<Uuid> = page.data.iter().map(|row| row.id).collect();
            let Some(old) = self.subscriptions.remove(&cmd_id) else { continue };
            if old.entities == ids {
                self.subscriptions.insert(cmd_id, old);
                self.pages.insert(cmd_id, q);
                continue;
            }
            // Watch the new page before reading its values: a change after the read follows it.
            self.watch(cmd_id, ids, old.wants);
            self.unwatch(old.entities);
            let store = self.state.store.clone();
            match blocking(move || entity_query::page_json(store.as_ref(), &q, &page).map(|data| (data, q))).await {
                Ok((data, q)) => {
                    self.pages.insert(cmd_id, q);
                    self.send(entity_page(cmd_id, data)).await?;
                }
                Err(e) => {
                    tracing::warn!("WebSocket entity data query re-run failed: {}", e.message);
                    self.forget_page(cmd_id);
                }
            }
        }
        if self.pages.is_empty() {
            self.page_watch = None;
        }
        Ok(())
    }

    /// Writes the messages and flushes once (one system call for all of them), unless the
    /// session is killed meanwhile.
    async fn send_all(&mut self, updates: Vec<Value>) -> Result<(), End> {
        if updates.is_empty() {
            return Ok(());
        }
        let (socket, kill) = (&mut self.socket, &self.kill);
        let sending = async {
            for update in updates {
                socket.feed(Message::Text(update.to_string().into())).await?;
            }
            socket.flush().await
        };
        tokio::select! {
            sent = sending => sent.map_err(|_| End::Gone),
            _ = kill.killed() => Err(End::Slow),
        }
    }
}

/// Adds `newer` (a later change's values) to `seen`, keeping each key's newest value.
fn merge_latest(seen: &mut Latest, newer: Latest) {
    for (key_type, values) in newer {
        let out = seen.entry(key_type).or_default();
        for (key, value) in values {
            if out.get(&key).and_then(|v| v["ts"].as_i64()).is_none_or(|ts| ts <= value["ts"].as_i64().unwrap_or(0)) {
                out.insert(key, value);
            }
        }
    }
}

/// The values a new subscription starts with. (This and the functions below take the state,
/// not the session: a `&Session` held across an await would make the session's future not
/// `Send`, since the socket is not `Sync`.)
async fn snapshot(state: AppState, entity: Uuid, wants: &Wants, cmd: &Value) -> Result<Points, ApiError> {
    let store = state.store.clone();
    match wants {
        Wants::Timeseries { keys } if number(cmd, "timeWindow") > 0 => {
            let (Some(keys), start_ts) = (keys.clone(), number(cmd, "startTs")) else {
                // Without keys ThingsBoard subscribes to the latest values whatever the window.
                return latest(state, entity, None).await;
            };
            // The window's points as a history command reads them (aggregated with `agg`); the
            // updates that follow are the raw committed points, as ThingsBoard sends them.
            let end_ts = start_ts.saturating_add(number(cmd, "timeWindow"));
            Ok(history_points(super::telemetry::read_history(&state, entity, keys, start_ts, end_ts, &history_params(cmd)).await?))
        }
        Wants::Timeseries { keys } => latest(state, entity, keys.clone()).await,
        Wants::Attributes { keys, scope } => {
            let (keys, scope) = (keys.clone(), scope.clone());
            let attributes = blocking(move || store.attributes(entity, scope.as_deref(), keys.as_deref())).await?;
            let mut points = Points::new();
            for (_, a) in attributes {
                points.entry(a.key).or_default().push((a.last_update_ts, a.value.to_display_string()));
            }
            Ok(points)
        }
        // Entity data has its own snapshot (`entity_latest`).
        Wants::EntityData { .. } => Ok(Points::new()),
    }
}

async fn latest(state: AppState, entity: Uuid, keys: Option<Vec<String>>) -> Result<Points, ApiError> {
    let store = state.store.clone();
    let latest = blocking(move || store.latest_timeseries(entity, keys.as_deref())).await?;
    Ok(latest.into_iter().map(|(key, p)| (key, vec![(p.ts, p.value.to_display_string())])).collect())
}

/// Latest values by ThingsBoard's `EntityKeyType` (`ENTITY_FIELD`, `TIME_SERIES`,
/// `CLIENT_ATTRIBUTE`, …), then key: `{ts, value}`.
type Latest = BTreeMap<String, Map<String, Value>>;

/// `[{type, key}, …]` as (type, key) pairs.
fn key_list(list: Option<&Value>) -> Vec<(String, String)> {
    list.and_then(Value::as_array)
        .map(|list| list.iter().map(|k| (text(k, "type"), text(k, "key"))).filter(|(_, key)| !key.is_empty()).collect())
        .unwrap_or_default()
}

fn ts_value(ts: Millis, value: String) -> Value {
    json!({"ts": ts, "value": value})
}

/// The attribute scope an `EntityKeyType` names; `None` for any scope (`ATTRIBUTE`).
fn attribute_scope(key_type: &str) -> Option<&'static str> {
    match key_type {
        "CLIENT_ATTRIBUTE" => Some("CLIENT_SCOPE"),
        "SERVER_ATTRIBUTE" => Some("SERVER_SCOPE"),
        "SHARED_ATTRIBUTE" => Some("SHARED_SCOPE"),
        _ => None,
    }
}

/// An entity's latest values of `keys` (a `latestCmd` adding keys to a subscription); a key
/// without a value is `{ts: 0, value: ""}`, as ThingsBoard fills it.
async fn entity_latest(state: AppState, entity: Uuid, keys: &[(String, String)]) -> Result<Latest, ApiError> {
    let mut latest = Latest::new();
    let ts_keys: Vec<String> = keys.iter().filter(|(t, _)| t == "TIME_SERIES").map(|(_, k)| k.clone()).collect();
    if !ts_keys.is_empty() {
        let store = state.store.clone();
        let wanted = ts_keys.clone();
        let values = blocking(move || store.latest_timeseries(entity, Some(&wanted))).await?;
        let out = latest.entry("TIME_SERIES".into()).or_default();
        for key in ts_keys {
            let value = values.iter().find(|(k, _)| *k == key).map(|(_, p)| ts_value(p.ts, p.value.to_display_string()));
            out.insert(key, value.unwrap_or_else(|| ts_value(0, String::new())));
        }
    }
    let attribute_keys: Vec<(String, String)> = keys.iter().filter(|(t, _)| t.ends_with("ATTRIBUTE")).cloned().collect();
    if !attribute_keys.is_empty() {
        let store = state.store.clone();
        let attributes = blocking(move || store.attributes(entity, None, None)).await?;
        for (key_type, key) in attribute_keys {
            let scope = attribute_scope(&key_type);
            let value = attributes
                .iter()
                .filter(|(s, a)| a.key == key && scope.is_none_or(|scope| scope == s))
                .max_by_key(|(_, a)| a.last_update_ts)
                .map(|(_, a)| ts_value(a.last_update_ts, a.value.to_display_string()));
            latest.entry(key_type).or_default().insert(key, value.unwrap_or_else(|| ts_value(0, String::new())));
        }
    }
    Ok(latest)
}

/// An entity data command's `tsCmd` (ThingsBoard's `TimeSeriesCmd`: a window from `startTs`,
/// then live points) or `historyCmd` (`EntityHistoryCmd`: `startTs` to `endTs`, once), with
/// `interval`, `limit` and `agg` as history commands read them.
struct TsCommand<'a> {
    cmd: &'a Value,
    keys: Vec<String>,
    start_ts: i64,
    end_ts: i64,
    subscribe: bool,
}

/// The command's `tsCmd` (which wins, as it subscribes) or `historyCmd`.
fn ts_command(cmd: &Value) -> Option<TsCommand<'_>> {
    let (inner, subscribe) = match (cmd.get("tsCmd").filter(|c| c.is_object()), cmd.get("historyCmd").filter(|c| c.is_object())) {
        (Some(ts), _) => (ts, true),
        (None, Some(history)) => (history, false),
        (None, None) => return None,
    };
    let keys = inner
        .get("keys")
        .and_then(Value::as_array)
        .map(|keys| keys.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let start_ts = number(inner, "startTs");
    let end_ts = if subscribe { start_ts.saturating_add(number(inner, "timeWindow")) } else { number(inner, "endTs") };
    Some(TsCommand { cmd: inner, keys, start_ts, end_ts, subscribe })
}

/// Fills each row's `timeseries` with its entity's points of the command's keys (`[]` for a
/// key without any, as ThingsBoard fills it), read as `…/values/timeseries` reads them.
async fn entity_series(state: &AppState, mut rows: Vec<Value>, ids: &[Uuid], ts_cmd: &TsCommand<'_>) -> Result<Vec<Value>, ApiError> {
    let params = history_params(ts_cmd.cmd);
    for (row, id) in rows.iter_mut().zip(ids) {
        let mut series: Map<String, Value> = ts_cmd.keys.iter().map(|key| (key.clone(), Value::Array(Vec::new()))).collect();
        if !ts_cmd.keys.is_empty() {
            for (key, points) in super::telemetry::read_history(state, *id, ts_cmd.keys.clone(), ts_cmd.start_ts, ts_cmd.end_ts, &params).await? {
                let list = points.into_iter().map(|p| ts_value(p.ts, p.value.to_display_string())).collect();
                series.insert(key, Value::Array(list));
            }
        }
        row["timeseries"] = Value::Object(series);
    }
    Ok(rows)
}

/// Whether a change touches the latest value a query sorts its page by.
fn changes_sort_key(q: &entity_query::DataQuery, data: &ChangeData) -> bool {
    use coapgate_storage::entity_query::SortKey;
    match (&q.query.sort, data) {
        (Some((SortKey::Timeseries(key), _)), ChangeData::Timeseries(points)) => {
            points.iter().any(|(_, values)| values.iter().any(|(k, _)| k == key))
        }
        (Some((SortKey::Attribute { scope, key }, _)), ChangeData::Attributes { scope: changed, values, .. }) => {
            scope.as_ref().is_none_or(|s| s == changed) && values.iter().any(|(k, _)| k == key)
        }
        _ => false,
    }
}

/// What of a committed change an entity-data subscription shows: each wanted key's newest value.
fn changed_latest(keys: &[(String, String)], data: &ChangeData) -> Latest {
    let mut latest = Latest::new();
    match data {
        ChangeData::Timeseries(points) => {
            for (ts, values) in points {
                for (key, value) in values {
                    if !keys.iter().any(|(t, k)| t == "TIME_SERIES" && k == key) {
                        continue;
                    }
                    let out = latest.entry("TIME_SERIES".into()).or_default();
                    if out.get(key).and_then(|v| v["ts"].as_i64()).is_none_or(|seen| seen <= *ts) {
                        out.insert(key.clone(), ts_value(*ts, value.to_display_string()));
                    }
                }
            }
        }
        ChangeData::Attributes { scope, ts, values } => {
            for (key, value) in values {
                for (key_type, _) in keys.iter().filter(|(t, k)| k == key && t.ends_with("ATTRIBUTE")) {
                    if attribute_scope(key_type).is_none_or(|s| s == scope) {
                        latest.entry(key_type.clone()).or_default().insert(key.clone(), ts_value(*ts, value.to_display_string()));
                    }
                }
            }
        }        // Reaches queries as a re-run, not as values.
        ChangeData::Created => {}
    }
    latest
}

/// ThingsBoard's `EntityData`: `{entityId, latest, timeseries}`.
fn entity_data(entity_type: &str, entity: Uuid, latest: Latest) -> Value {
    json!({"entityId": {"entityType": entity_type, "id": entity}, "latest": latest, "timeseries": {}})
}

/// ThingsBoard's `EntityDataUpdate` with the first page (`/api/entitiesQuery/find`'s answer).
fn entity_page(cmd_id: i64, data: Value) -> Value {
    json!({
        "cmdId": cmd_id, "errorCode": 0, "errorMsg": null, "data": data,
        "update": null, "allowedEntities": MAX_SUBSCRIPTIONS, "cmdUpdateType": "ENTITY_DATA",
    })
}

/// ThingsBoard's `EntityDataUpdate` with changed values (`update`, no page).
fn entity_update(cmd_id: i64, rows: Vec<Value>) -> Value {
    json!({
        "cmdId": cmd_id, "errorCode": 0, "errorMsg": null, "data": null,
        "update": rows, "allowedEntities": MAX_SUBSCRIPTIONS, "cmdUpdateType": "ENTITY_DATA",
    })
}

fn entity_error(cmd_id: i64, code: i32, message: &str) -> Value {
    json!({"cmdId": cmd_id, "errorCode": code, "errorMsg": message, "data": null, "update": null, "cmdUpdateType": "ENTITY_DATA"})
}

/// Points per key, keys sorted as ThingsBoard's `TreeMap` sorts them.
type Points = BTreeMap<String, Vec<(Millis, String)>>;

fn add(out: &mut Points, ts: Millis, values: &[(String, KvValue)], keys: &Option<Vec<String>>) {
    for (key, value) in values {
        if keys.as_ref().is_none_or(|keys| keys.contains(key)) {
            out.entry(key.clone()).or_default().push((ts, value.to_display_string()));
        }
    }
}

fn history_points(history: Vec<(String, Vec<coapgate_storage::model::TsValue>)>) -> Points {
    history
        .into_iter()
        .filter(|(_, points)| !points.is_empty())
        .map(|(key, points)| (key, points.into_iter().map(|p| (p.ts, p.value.to_display_string())).collect()))
        .collect()
}

/// ThingsBoard's `TelemetrySubscriptionUpdate` with data: `latestValues` holds each key's last
/// listed timestamp, as its `getLatestValues` computes it.
fn update(cmd_id: i64, points: Points) -> Value {
    let mut data = Map::new();
    let mut latest = Map::new();
    for (key, list) in points {
        if let Some((ts, _)) = list.last() {
            latest.insert(key.clone(), json!(ts));
        }
        data.insert(key, Value::Array(list.into_iter().map(|(ts, v)| json!([ts, v])).collect()));
    }
    json!({"subscriptionId": cmd_id, "errorCode": 0, "errorMsg": null, "data": data, "latestValues": latest})
}

/// ThingsBoard's `TelemetrySubscriptionUpdate` for an error: no data, empty `latestValues`.
fn error(cmd_id: i64, code: i32, message: &str) -> Value {
    json!({"subscriptionId": cmd_id, "errorCode": code, "errorMsg": message, "data": null, "latestValues": {}})
}

/// A number field, given as a JSON number or a numeric string (Jackson accepts both); 0 when
/// absent, as Java's primitive fields default.
fn number(cmd: &Value, field: &str) -> i64 {
    match cmd.get(field) {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(cmd: &Value, field: &str) -> String {
    match cmd.get(field) {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// `keys`: comma-separated; absent or empty means all keys.
fn keys(cmd: &Value) -> Option<Vec<String>> {
    let keys: Vec<String> = text(cmd, "keys").split(',').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect();
    (!keys.is_empty()).then_some(keys)
}

/// A history command's `agg`, `interval`, `intervalType`, `timeZoneId` and `limit` as the REST
/// route's parameters ([`super::telemetry::read_history`]), so that both read the same points.
fn history_params(cmd: &Value) -> Query {
    let mut q = Query::new();
    let agg = text(cmd, "agg");
    if !agg.is_empty() {
        q.insert("agg".into(), agg);
    }
    q.insert("interval".into(), number(cmd, "interval").max(0).to_string());
    q.insert("limit".into(), limit(cmd).to_string());
    for (field, param) in [("intervalType", "intervalType"), ("timeZoneId", "timeZone")] {
        let value = text(cmd, field);
        if !value.is_empty() {
            q.insert(param.into(), value);
        }
    }
    q
}

fn limit(cmd: &Value) -> u32 {
    match number(cmd, "limit") {
        n if n <= 0 => DEFAULT_LIMIT,
        n => u32::try_from(n).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_have_thingsboards_shape() {
        let mut points = Points::new();
        points.insert("temperature".into(), vec![(2, "25.5".into()), (1, "25".into())]);
        points.insert("a".into(), vec![(3, "x".into())]);
        assert_eq!(
            update(7, points).to_string(),
            r#"{"subscriptionId":7,"errorCode":0,"errorMsg":null,"data":{"a":[[3,"x"]],"temperature":[[2,"25.5"],[1,"25"]]},"latestValues":{"a":3,"temperature":1}}"#
        );
        assert_eq!(
            error(3, BAD_REQUEST, "Keys are empty!").to_string(),
            r#"{"subscriptionId":3,"errorCode":2,"errorMsg":"Keys are empty!","data":null,"latestValues":{}}"#
        );
    }

    #[test]
    fn command_fields_default_as_java_fields_do() {
        let cmd = json!({"cmdId": "4", "keys": " a, ,b ", "limit": 0, "timeWindow": 60000.0});
        assert_eq!(number(&cmd, "cmdId"), 4);
        assert_eq!(number(&cmd, "startTs"), 0);
        assert_eq!(number(&cmd, "timeWindow"), 60000);
        assert_eq!(keys(&cmd), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(keys(&json!({"keys": ""})), None);
        assert_eq!(limit(&cmd), DEFAULT_LIMIT);
    }
}
