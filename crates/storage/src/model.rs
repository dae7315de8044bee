//! The entities coapgate stores, as plain Rust values.
//!
//! These types are deliberately not ThingsBoard's JSON shapes: the HTTP layer maps them to and
//! from ThingsBoard's JSON, so storage stays free of API concerns and a second backend only has to
//! round-trip these structs.

use serde_json::Value;
use uuid::Uuid;

/// Milliseconds since the Unix epoch, ThingsBoard's time unit everywhere.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: Uuid,
    pub created_time: Millis,
    pub email: String,
    /// bcrypt hash, never the password itself.
    pub password_hash: String,
    pub authority: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The customer a `CUSTOMER_USER` belongs to; `None` for tenant administrators.
    pub customer_id: Option<Uuid>,
    /// ThingsBoard's `userCredentialsEnabled`: a disabled user cannot log in and its tokens stop
    /// working.
    pub enabled: bool,
}

/// Which users a listing holds (ThingsBoard's `findUsersByTenantId`, `findTenantAdmins`,
/// `findCustomerUsers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserFilter {
    /// Every user of the tenant: its administrators and all customers' users.
    All,
    TenantAdmins,
    /// The users of one customer.
    Customer(Uuid),
}

/// What presenting an activation token found ([`crate::Store::activate_user`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// The token was valid: the user has the new password, the token is used up.
    Activated(User),
    /// No invitation has this token (never issued, already used, replaced or its user deleted).
    Unknown,
    /// The token exists but its time is up; it stays, so the answer says so until a new link is made.
    Expired,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Converter {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    /// `UPLINK` or `DOWNLINK`.
    pub converter_type: String,
    pub integration_type: Option<String>,
    pub debug_settings: Value,
    /// `scriptLang`, `decoder`, `tbelDecoder`, `updateOnlyKeys`, kept as the user sent them.
    pub configuration: Value,
    pub additional_info: Value,
    /// Bumped on every save so compiled scripts can be cached per (id, version).
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Integration {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    pub integration_type: String,
    pub enabled: bool,
    pub allow_create_devices_or_assets: bool,
    pub is_remote: bool,
    pub debug_settings: Value,
    pub default_converter_id: Uuid,
    pub downlink_converter_id: Option<Uuid>,
    pub routing_key: String,
    pub secret: String,
    pub configuration: Value,
    pub additional_info: Value,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    /// The device profile's name, ThingsBoard's `type`.
    pub device_type: String,
    pub device_profile_id: Uuid,
    pub label: Option<String>,
    pub customer_id: Option<Uuid>,
    /// The integration that created the device on its first uplink, if any.
    pub created_by_integration: Option<Uuid>,
    /// ThingsBoard's `additionalInfo.description`, set through the REST API.
    pub description: Option<String>,
}

/// How a device authenticates to ThingsBoard's device transports (ThingsBoard's
/// `DeviceCredentials`). coapgate keeps one per device, an `ACCESS_TOKEN`, so that provisioning
/// scripts written for ThingsBoard find what they expect; its own devices reach it through
/// integrations and are not authenticated by it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceCredentials {
    pub id: Uuid,
    pub created_time: Millis,
    pub device_id: Uuid,
    /// `ACCESS_TOKEN` (the only type coapgate accepts).
    pub credentials_type: String,
    /// The token itself; unique among all devices.
    pub credentials_id: String,
    pub credentials_value: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceProfile {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    pub is_default: bool,
}

/// The kinds of entity that own time series and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Device,
    Asset,
    Integration,
    Converter,
}

impl EntityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Device => "DEVICE",
            EntityKind::Asset => "ASSET",
            EntityKind::Integration => "INTEGRATION",
            EntityKind::Converter => "CONVERTER",
        }
    }

    pub fn parse(s: &str) -> Option<EntityKind> {
        match s {
            "DEVICE" => Some(EntityKind::Device),
            "ASSET" => Some(EntityKind::Asset),
            "INTEGRATION" => Some(EntityKind::Integration),
            "CONVERTER" => Some(EntityKind::Converter),
            _ => None,
        }
    }
}

