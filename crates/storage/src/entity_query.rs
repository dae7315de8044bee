//! ThingsBoard's entity data queries (`/api/entitiesQuery/*`): which devices, assets or
//! customers an entity filter matches, counted and paged on the database, optionally sorted by
//! an entity field or by a latest value. One SQL builder for both backends, so they cannot
//! answer the same query differently; each backend only supplies its [`Dialect`] and binds the
//! parameters.
//!
//! The entity part is paged by the database (COUNT plus LIMIT/OFFSET over indexed tables); the
//! values a page shows are read afterwards, for the page's entities only, by the ordinary
//! latest-value and attribute readers.

use uuid::Uuid;

use crate::model::Millis;

/// The entity types a query can list: the ones coapgate stores with names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Device,
    Asset,
    Customer,
}

impl QueryKind {
    /// ThingsBoard's `EntityType` name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Device => "DEVICE",
            QueryKind::Asset => "ASSET",
            QueryKind::Customer => "CUSTOMER",
        }
    }

    pub fn parse(s: &str) -> Option<QueryKind> {
        match s {
            "DEVICE" => Some(QueryKind::Device),
            "ASSET" => Some(QueryKind::Asset),
            "CUSTOMER" => Some(QueryKind::Customer),
            _ => None,
        }
    }

    /// The rows the query reads, under the alias `e`, with the same six columns for every kind
    /// (a customer's title is its name; it has no type, label or customer).
    fn source(self) -> &'static str {
        match self {
            QueryKind::Device => "device e",
            QueryKind::Asset => "asset e",
            QueryKind::Customer => {
                "(SELECT id, created_time, title AS name, CAST(NULL AS text) AS type, CAST(NULL AS text) AS label, \
                 CAST(NULL AS uuid) AS customer_id FROM customer) e"
            }
        }
    }
}

/// ThingsBoard's entity filters that make sense for what coapgate stores.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityFilter {
    /// `singleEntity`.
    Single(QueryKind, Uuid),
    /// `entityList`.
    List(QueryKind, Vec<Uuid>),
    /// `entityType`: every entity of the type.
    Type(QueryKind),
    /// `entityName`: names starting with the text, ignoring case.
    Name(QueryKind, String),
    /// `deviceType` / `assetType`: entities of these profiles, optionally with names starting
    /// with the text (ignoring case).
    Profile { kind: QueryKind, types: Vec<String>, name_prefix: Option<String> },
}

impl EntityFilter {
    pub fn kind(&self) -> QueryKind {
        match self {
            EntityFilter::Single(kind, _)
            | EntityFilter::List(kind, _)
            | EntityFilter::Type(kind)
            | EntityFilter::Name(kind, _)
            | EntityFilter::Profile { kind, .. } => *kind,
        }
    }
}

/// Entity fields stored as columns, which a query can search and sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityColumn {
    Name,
    Type,
    Label,
    CreatedTime,
}

impl EntityColumn {
    fn column(self) -> &'static str {
        match self {
            EntityColumn::Name => "e.name",
            EntityColumn::Type => "e.type",
            EntityColumn::Label => "e.label",
            EntityColumn::CreatedTime => "e.created_time",
        }
    }
}

/// What a page is sorted by.
#[derive(Debug, Clone, PartialEq)]
pub enum SortKey {
    Column(EntityColumn),
    /// The latest value of a time series.
    Timeseries(String),
    /// An attribute of one scope, or the most recently updated of any scope.
    Attribute { scope: Option<String>, key: String },
}

