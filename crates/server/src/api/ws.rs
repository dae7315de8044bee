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
//! query the parser refuses gets errorCode 2 with its reason. The page is fixed when the command
//! comes (at most `allowedEntities` long): entities created later or moved onto it are not
//! added. `tsCmd`/`historyCmd` inside them, aggregation and counts, alarms and notifications
//! are not served.
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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use coapgate_storage::model::{HistoryQuery, KvValue, Millis, User};
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

/// Subscriptions one session may hold: each costs a place in the hub and a snapshot query.
const MAX_SUBSCRIPTIONS: usize = 1000;

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
    ws.max_message_size(MAX_COMMAND_BYTES).max_frame_size(MAX_COMMAND_BYTES).on_upgrade(move |socket| {
        let session = Session {
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

/// What one subscription wants.
#[derive(Debug)]
enum Wants {
    Timeseries { keys: Option<Vec<String>> },
    Attributes { keys: Option<Vec<String>>, scope: Option<String> },
    /// An `entityDataCmd`: the latest values of these (key type, key) pairs of the entities
    /// on its page, all of one entity type.
    EntityData { entity_type: String, keys: Vec<(String, String)> },
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
                    Some(change) => self.deliver(&change).await,
                    None => Err(End::Gone),
                },
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
            let agg = text(cmd, "agg");
            if number(cmd, "timeWindow") > 0 && !agg.is_empty() && agg != "NONE" {
                return self.send(error(cmd_id, BAD_REQUEST, &format!("Aggregation '{agg}' is not supported over WebSocket"))).await;
            }
            Wants::Timeseries { keys }
        };
        // Watch first, then read the snapshot: a change committed in between is delivered after
        // the snapshot (this task sends both), never lost.
        self.unsubscribe(cmd_id);
        self.state.live.watch(&self.inbox, entity);
        *self.watching.entry(entity).or_default() += 1;
        let snapshot = snapshot(self.state.clone(), entity, &wants, cmd).await;
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
        let Some(old) = self.subscriptions.remove(&cmd_id) else { return };
        for entity in old.entities {
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
    /// adds keys to the command's subscription. A query the parser refuses is answered with
    /// errorCode 2 and its reason; `tsCmd` and `historyCmd` are not served.
    async fn entity_data(&mut self, cmd: &Value) -> Result<(), End> {
        let cmd_id = number(cmd, "cmdId");
        if cmd_id < 0 {
            return self.send(entity_error(cmd_id, BAD_REQUEST, "Cmd id is negative value!")).await;
        }
        let Some(query) = cmd.get("query").and_then(Value::as_object) else {
            // A later latestCmd for an existing subscription: more keys, their values now.
            let latest_cmd_keys = key_list(cmd.pointer("/latestCmd/keys"));
            let Some(Subscription { entities, wants: Wants::EntityData { entity_type, keys } }) = self.subscriptions.get_mut(&cmd_id) else {
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
        self.watch(cmd_id, page.data.iter().map(|row| row.id).collect(), Wants::EntityData { entity_type, keys });
        let store = self.state.store.clone();
        match blocking(move || entity_query::page_json(store.as_ref(), &q, &page)).await {
            Ok(data) => self.send(entity_page(cmd_id, data)).await,
            Err(e) => {
                tracing::warn!("WebSocket entity data query failed: {}", e.message);
                self.send(entity_error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await
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
        let agg = text(cmd, "agg");
        if !agg.is_empty() && agg != "NONE" {
            return self.send(error(cmd_id, BAD_REQUEST, &format!("Aggregation '{agg}' is not supported over WebSocket"))).await;
        }
        let Some(entity) = super::telemetry::entity(&self.state, self.caller(), &text(cmd, "entityType"), &entity_id).await.ok() else {
            return self.send(error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await;
        };
        let query = HistoryQuery {
            keys,
            start_ts: number(cmd, "startTs"),
            end_ts: number(cmd, "endTs"),
            limit: limit(cmd),
            descending: true,
        };
        let store = self.state.store.clone();
        match blocking(move || store.timeseries_history(entity, &query)).await {
            Ok(history) => self.send(update(cmd_id, history_points(history))).await,
            Err(e) => {
                tracing::warn!("WebSocket history query failed: {}", e.message);
                self.send(error(cmd_id, INTERNAL_ERROR, "Failed to fetch data!")).await
            }
        }
    }

    /// Sends each subscription of the changed entity the part of the change it wants.
    async fn deliver(&mut self, change: &Change) -> Result<(), End> {
        let mut updates = Vec::new();
        for (cmd_id, subscription) in &self.subscriptions {
            if !subscription.entities.contains(&change.entity) {
                continue;
            }
            if let Wants::EntityData { entity_type, keys } = &subscription.wants {
                let latest = changed_latest(keys, &change.data);
                if !latest.is_empty() {
                    updates.push(entity_update(*cmd_id, vec![entity_data(entity_type, change.entity, latest)]));
                }
                continue;
            }
            let points = match (&subscription.wants, &change.data) {
                (Wants::Timeseries { keys }, ChangeData::Timeseries(points)) => {
                    let mut out = Points::new();
                    for (ts, values) in points {
                        add(&mut out, *ts, values, keys);
                    }
                    out
                }
                (Wants::Attributes { keys, scope }, ChangeData::Attributes { scope: changed, ts, values })
                    if scope.as_ref().is_none_or(|s| s == changed) =>
                {
                    let mut out = Points::new();
                    add(&mut out, *ts, values, keys);
                    out
                }
                _ => continue,
            };
            if !points.is_empty() {
                updates.push(update(*cmd_id, points));
            }
        }
        for u in updates {
            self.send(u).await?;
        }
        Ok(())
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
            let query = HistoryQuery { keys, start_ts, end_ts: start_ts + number(cmd, "timeWindow"), limit: limit(cmd), descending: true };
            Ok(history_points(blocking(move || store.timeseries_history(entity, &query)).await?))
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
        }
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