/// A typed value as ThingsBoard stores it: exactly one of boolean, long, double, string, JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum KvValue {
    Bool(bool),
    Long(i64),
    Double(f64),
    Str(String),
    /// A JSON object or array, stored as its text.
    Json(String),
}

impl KvValue {
    /// Types a converter output value the way ThingsBoard's JSON converter does: JSON numbers
    /// become long when integral and double otherwise, numeric strings become numbers, objects
    /// and arrays are kept as JSON. `null` has no value and is skipped.
    pub fn from_json(value: &Value) -> Option<KvValue> {
        match value {
            Value::Null => None,
            Value::Bool(b) => Some(KvValue::Bool(*b)),
            Value::Number(n) => Some(number_text_to_kv(&n.to_string())),
            Value::String(s) => Some(if is_parsable_number(s) {
                number_text_to_kv(s)
            } else {
                KvValue::Str(s.clone())
            }),
            Value::Array(_) | Value::Object(_) => Some(KvValue::Json(value.to_string())),
        }
    }

    /// The value as ThingsBoard's REST API prints it when strict data types are off.
    pub fn to_display_string(&self) -> String {
        match self {
            KvValue::Bool(b) => b.to_string(),
            KvValue::Long(v) => v.to_string(),
            KvValue::Double(v) => format_double(*v),
            KvValue::Str(s) | KvValue::Json(s) => s.clone(),
        }
    }

    /// The value as JSON, for `useStrictDataTypes=true`.
    pub fn to_json(&self) -> Value {
        match self {
            KvValue::Bool(b) => Value::Bool(*b),
            KvValue::Long(v) => Value::from(*v),
            KvValue::Double(v) => serde_json::Number::from_f64(*v)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            KvValue::Str(s) => Value::String(s.clone()),
            KvValue::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            KvValue::Long(v) => Some(*v as f64),
            KvValue::Double(v) => Some(*v),
            _ => None,
        }
    }
}

/// Java's `Double.toString`, which ThingsBoard's API uses for doubles: plain decimal notation
/// with at least one digit after the point for 10^-3 <= |v| < 10^7 (`25.0`, `0.001`), otherwise
/// computerized scientific notation (`1.23456785E7`, `1.0E-4`); the digits are the shortest that
/// read back as the same double, as Java 19+ prints them (Rust's formatting gives those too).
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let magnitude = v.abs();
    if magnitude == 0.0 || (1e-3..1e7).contains(&magnitude) {
        let plain = v.to_string();
        return if plain.contains('.') { plain } else { format!("{plain}.0") };
    }
    // `{:e}` is `d[.ddd]e[-]x` with the shortest digits; Java wants `d.ddd` and an upper-case E.
    let scientific = format!("{v:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    if mantissa.contains('.') { format!("{mantissa}E{exponent}") } else { format!("{mantissa}.0E{exponent}") }
}

/// Apache Commons' `NumberUtils.isParsable`, which ThingsBoard uses to decide whether a string is
/// numeric: an optional sign, digits, at most one decimal point with digits on both sides of
/// the end (no exponent, no hex, no whitespace).
pub fn is_parsable_number(s: &str) -> bool {
    let body = s.strip_prefix(['-', '+']).unwrap_or(s);
    if body.is_empty() || body.ends_with('.') {
        return false;
    }
    let mut dots = 0;
    for c in body.chars() {
        match c {
            '0'..='9' => {}
            '.' => dots += 1,
            _ => return false,
        }
    }
    dots <= 1 && body != "."
}

/// A numeric text becomes a double when it has a decimal point or an exponent, a long otherwise;
/// a long that overflows 64 bits falls back to a double, as in ThingsBoard.
fn number_text_to_kv(text: &str) -> KvValue {
    let has_fraction_or_exponent = text.contains(['.', 'e', 'E']);
    if !has_fraction_or_exponent && let Ok(v) = text.parse::<i64>() {
        return KvValue::Long(v);
    }
    match text.parse::<f64>() {
        Ok(v) => KvValue::Double(v),
        Err(_) => KvValue::Str(text.to_string()),
    }
}

