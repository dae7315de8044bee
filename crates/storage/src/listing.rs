//! What both backends list and read the same way: the columns of each entity table, in the
//! order the backends' row mappers read them, and the paged listings (ThingsBoard's sort
//! properties per table). One copy, so the two backends cannot drift apart.

use uuid::Uuid;

use crate::model::{Asset, Device, Millis};

/// A table as a paged list: what to select, where text search looks, and which ThingsBoard
/// `sortProperty` names map to which columns (anything else sorts by creation time).
pub(crate) struct Listing {
    pub table: &'static str,
    pub columns: &'static str,
    pub search_column: &'static str,
    pub sortable: &'static [(&'static str, &'static str)],
}

pub(crate) const BY_NAME: &[(&str, &str)] = &[("name", "name"), ("createdTime", "created_time")];
pub(crate) const BY_NAME_AND_TYPE: &[(&str, &str)] =
    &[("name", "name"), ("type", "type"), ("label", "label"), ("createdTime", "created_time")];

pub(crate) const CONVERTERS: Listing = Listing { table: "converter", columns: CONVERTER_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };
pub(crate) const INTEGRATIONS: Listing =
    Listing { table: "integration", columns: INTEGRATION_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };
pub(crate) const DEVICES: Listing = Listing { table: "device", columns: DEVICE_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };
pub(crate) const ASSETS: Listing = Listing { table: "asset", columns: ASSET_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };
pub(crate) const DEVICE_PROFILES: Listing =
    Listing { table: "device_profile", columns: PROFILE_COLUMNS, search_column: "name", sortable: BY_NAME };
pub(crate) const ASSET_PROFILES: Listing = Listing { table: "asset_profile", columns: PROFILE_COLUMNS, search_column: "name", sortable: BY_NAME };
pub(crate) const CUSTOMERS: Listing = Listing {
    table: "customer",
    columns: CUSTOMER_COLUMNS,
    search_column: "title",
    sortable: &[("title", "title"), ("name", "title"), ("createdTime", "created_time")],
};
pub(crate) const GROUPS: Listing = Listing { table: "entity_group", columns: GROUP_COLUMNS, search_column: "name", sortable: BY_NAME };
/// Group members are listed from the members' own table, so they search and sort like it.
pub(crate) const DEVICE_MEMBERS: Listing =
    Listing { table: "device", columns: MEMBER_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };
pub(crate) const ASSET_MEMBERS: Listing = Listing { table: "asset", columns: MEMBER_COLUMNS, search_column: "name", sortable: BY_NAME_AND_TYPE };

/// Users are found by e-mail or either name, as ThingsBoard's user search does.
pub(crate) const USERS: Listing = Listing {
    table: "app_user",
    columns: USER_COLUMNS,
    search_column: "(email || ' ' || coalesce(first_name, '') || ' ' || coalesce(last_name, ''))",
    sortable: &[("email", "email"), ("firstName", "first_name"), ("lastName", "last_name"), ("createdTime", "created_time")],
};

pub(crate) const USER_COLUMNS: &str = "id, created_time, email, password_hash, authority, first_name, last_name, customer_id, enabled";
pub(crate) const CONVERTER_COLUMNS: &str =
    "id, created_time, name, type, integration_type, debug_settings, configuration, additional_info, version";
pub(crate) const INTEGRATION_COLUMNS: &str = "id, created_time, name, type, enabled, allow_create, is_remote, debug_settings, \
     converter_id, downlink_converter_id, routing_key, secret, configuration, additional_info, version";
pub(crate) const DEVICE_COLUMNS: &str = "id, created_time, name, type, device_profile_id, label, customer_id, integration_id, description";
pub(crate) const PROFILE_COLUMNS: &str = "id, created_time, name, is_default";
pub(crate) const ASSET_COLUMNS: &str = "id, created_time, name, type, asset_profile_id, label, customer_id, integration_id, description";
pub(crate) const CUSTOMER_COLUMNS: &str = "id, created_time, title";
pub(crate) const GROUP_COLUMNS: &str = "id, created_time, name, type, owner_id";
pub(crate) const MEMBER_COLUMNS: &str = "id, created_time, name, type, label";

/// Whether an entity that can own telemetry and attributes exists, for the transaction that
/// writes them through the API: checked there (with deletions held off: SQLite's write lock,
/// PostgreSQL's deletion lock taken shared), so a deletion cannot slip in between a check and
/// the write and leave rows of an entity that no longer exists. `param` is the id's placeholder.
pub(crate) fn owner_exists_sql(param: &str) -> String {
    let tables = ["device", "asset", "customer", "integration", "converter"].map(|t| format!("SELECT 1 FROM {t} WHERE id = {param}"));
    format!("SELECT EXISTS ({})", tables.join(" UNION ALL "))
}

/// The columns a device or an asset saved through the API writes.
pub(crate) struct EntityFields<'a> {
    pub id: Uuid,
    pub created_time: Millis,
    pub name: &'a str,
    pub entity_type: &'a str,
    pub label: Option<&'a str>,
    pub customer_id: Option<Uuid>,
    pub created_by_integration: Option<Uuid>,
    pub description: Option<&'a str>,
}

impl<'a> EntityFields<'a> {
    pub(crate) fn of_device(d: &'a Device) -> EntityFields<'a> {
        EntityFields {
            id: d.id,
            created_time: d.created_time,
            name: &d.name,
            entity_type: &d.device_type,
            label: d.label.as_deref(),
            customer_id: d.customer_id,
            created_by_integration: d.created_by_integration,
            description: d.description.as_deref(),
        }
    }

    pub(crate) fn of_asset(a: &'a Asset) -> EntityFields<'a> {
        EntityFields {
            id: a.id,
            created_time: a.created_time,
            name: &a.name,
            entity_type: &a.asset_type,
            label: a.label.as_deref(),
            customer_id: a.customer_id,
            created_by_integration: a.created_by_integration,
            description: a.description.as_deref(),
        }
    }
}