/// A condition on one key's value: ThingsBoard's `KeyFilter` with a simple predicate, or a
/// complex one of those. An entity without the value matches no comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyFilter {
    pub key: SortKey,
    pub predicate: Predicate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericOp {
    Equal,
    NotEqual,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextOp {
    Equal,
    NotEqual,
    StartsWith,
    EndsWith,
    Contains,
    NotContains,
    /// The value is a comma-separated list.
    In,
    NotIn,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// Compares numbers: integer and double values, and for `createdTime` the field.
    Numeric(NumericOp, f64),
    /// Compares text values (and name, type, label).
    Text { op: TextOp, value: String, ignore_case: bool },
    /// `EQUAL` (true) or `NOT_EQUAL` (false) to a boolean value.
    Boolean { equal: bool, value: bool },
    /// All (`and`) or any of the predicates.
    Complex { and: bool, predicates: Vec<Predicate> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntityQuery {
    pub filter: EntityFilter,
    pub page_size: u32,
    pub page: u32,
    /// Case-insensitive substring of any of `search_columns` or of the latest values of
    /// `search_values` (as text), as ThingsBoard searches the fields and values a query selects.
    pub text_search: Option<String>,
    pub search_columns: Vec<EntityColumn>,
    pub search_values: Vec<SortKey>,
    /// Unsorted queries come newest first.
    pub sort: Option<(SortKey, bool)>,
    pub key_filters: Vec<KeyFilter>,
    /// Whether an entity must match any of `key_filters` rather than all.
    pub key_filters_any: bool,
    /// Only what this customer may see (a customer user's query): its devices and assets, or
    /// the customer itself for a customer query. `None`: the whole tenant.
    pub owner: Option<Uuid>,
}

/// One matched entity with the fields every kind has.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    pub kind: QueryKind,
    pub id: Uuid,
    pub created_time: Millis,
    pub name: String,
    pub entity_type: Option<String>,
    pub label: Option<String>,
    pub customer_id: Option<Uuid>,
}

/// The columns every query selects, in the order the backends' row mappers read them.
pub(crate) const ROW_COLUMNS: &str = "e.id, e.created_time, e.name, e.type, e.label, e.customer_id";

/// A bound value; each backend converts it to its driver's type.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    Uuid(Uuid),
    Number(f64),
}

/// What differs between the backends' SQL.
pub(crate) struct Dialect {
    /// A case-insensitive LIKE with its `?` and `\` as the escape character.
    pub like: &'static str,
    /// `?1` or `$1`.
    pub placeholder: &'static str,
    /// The latest point of every entity's series whose key id is the subquery given, as rows of
    /// (entity_id, ts, bool_v, long_v, dbl_v, str_v, json_v); the subquery may appear more than
    /// once (its key is bound for each).
    pub latest_points: fn(&str) -> String,
    /// A number from the `long_v`/`dbl_v` columns of the alias given.
    pub number: fn(&str) -> String,
    /// The text of the alias given, compared byte-wise on both backends.
    pub text: fn(&str) -> String,
    /// The 1-based position of a text in another, 0 when absent (`instr` or `strpos`).
    pub position: &'static str,
    /// Any value of the alias given as text, for text search.
    pub as_text: fn(&str) -> String,
}

/// The SQL of one query: the count, the page, and their parameters (the page's first).
pub(crate) struct BuiltQuery {
    pub count_sql: String,
    pub count_params: Vec<Param>,
    pub page_sql: String,
    pub page_params: Vec<Param>,
}

fn like_pattern(text: &str, prefix_only: bool) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    if prefix_only { format!("{escaped}%") } else { format!("%{escaped}%") }
}

/// The WHERE clause of a filter (with the page's text search), with `?` marks for `params`.
/// `search` is the text with the entity columns and the value expressions it may be found in.
fn conditions(
    dialect: &Dialect,
    query_filter: &EntityFilter,
    owner: Option<Uuid>,
    search: Option<(&str, &[EntityColumn], &[String])>,
    params: &mut Vec<Param>,
) -> String {
    let like = dialect.like;
    let mut parts: Vec<String> = Vec::new();
    if let Some(owner) = owner {
        params.push(Param::Uuid(owner));
        parts.push(if query_filter.kind() == QueryKind::Customer { "e.id = ?" } else { "e.customer_id = ?" }.into());
    }
    match query_filter {
        EntityFilter::Single(_, id) => {
            params.push(Param::Uuid(*id));
            parts.push("e.id = ?".into());
        }
        EntityFilter::List(_, ids) if ids.is_empty() => parts.push("1 = 0".into()),
        EntityFilter::List(_, ids) => {
            params.extend(ids.iter().map(|id| Param::Uuid(*id)));
            parts.push(format!("e.id IN ({})", vec!["?"; ids.len()].join(", ")));
        }
        EntityFilter::Type(_) => {}
        EntityFilter::Name(_, prefix) => {
            params.push(Param::Text(like_pattern(prefix, true)));
            parts.push(format!("e.name {like}"));
        }
        EntityFilter::Profile { types, name_prefix, .. } => {
            if types.is_empty() {
                parts.push("1 = 0".into());
            } else {
                params.extend(types.iter().map(|t| Param::Text(t.clone())));
                parts.push(format!("e.type IN ({})", vec!["?"; types.len()].join(", ")));
            }
            if let Some(prefix) = name_prefix.as_deref().filter(|p| !p.is_empty()) {
                params.push(Param::Text(like_pattern(prefix, true)));
                parts.push(format!("e.name {like}"));
            }
        }
    }
    if let Some((text, columns, values)) = search {
        let columns: Vec<EntityColumn> =
            columns.iter().copied().filter(|c| *c != EntityColumn::CreatedTime).collect();
        let columns = if columns.is_empty() && values.is_empty() { vec![EntityColumn::Name] } else { columns };
        let expressions = columns.iter().map(|c| c.column().to_string()).chain(values.iter().cloned());
        let any: Vec<String> = expressions
            .map(|expr| {
                params.push(Param::Text(like_pattern(text, false)));
                format!("{expr} {like}")
            })
            .collect();
        parts.push(format!("({})", any.join(" OR ")));
    }
    if parts.is_empty() { String::new() } else { format!("WHERE {}", parts.join(" AND ")) }
}