/// One key's value at one point in time.
#[derive(Debug, Clone, PartialEq)]
pub struct TsValue {
    pub ts: Millis,
    pub value: KvValue,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttributeValue {
    pub key: String,
    pub last_update_ts: Millis,
    pub value: KvValue,
}

/// One recorded event: debug (integration or converter), lifecycle, statistics or error.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub created_time: Millis,
    pub entity_kind: EntityKind,
    pub entity_id: Uuid,
    /// ThingsBoard's event type: `DEBUG_INTEGRATION`, `DEBUG_CONVERTER`, `LC_EVENT`, `STATS`, `ERROR`.
    pub event_type: String,
    /// The node that recorded it (ThingsBoard's `uid` / `server`).
    pub uid: String,
    pub body: Value,
}

/// Which events to read: one entity, one type, a time range, and optional equality filters on
/// top-level body fields (ThingsBoard's `EventFilter`, e.g. `status`, `messageType`) plus a
/// substring filter on the error text.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub entity_id: Uuid,
    pub event_type: String,
    pub start_time: Option<Millis>,
    pub end_time: Option<Millis>,
    pub body_equals: Vec<(String, String)>,
    pub error_contains: Option<String>,
    /// `Some(true)`: only events with a non-empty `error`; `Some(false)`: only without.
    pub has_error: Option<bool>,
    pub page: PageQuery,
}

/// Paging parameters, as ThingsBoard's `PageLink`.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub page_size: u32,
    pub page: u32,
    pub text_search: Option<String>,
    pub sort_property: Option<String>,
    /// True for `DESC`.
    pub sort_descending: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub total_pages: u64,
    pub total_elements: u64,
    pub has_next: bool,
}

impl<T> Page<T> {
    pub fn new(data: Vec<T>, total_elements: u64, query: &PageQuery) -> Page<T> {
        let size = u64::from(query.page_size.max(1));
        let total_pages = total_elements.div_ceil(size);
        let has_next = u64::from(query.page) + 1 < total_pages;
        Page { data, total_pages, total_elements, has_next }
    }
}

/// Parameters of a raw time-series history read.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub keys: Vec<String>,
    pub start_ts: Millis,
    pub end_ts: Millis,
    pub limit: u32,
    pub descending: bool,
}

/// Which time-series points to delete (ThingsBoard's `DeleteTsKvQuery`): those of `keys` with
/// `start_ts <= ts < end_ts`. The latest value of a key is deleted when its point was in the
/// range and `delete_latest` holds; with `rewrite_latest` the newest point left before
/// `start_ts` becomes the latest value instead.
#[derive(Debug, Clone)]
pub struct TimeseriesDeletion {
    pub keys: Vec<String>,
    pub start_ts: Millis,
    pub end_ts: Millis,
    pub delete_latest: bool,
    pub rewrite_latest: bool,
}

/// A customer of the tenant; ThingsBoard's `Customer` (its `title` is the name).
#[derive(Debug, Clone, PartialEq)]
pub struct Customer {
    pub id: Uuid,
    pub created_time: Millis,
    pub title: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    /// The asset profile's name, ThingsBoard's `type`.
    pub asset_type: String,
    pub asset_profile_id: Uuid,
    pub label: Option<String>,
    pub customer_id: Option<Uuid>,
    /// The integration that created the asset on its first uplink, if any.
    pub created_by_integration: Option<Uuid>,
    /// ThingsBoard's `additionalInfo.description`, set through the REST API.
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssetProfile {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    pub is_default: bool,
}

/// Who owns an entity group: the tenant or one of its customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Owner {
    Tenant,
    Customer(Uuid),
}

impl Owner {
    pub fn of_customer(customer_id: Option<Uuid>) -> Owner {
        customer_id.map_or(Owner::Tenant, Owner::Customer)
    }

    pub fn customer_id(self) -> Option<Uuid> {
        match self {
            Owner::Tenant => None,
            Owner::Customer(id) => Some(id),
        }
    }
}

/// A ThingsBoard PE entity group: a named set of devices or of assets, owned by the tenant or a
/// customer. Names are unique per (type, owner).
#[derive(Debug, Clone, PartialEq)]
pub struct EntityGroup {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    /// `Device` or `Asset`.
    pub group_type: EntityKind,
    pub owner: Owner,
}

