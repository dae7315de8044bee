//! Who may call what: ThingsBoard's two tenant-level authorities.
//!
//! A `TENANT_ADMIN` sees and changes everything of the tenant. A `CUSTOMER_USER` sees only its
//! customer's devices and assets and the customer itself (ThingsBoard's `CustomerUserPermissions`:
//! read, read credentials, read and write attributes and telemetry), and nothing of converters,
//! integrations, profiles' edits, other customers or the tenant's lists.
//!
//! Every route of the REST API is registered with a [`Rule`] ([`Routes`]): `Tenant` routes refuse
//! customer users before their handler runs; `Any` routes take a [`Caller`] and check the
//! entities they touch (or filter what they list) themselves. `coapgate routes` prints the table,
//! and the authority test fails for a route it has no expectation for, so a new route cannot
//! arrive without a decision.

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::MethodRouter;
use coapgate_storage::model::User;
use uuid::Uuid;

use super::{ApiError, ApiResult, AppState};

/// ThingsBoard's `ThingsboardErrorCode.PERMISSION_DENIED`.
const PERMISSION_DENIED: u32 = 20;

/// The authenticated caller, as authority decisions need it; put into request extensions by
/// `require_token` next to the user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    TenantAdmin { user: Uuid },
    /// A customer user; a customer user without a customer (which the API never makes) gets a
    /// nil customer and so sees nothing: the check fails closed.
    CustomerUser { user: Uuid, customer: Uuid },
}

impl Caller {
    pub fn of(user: &User) -> Caller {
        if user.authority == "CUSTOMER_USER" {
            Caller::CustomerUser { user: user.id, customer: user.customer_id.unwrap_or(Uuid::nil()) }
        } else {
            Caller::TenantAdmin { user: user.id }
        }
    }

    /// The customer whose entities alone this caller may see; `None` for a tenant administrator.
    pub fn customer(&self) -> Option<Uuid> {
        match self {
            Caller::TenantAdmin { .. } => None,
            Caller::CustomerUser { customer, .. } => Some(*customer),
        }
    }

    pub fn user(&self) -> Uuid {
        match self {
            Caller::TenantAdmin { user } | Caller::CustomerUser { user, .. } => *user,
        }
    }

    pub fn is_tenant_admin(&self) -> bool {
        matches!(self, Caller::TenantAdmin { .. })
    }

    pub fn require_tenant_admin(&self) -> ApiResult<()> {
        if self.is_tenant_admin() { Ok(()) } else { Err(forbidden()) }
    }

    /// Whether an entity owned by `owner` (a device's or asset's customer) is this caller's.
    pub fn owns(&self, owner: Option<Uuid>) -> bool {
        match self.customer() {
            None => true,
            Some(customer) => owner == Some(customer),
        }
    }

    /// 403 unless [`Caller::owns`].
    pub fn require_owner(&self, owner: Option<Uuid>) -> ApiResult<()> {
        if self.owns(owner) { Ok(()) } else { Err(forbidden()) }
    }
}

/// ThingsBoard's answer to a call the user's authority does not allow.
pub fn forbidden() -> ApiError {
    ApiError {
        status: StatusCode::FORBIDDEN,
        message: "You don't have permission to perform this operation!".into(),
        error_code: PERMISSION_DENIED,
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Tenant administrators only; customer users get 403 before the handler runs.
    Tenant,
    /// Every authenticated user; the handler checks (or filters by) the caller's customer.
    Any,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Tenant => "tenant-admin",
            Rule::Any => "any-user",
        }
    }
}

/// The router's table of authenticated routes: every route goes through [`Routes::add`] with
/// its rule, which is how `coapgate routes` and the authority test see all of them.
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, &'static str, Rule)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes { router: Router::new(), table: Vec::new() }
    }

    /// Adds one method of a path. Methods of the same path may have different rules (reading a
    /// device is for its customer too, deleting it for the tenant only).
    pub fn add(mut self, method: Method, path: &'static str, rule: Rule, handler: MethodRouter<AppState>) -> Routes {
        let handler = match rule {
            Rule::Tenant => handler.route_layer(axum::middleware::from_fn(tenant_admin_only)),
            Rule::Any => handler,
        };
        self.table.push((method, path, rule));
        self.router = self.router.route(path, handler);
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<(Method, &'static str, Rule)>) {
        (self.router, self.table)
    }
}

async fn tenant_admin_only(request: Request, next: Next) -> Result<Response, ApiError> {
    match request.extensions().get::<Caller>() {
        Some(caller) if caller.is_tenant_admin() => Ok(next.run(request).await),
        _ => Err(forbidden()),
    }
}

/// A user of `authority` (and customer) for unit tests of authority decisions.
#[cfg(test)]
pub(super) fn test_user(authority: &str, customer_id: Option<Uuid>) -> User {
    User {
        id: Uuid::new_v4(),
        created_time: 0,
        email: "u@example.com".into(),
        password_hash: String::new(),
        authority: authority.into(),
        first_name: None,
        last_name: None,
        customer_id,
        enabled: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use super::test_user as user;

    #[test]
    fn customer_users_own_only_their_customers_entities() {
        let (mine, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        let caller = Caller::of(&user("CUSTOMER_USER", Some(mine)));
        assert!(caller.owns(Some(mine)));
        assert!(!caller.owns(Some(theirs)));
        assert!(!caller.owns(None), "the tenant's own (unassigned) entities are not a customer's");
        assert_eq!(caller.require_owner(Some(theirs)).unwrap_err().status, StatusCode::FORBIDDEN);
        let admin = Caller::of(&user("TENANT_ADMIN", None));
        assert!(admin.owns(None) && admin.owns(Some(theirs)));
    }

    #[test]
    fn a_customer_user_without_a_customer_sees_nothing() {
        let caller = Caller::of(&user("CUSTOMER_USER", None));
        assert!(!caller.owns(None));
        assert!(!caller.owns(Some(Uuid::new_v4())));
        assert!(!caller.is_tenant_admin());
    }
}