/// Numbers the `?` marks the builder wrote, in order, in the dialect's style. The builder puts
/// every value in a parameter, so a `?` is never inside a literal.
fn numbered(sql: &str, placeholder: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(placeholder);
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

const KEY_ID: &str = "(SELECT key_id FROM key_dictionary WHERE key = ?)";

/// One row per entity holding `key`'s latest value, as (entity_id, ts, bool_v, long_v, dbl_v,
/// str_v, json_v); `None` for an entity field, which needs no join.
fn value_source(dialect: &Dialect, key: &SortKey, params: &mut Vec<Param>) -> Option<String> {
    Some(match key {
        SortKey::Column(_) => return None,
        SortKey::Timeseries(name) => {
            let sql = (dialect.latest_points)(KEY_ID);
            params.extend(sql.matches('?').map(|_| Param::Text(name.clone())));
            sql
        }
        SortKey::Attribute { scope: Some(scope), key } => {
            params.push(Param::Text(key.clone()));
            params.push(Param::Text(scope.clone()));
            format!(
                "SELECT entity_id, last_update_ts AS ts, bool_v, long_v, dbl_v, str_v, json_v FROM attribute_kv \
                 WHERE key = {KEY_ID} AND scope = ?"
            )
        }
        // Any scope: the most recently written one.
        SortKey::Attribute { scope: None, key } => {
            params.push(Param::Text(key.clone()));
            format!(
                "SELECT entity_id, ts, bool_v, long_v, dbl_v, str_v, json_v FROM ( \
                   SELECT entity_id, last_update_ts AS ts, bool_v, long_v, dbl_v, str_v, json_v, \
                     row_number() OVER (PARTITION BY entity_id ORDER BY last_update_ts DESC, scope) AS rn \
                   FROM attribute_kv WHERE key = {KEY_ID}) a WHERE rn = 1"
            )
        }
    })
}

/// The number, text and boolean expressions of a key: an entity field's column, or the joined
/// value under `alias`.
fn value_expressions(dialect: &Dialect, key: &SortKey, alias: &str) -> (String, String, String) {
    match key {
        SortKey::Column(EntityColumn::CreatedTime) => ("e.created_time".into(), "NULL".into(), "NULL".into()),
        SortKey::Column(column) => ("NULL".into(), column.column().into(), "NULL".into()),
        _ => ((dialect.number)(alias), (dialect.text)(alias), format!("{alias}.bool_v")),
    }
}

fn predicate_sql(dialect: &Dialect, (number, text, boolean): &(String, String, String), predicate: &Predicate, params: &mut Vec<Param>) -> String {
    match predicate {
        Predicate::Numeric(op, value) => {
            let op = match op {
                NumericOp::Equal => "=",
                NumericOp::NotEqual => "<>",
                NumericOp::Greater => ">",
                NumericOp::Less => "<",
                NumericOp::GreaterOrEqual => ">=",
                NumericOp::LessOrEqual => "<=",
            };
            params.push(Param::Number(*value));
            format!("{number} {op} CAST(? AS double precision)")
        }
        Predicate::Boolean { equal, value } => {
            // Literals, not parameters: SQLite stores booleans as 0/1, PostgreSQL as boolean,
            // and both read TRUE and FALSE as theirs.
            let literal = if *value { "TRUE" } else { "FALSE" };
            format!("{boolean} {} {literal}", if *equal { "=" } else { "<>" })
        }
        Predicate::Text { op, value, ignore_case } => {
            let (expr, mark) = if *ignore_case { (format!("lower({text})"), "lower(?)") } else { (text.clone(), "?") };
            let mut bind = |v: &str| params.push(Param::Text(v.to_string()));
            let position = dialect.position;
            match op {
                TextOp::Equal | TextOp::NotEqual => {
                    bind(value);
                    format!("{expr} {} {mark}", if *op == TextOp::Equal { "=" } else { "<>" })
                }
                TextOp::StartsWith => {
                    bind(value);
                    format!("{position}({expr}, {mark}) = 1")
                }
                TextOp::Contains | TextOp::NotContains => {
                    bind(value);
                    format!("{position}({expr}, {mark}) {} 0", if *op == TextOp::Contains { ">" } else { "=" })
                }
                TextOp::EndsWith => {
                    for _ in 0..3 {
                        bind(value);
                    }
                    format!("(length({expr}) >= length({mark}) AND substr({expr}, length({expr}) - length({mark}) + 1) = {mark})")
                }
                TextOp::In | TextOp::NotIn => {
                    let items: Vec<&str> = value.split(',').map(str::trim).collect();
                    for item in &items {
                        bind(item);
                    }
                    let marks = vec![mark; items.len()].join(", ");
                    format!("{expr} {} ({marks})", if *op == TextOp::In { "IN" } else { "NOT IN" })
                }
            }
        }
        Predicate::Complex { and, predicates } => {
            if predicates.is_empty() {
                return "1 = 1".into();
            }
            let values = (number.clone(), text.clone(), boolean.clone());
            let parts: Vec<String> = predicates.iter().map(|p| predicate_sql(dialect, &values, p, params)).collect();
            format!("({})", parts.join(if *and { " AND " } else { " OR " }))
        }
    }
}

/// `FROM` with the joins and `WHERE` every statement of a query shares, and their parameters;
/// `first_join` (whose parameters the caller bound already) goes first.
fn from_where(dialect: &Dialect, query: &EntityQuery, first_join: &str, params: &mut Vec<Param>) -> String {
    let mut joins = first_join.to_string();
    let mut conditions_of_keys = Vec::new();
    let mut condition_params = Vec::new();
    for (n, filter) in query.key_filters.iter().enumerate() {
        let alias = format!("k{n}");
        if let Some(values) = value_source(dialect, &filter.key, params) {
            joins.push_str(&format!(" LEFT JOIN ({values}) {alias} ON {alias}.entity_id = e.id"));
        }
        let expressions = value_expressions(dialect, &filter.key, &alias);
        conditions_of_keys.push(predicate_sql(dialect, &expressions, &filter.predicate, &mut condition_params));
    }
    // Searched latest values are joined only while there is a text to search.
    let text = query.text_search.as_deref().filter(|s| !s.is_empty());
    let mut searched_values = Vec::new();
    if text.is_some() {
        for (n, key) in query.search_values.iter().enumerate() {
            let alias = format!("s{n}");
            if let Some(values) = value_source(dialect, key, params) {
                joins.push_str(&format!(" LEFT JOIN ({values}) {alias} ON {alias}.entity_id = e.id"));
                searched_values.push((dialect.as_text)(&alias));
            }
        }
    }
    let search = text.map(|s| (s, query.search_columns.as_slice(), searched_values.as_slice()));
    let mut where_clause = conditions(dialect, &query.filter, query.owner, search, params);
    if !conditions_of_keys.is_empty() {
        let keys = format!("({})", conditions_of_keys.join(if query.key_filters_any { " OR " } else { " AND " }));
        where_clause = if where_clause.is_empty() { format!("WHERE {keys}") } else { format!("{where_clause} AND {keys}") };
        params.extend(condition_params);
    }
    format!("FROM {} {joins} {where_clause}", query.filter.kind().source())
}

/// The SQL for a query on `dialect`; `max_page_size` bounds the page as the lists do.
pub(crate) fn build(dialect: &Dialect, query: &EntityQuery, max_page_size: u32) -> (BuiltQuery, u32) {
    let mut count_params = Vec::new();
    let count_sql = numbered(&format!("SELECT count(*) {}", from_where(dialect, query, "", &mut count_params)), dialect.placeholder);

    // A latest value to sort by is joined as one row per entity; entities without it sort
    // last in both directions, numbers before text, numbers by value.
    let mut page_params = Vec::new();
    let direction = |descending: bool| if descending { "DESC" } else { "ASC" };
    let (join, order) = match &query.sort {
        None => (String::new(), "e.created_time DESC, e.id".to_string()),
        Some((SortKey::Column(column), descending)) => {
            let c = column.column();
            (String::new(), format!("CASE WHEN {c} IS NULL THEN 1 ELSE 0 END, {c} {}, e.id", direction(*descending)))
        }
        Some((key, descending)) => {
            let values = value_source(dialect, key, &mut page_params).unwrap_or_default();
            let (number, text, dir) = ((dialect.number)("v"), (dialect.text)("v"), direction(*descending));
            (
                format!("LEFT JOIN ({values}) v ON v.entity_id = e.id"),
                format!(
                    "CASE WHEN v.entity_id IS NULL THEN 1 ELSE 0 END, CASE WHEN {number} IS NULL THEN 1 ELSE 0 END, \
                     {number} {dir}, {text} {dir}, e.id"
                ),
            )
        }
    };
    let rest = from_where(dialect, query, &join, &mut page_params);
    let size = query.page_size.clamp(1, max_page_size);
    let offset = u64::from(query.page) * u64::from(size);
    let page_sql = numbered(&format!("SELECT {ROW_COLUMNS} {rest} ORDER BY {order} LIMIT {size} OFFSET {offset}"), dialect.placeholder);
    (BuiltQuery { count_sql, count_params, page_sql, page_params }, size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect() -> Dialect {
        Dialect {
            like: "LIKE ? ESCAPE '\\'",
            placeholder: "?",
            latest_points: |key| format!("SELECT * FROM latest WHERE key = {key}"),
            number: |alias| format!("{alias}.n"),
            text: |alias| format!("{alias}.t"),
            position: "instr",
            as_text: |alias| format!("{alias}.any"),
        }
    }

    #[test]
    fn parameters_follow_their_marks_in_page_and_count() {
        let query = EntityQuery {
            filter: EntityFilter::Profile {
                kind: QueryKind::Device,
                types: vec!["a".into(), "b".into()],
                name_prefix: Some("x_%".into()),
            },
            page_size: 5,
            page: 2,
            text_search: Some("t".into()),
            search_columns: vec![EntityColumn::Name, EntityColumn::CreatedTime],
            search_values: Vec::new(),
            sort: Some((SortKey::Timeseries("temp".into()), true)),
            key_filters: vec![KeyFilter {
                key: SortKey::Attribute { scope: Some("SERVER_SCOPE".into()), key: "floor".into() },
                predicate: Predicate::Numeric(NumericOp::Greater, 2.0),
            }],
            key_filters_any: false,
            owner: None,
        };
        let (built, size) = build(&dialect(), &query, 100);
        assert_eq!(size, 5);
        // Count: the key filter's join (key, scope), the filter (2 types, prefix), the search,
        // then the key filter's value.
        assert_eq!(built.count_params.len(), 7);
        assert!(matches!(&built.count_params[6], Param::Number(n) if *n == 2.0));
        // Page: the sort's join first.
        assert_eq!(built.page_params.len(), 8);
        assert!(matches!(&built.page_params[0], Param::Text(k) if k == "temp"));
        assert!(matches!(&built.page_params[1], Param::Text(k) if k == "floor"));
        assert!(matches!(&built.page_params[5], Param::Text(p) if p == "x\\_\\%%"));
        assert!(built.page_sql.contains("?8") && !built.page_sql.contains("?9"));
        let (sort_join, filter_join) = (built.page_sql.find(") v ON").unwrap(), built.page_sql.find(") k0 ON").unwrap());
        assert!(sort_join < filter_join && filter_join < built.page_sql.find("WHERE e.type").unwrap());
        assert!(built.page_sql.ends_with("LIMIT 5 OFFSET 10"), "{}", built.page_sql);
        assert!(built.count_sql.contains("?7") && !built.count_sql.contains(") v ON"));
    }
}