/// One member of an entity group as lists show it (ThingsBoard's `ShortEntityView`).
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMember {
    pub kind: EntityKind,
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    pub entity_type: String,
    pub label: Option<String>,
}

/// What a decoded uplink asks storage to do for one device or asset. Built by the uplink
/// pipeline from the converter's output; storage applies it inside the writer's transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityUpdate {
    /// `Device` or `Asset`.
    pub kind: EntityKind,
    pub name: String,
    /// Device or asset profile name, used only when the entity is created.
    pub entity_type: String,
    /// Used only when the entity is created.
    pub label: Option<String>,
    /// The customer (by title, created if missing) the entity is assigned to at creation.
    pub customer_name: Option<String>,
    /// The entity group (created if missing, owned by the entity's owner) the entity joins at creation.
    pub group_name: Option<String>,
    pub telemetry: Vec<(Millis, Vec<(String, KvValue)>)>,
    pub attributes: Vec<(String, KvValue)>,
}

impl EntityUpdate {
    pub fn device(name: impl Into<String>, device_type: impl Into<String>) -> EntityUpdate {
        EntityUpdate::new(EntityKind::Device, name.into(), device_type.into())
    }

    pub fn asset(name: impl Into<String>, asset_type: impl Into<String>) -> EntityUpdate {
        EntityUpdate::new(EntityKind::Asset, name.into(), asset_type.into())
    }

    fn new(kind: EntityKind, name: String, entity_type: String) -> EntityUpdate {
        EntityUpdate {
            kind,
            name,
            entity_type,
            label: None,
            customer_name: None,
            group_name: None,
            telemetry: Vec::new(),
            attributes: Vec::new(),
        }
    }
}

/// One uplink's worth of writes; all of it is committed or none of it.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkRecord {
    pub integration_id: Uuid,
    /// The integration's `allowCreateDevicesOrAssets`.
    pub allow_create_devices: bool,
    /// Server time at which the uplink arrived; the timestamp of attributes.
    pub received_ts: Millis,
    /// The converter's `updateOnlyKeys`: for these keys a time-series value or attribute is
    /// stored only when it differs from the entity's latest stored value of that key.
    pub update_only_keys: std::sync::Arc<[String]>,
    pub entities: Vec<EntityUpdate>,
    /// The CoAP exchange that carried the uplink, stored with its data when the record is
    /// stored, so a retransmission after a crash is answered without storing it again.
    pub exchange: Option<Exchange>,
    /// Set for a record a remote integration sent: its place in that remote's outbox. Storage
    /// commits it with the data, and a record whose place was committed before is not stored
    /// again (its outcome says `duplicate`).
    pub remote: Option<RemoteSeq>,
    /// The converter (and its version) whose output this is. A store shared by several nodes
    /// refuses a record made with a version older than the stored one
    /// ([`UplinkRejection::StaleConverter`]), so no uplink is committed with a converter older
    /// than one whose save has returned, whichever node saved it. `None`: not checked.
    pub converter: Option<ConverterVersion>,
}

/// A converter's identity and revision, as an uplink's output was made with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConverterVersion {
    pub id: Uuid,
    pub version: i64,
}

/// Where a remote integration's record comes from: the remote's outbox (a UUID made with its
/// file) and the record's sequence number in it (increasing, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSeq {
    pub outbox: Uuid,
    pub seq: u64,
}

/// A remembered CoAP exchange: who sent which Message ID, and the response to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// The peer's socket address as text (`ip:port`).
    pub peer: String,
    pub message_id: u16,
    /// Milliseconds since the epoch when the request arrived.
    pub ts: Millis,
    /// The encoded response that acknowledges the stored uplink.
    pub response: Vec<u8>,
}

/// Why one uplink could not be stored while the rest of its batch could.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UplinkRejection {
    /// ThingsBoard's exact message for a missing device when creation is off.
    #[error("Creating devices is forbidden!")]
    CreatingDevicesForbidden,
    /// ThingsBoard's exact message for a missing asset when creation is off.
    #[error("Creating assets is forbidden!")]
    CreatingAssetsForbidden,
    /// A remote integration's local outbox has no room for the record (`REMOTE_OUTBOX_MAX_BYTES`);
    /// not stored, to be answered 5.03 like any full queue.
    #[error("the remote's outbox is full")]
    OutboxFull,
    /// The converter was saved (by any node) after this output was made: not stored, to be
    /// converted again with the saved version.
    #[error("the converter changed while the uplink was being converted")]
    StaleConverter,
}

