//! The console's Users page in a real browser (`tests/browser/users.mjs`): a tenant administrator
//! invites a customer user with an activation link (no mail server), the user sets a password on
//! the page the link opens, logs in and sees only its customer's device and pages; the
//! administrator then disables and deletes the user. At 360 px nothing scrolls sideways.

mod common;

use common::browser::*;
use common::*;
use serde_json::json;

#[test]
fn a_customer_user_is_invited_in_the_console_and_sees_only_its_customer() {
    let server = Server::start();
    let customer = server.api("POST", "/api/customer", Some(json!({"title": "Acme"})));
    let customer_id = customer["id"]["id"].as_str().unwrap().to_string();
    let mine = server.api("POST", "/api/device", Some(json!({"name": "Acme-Meter", "type": "meter"})));
    server.api("POST", &format!("/api/customer/{customer_id}/device/{}", mine["id"]["id"].as_str().unwrap()), None);
    server.api("POST", "/api/device", Some(json!({"name": "Tenant-Meter", "type": "meter"})));
    run_browser(
        "users.mjs",
        &server,
        &[
            ("CUSTOMER_TITLE", "Acme".to_string()),
            ("CUSTOMER_ID", customer_id),
            ("MINE_DEVICE", "Acme-Meter".to_string()),
            ("OTHER_DEVICE", "Tenant-Meter".to_string()),
        ],
    );
    // What the administrator did in the browser is what the API holds: the user is gone.
    let users = server.api("GET", "/api/users?pageSize=10&page=0", None);
    assert_eq!(users["totalElements"], 1, "{users}");
    assert_eq!(users["data"][0]["email"], ADMIN_USER);
}