impl UplinkRejection {
    /// The refusal to create an entity of this kind when creation is off.
    pub fn creating_forbidden(kind: EntityKind) -> UplinkRejection {
        match kind {
            EntityKind::Asset => UplinkRejection::CreatingAssetsForbidden,
            _ => UplinkRejection::CreatingDevicesForbidden,
        }
    }
}

/// What storing an uplink did, for events and logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UplinkOutcome {
    /// Devices and assets this uplink created, in output order.
    pub created: Vec<(EntityKind, Uuid)>,
    /// Every device and asset the uplink wrote to, in output order.
    pub entities: Vec<(EntityKind, Uuid)>,
    /// Values left out because of `updateOnlyKeys` (they equalled the stored latest value).
    pub unchanged_skipped: usize,
    /// The record was a remote's resend of one committed before, or a CoAP retransmission of
    /// an exchange another node committed: nothing was written now.
    pub duplicate: bool,
    /// For a duplicate CoAP exchange: the response stored with its first copy, which answers
    /// this one too (the same bytes whichever node the retransmission reached).
    pub replay: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_values_are_typed_like_thingsboard() {
        let cases = [
            (json!(25.7), Some(KvValue::Double(25.7))),
            (json!(69), Some(KvValue::Long(69))),
            (json!(true), Some(KvValue::Bool(true))),
            (json!("25.7"), Some(KvValue::Double(25.7))),
            (json!("69"), Some(KvValue::Long(69))),
            (json!("-3"), Some(KvValue::Long(-3))),
            (json!("1e5"), Some(KvValue::Str("1e5".into()))),
            (json!("12."), Some(KvValue::Str("12.".into()))),
            (json!(" 1"), Some(KvValue::Str(" 1".into()))),
            (json!("abc"), Some(KvValue::Str("abc".into()))),
            (json!("99999999999999999999"), Some(KvValue::Double(1e20))),
            (json!(1.5e3), Some(KvValue::Double(1500.0))),
            (json!({"a": 1}), Some(KvValue::Json("{\"a\":1}".into()))),
            (json!([1, 2]), Some(KvValue::Json("[1,2]".into()))),
            (json!(null), None),
        ];
        for (input, expected) in cases {
            assert_eq!(KvValue::from_json(&input), expected, "input {input}");
        }
    }

    #[test]
    fn display_strings_follow_java() {
        assert_eq!(KvValue::Double(25.7).to_display_string(), "25.7");
        assert_eq!(KvValue::Double(25.0).to_display_string(), "25.0");
        assert_eq!(KvValue::Long(69).to_display_string(), "69");
        assert_eq!(KvValue::Bool(false).to_display_string(), "false");
        // Java's Double.toString: scientific notation outside [1e-3, 1e7), shortest digits.
        let cases = [
            (12345678.5, "1.23456785E7"),
            (1e7, "1.0E7"),
            (9999999.0, "9999999.0"),
            (0.001, "0.001"),
            (0.0001, "1.0E-4"),
            (-0.00012345, "-1.2345E-4"),
            (1.5e300, "1.5E300"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e16, "1.0E16"),
            (123456.789, "123456.789"),
            (-2.5e-7, "-2.5E-7"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
        ];
        for (v, java) in cases {
            assert_eq!(format_double(v), java, "{v}");
        }
    }

    #[test]
    fn pages_count_like_thingsboard() {
        let q = PageQuery { page_size: 10, page: 0, ..Default::default() };
        let p = Page::new(vec![0; 10], 25, &q);
        assert_eq!((p.total_pages, p.has_next), (3, true));
        let q = PageQuery { page_size: 10, page: 2, ..Default::default() };
        let p = Page::new(vec![0; 5], 25, &q);
        assert!(!p.has_next);
        let p = Page::<u8>::new(vec![], 0, &q);
        assert_eq!((p.total_pages, p.has_next), (0, false));
    }
}
