//! Users through ThingsBoard's REST paths, against the real binary: tenant administrators and
//! customer users created, invited with an activation link (no mail server), activated, listed
//! with ThingsBoard's permissions, disabled and deleted; and the same flow through the official
//! `tb-rest-client` at the end. Runs on PostgreSQL too with `COAPGATE_TEST_DATABASE=postgres`.

mod common;

use base64::Engine as _;
use common::*;
use serde_json::{Value, json};

const NEW_PASSWORD: &str = "invited-password";

fn login(server: &Server, email: &str, password: &str) -> (u16, Value) {
    server.request("POST", "/api/auth/login", Some(json!({"username": email, "password": password})), None)
}

/// The claims of a JWT, read without checking its signature (the server checks that).
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn create_customer(server: &Server, title: &str) -> String {
    id_of(&server.api("POST", "/api/customer", Some(json!({"title": title}))))
}

fn create_customer_user(server: &Server, email: &str, customer: &str) -> Value {
    server.api(
        "POST",
        "/api/user?sendActivationMail=false",
        Some(json!({
            "email": email,
            "authority": "CUSTOMER_USER",
            "customerId": {"entityType": "CUSTOMER", "id": customer},
            "firstName": "Ann",
            "lastName": "Lee",
        })),
    )
}

/// The activation link's token, from `GET /api/user/{id}/activationLink` (plain text).
fn activation_token(server: &Server, user_id: &str) -> String {
    let link = server.api("GET", &format!("/api/user/{user_id}/activationLink"), None);
    let link = link.as_str().unwrap_or_else(|| panic!("a text link: {link}"));
    let (base, token) = link.split_once("/api/noauth/activate?activateToken=").unwrap_or_else(|| panic!("{link}"));
    assert_eq!(base, server.http, "the link points at the address the administrator used");
    token.to_string()
}

fn activate(server: &Server, token: &str, password: &str) -> (u16, Value) {
    server.request("POST", "/api/noauth/activate?sendActivationMail=false", Some(json!({"activateToken": token, "password": password})), None)
}

/// Creates a customer user and activates it; returns the user and its access token.
fn active_customer_user(server: &Server, email: &str, customer: &str) -> (Value, String) {
    let user = create_customer_user(server, email, customer);
    let token = activation_token(server, &id_of(&user));
    let (status, pair) = activate(server, &token, NEW_PASSWORD);
    assert_eq!(status, 200, "{pair}");
    (user, pair["token"].as_str().unwrap().to_string())
}

#[test]
fn a_customer_user_is_invited_activated_and_logs_in_as_its_customer() {
    let server = Server::start();
    let customer = create_customer(&server, "North");
    let user = create_customer_user(&server, "ann@north.example", &customer);
    let id = id_of(&user);
    assert_eq!(user["id"]["entityType"], "USER");
    assert_eq!((user["email"].as_str(), user["name"].as_str()), (Some("ann@north.example"), Some("ann@north.example")));
    assert_eq!(user["authority"], "CUSTOMER_USER");
    assert_eq!(user["customerId"]["id"], customer.as_str());
    assert_eq!((user["firstName"].as_str(), user["lastName"].as_str()), (Some("Ann"), Some("Lee")));
    assert_eq!(user["additionalInfo"]["userCredentialsEnabled"], false, "not activated yet");
    assert_eq!(server.api("GET", &format!("/api/user/{id}"), None), user);

    // No password until activation: nothing logs in, not even an empty password.
    tb_error("login before activation", login(&server, "ann@north.example", ""), 401);

    // The link leads to the console's "set your password" page, with the token in the fragment.
    let token = activation_token(&server, &id);
    assert!(token.len() >= 32 && token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
    let agent = ureq::AgentBuilder::new().redirects(0).build();
    let page = agent.get(&format!("{}/api/noauth/activate?activateToken={token}", server.http)).call().unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.header("location"), Some(format!("/#/activate?activateToken={token}").as_str()));

    // A link asked for again replaces the first.
    let newer = activation_token(&server, &id);
    assert_ne!(newer, token);
    let message = tb_error("replaced token", activate(&server, &token, NEW_PASSWORD), 400);
    assert!(message.starts_with("Unable to find user credentials by activateToken"), "{message}");

    // The password policy is checked before the token is used: the link still works after.
    let message = tb_error("short password", activate(&server, &newer, "abc"), 400);
    assert_eq!(message, "Password must be 6 or more characters in length.");
    let (status, pair) = activate(&server, &newer, NEW_PASSWORD);
    assert_eq!(status, 200, "{pair}");
    let access = pair["token"].as_str().unwrap();
    assert!(pair["refreshToken"].is_string());
    let claims = claims(access);
    assert_eq!(claims["scopes"], json!(["CUSTOMER_USER"]));
    assert_eq!(claims["customerId"], customer.as_str());
    assert_eq!(claims["sub"], "ann@north.example");

    // The token works, and says who the user is.
    let (status, me) = server.request("GET", "/api/auth/user", None, Some(access));
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["customerId"]["id"], customer.as_str());
    assert_eq!(me["authority"], "CUSTOMER_USER");
    assert_eq!(me["additionalInfo"]["userCredentialsEnabled"], true);

    // A token works once; an activated user has no link any more.
    tb_error("used token", activate(&server, &newer, "another-password"), 400);
    let message = tb_error("link after activation", server.request("GET", &format!("/api/user/{id}/activationLink"), None, Some(&server.token())), 400);
    assert_eq!(message, "User is already activated!");

    // And the password set is the one that logs in.
    assert_eq!(login(&server, "ann@north.example", NEW_PASSWORD).0, 200);
    tb_error("the refused password", login(&server, "ann@north.example", "another-password"), 401);

    // The administrator's own token says it belongs to no customer.
    assert_eq!(self::claims(&server.token())["customerId"], NULL_CUSTOMER);
}

#[test]
fn users_are_validated_as_thingsboard_does() {
    let server = Server::start();
    let token = server.token();
    let call = |body: Value| server.request("POST", "/api/user?sendActivationMail=false", Some(body), Some(&token));
    let customer = create_customer(&server, "North");
    let customer_id = json!({"entityType": "CUSTOMER", "id": customer});

    assert_eq!(tb_error("no email", call(json!({"authority": "TENANT_ADMIN"})), 400), "User email should be specified!");
    assert_eq!(
        tb_error("bad email", call(json!({"email": "not an email", "authority": "TENANT_ADMIN"})), 400),
        "Invalid email address format 'not an email'!"
    );
    tb_error("no authority", call(json!({"email": "x@y.org"})), 400);
    tb_error("system administrator", call(json!({"email": "x@y.org", "authority": "SYS_ADMIN"})), 400);
    assert_eq!(
        tb_error("customer user without customer", call(json!({"email": "x@y.org", "authority": "CUSTOMER_USER"})), 400),
        "Customer user should be assigned to customer!"
    );
    let ghost = json!({"entityType": "CUSTOMER", "id": "5f0e8a4e-0000-4000-8000-000000000001"});
    assert_eq!(
        tb_error("unknown customer", call(json!({"email": "x@y.org", "authority": "CUSTOMER_USER", "customerId": ghost})), 400),
        "User is referencing to non-existent customer!"
    );
    tb_error("admin with a customer", call(json!({"email": "x@y.org", "authority": "TENANT_ADMIN", "customerId": customer_id})), 400);
    // ThingsBoard's null customer id is no customer.
    let (status, admin) =
        call(json!({"email": "second@t.org", "authority": "TENANT_ADMIN", "customerId": {"entityType": "CUSTOMER", "id": NULL_CUSTOMER}}));
    assert_eq!(status, 200, "{admin}");
    assert_eq!(admin["customerId"]["id"], NULL_CUSTOMER);
    tb_error("e-mail taken, in another case", call(json!({"email": "SECOND@t.org", "authority": "TENANT_ADMIN"})), 400);
    assert_eq!(server.api("GET", "/api/users?pageSize=10&page=0", None)["totalElements"], 2, "nothing refused was stored");

    // An update changes the e-mail and names, never the authority or the customer.
    let mut edited = admin.clone();
    edited["email"] = json!("renamed@t.org");
    edited["firstName"] = json!("Sam");
    edited["authority"] = json!("CUSTOMER_USER");
    edited["customerId"] = customer_id;
    let saved = server.api("POST", "/api/user", Some(edited));
    assert_eq!((saved["email"].as_str(), saved["firstName"].as_str()), (Some("renamed@t.org"), Some("Sam")));
    assert_eq!((saved["authority"].as_str(), saved["customerId"]["id"].as_str()), (Some("TENANT_ADMIN"), Some(NULL_CUSTOMER)));
    assert_eq!(saved["createdTime"], admin["createdTime"]);
    let ghost_user = json!({"id": {"entityType": "USER", "id": "5f0e8a4e-0000-4000-8000-000000000002"}, "email": "g@t.org"});
    tb_error("unknown user", call(ghost_user), 404);

    // With sendActivationMail (ThingsBoard's default, and what tb-rest-client sends when told
    // nothing) the user is created all the same; the link goes to the server's log (stderr)
    // and stays available to the administrator.
    let (status, mailed) = server.request("POST", "/api/user", Some(json!({"email": "mailed@t.org", "authority": "TENANT_ADMIN"})), Some(&token));
    assert_eq!(status, 200, "{mailed}");
    // Sent again (tb-rest-client's send_activation_email): one more link in the log, 200.
    let (status, body) = server.request("POST", "/api/user/sendActivationMail?email=mailed@t.org", None, Some(&token));
    assert_eq!(status, 200, "{body}");
    tb_error("unknown e-mail", server.request("POST", "/api/user/sendActivationMail?email=nobody@t.org", None, Some(&token)), 404);
    let link_token = activation_token(&server, &id_of(&mailed));
    assert_eq!(activate(&server, &link_token, NEW_PASSWORD).0, 200);
    assert_eq!(login(&server, "mailed@t.org", NEW_PASSWORD).0, 200);
}

#[test]
fn customer_users_see_their_customers_users_and_change_only_themselves() {
    let server = Server::start();
    let (north, south) = (create_customer(&server, "North"), create_customer(&server, "South"));
    let (ann, ann_token) = active_customer_user(&server, "ann@north.example", &north);
    let bob = create_customer_user(&server, "bob@north.example", &north);
    let cid = create_customer_user(&server, "cid@south.example", &south);
    let as_ann = |method: &str, path: &str, body: Option<Value>| server.request(method, path, body, Some(&ann_token));
    let emails = |page: &Value| -> Vec<String> {
        let mut v: Vec<String> = page["data"].as_array().unwrap().iter().map(|u| u["email"].as_str().unwrap().to_string()).collect();
        v.sort();
        v
    };

    // The tenant administrator sees every user of the tenant, or one customer's, or its admins.
    let all = server.api("GET", "/api/users?pageSize=10&page=0", None);
    assert_eq!(emails(&all), ["ann@north.example", "bob@north.example", "cid@south.example", ADMIN_USER]);
    assert_eq!(server.api("GET", "/api/user/users?pageSize=10&page=0", None), all, "PE's path lists the same");
    assert_eq!(emails(&server.api("GET", &format!("/api/customer/{north}/users?pageSize=10&page=0"), None)), ["ann@north.example", "bob@north.example"]);
    let searched = server.api("GET", "/api/users?pageSize=10&page=0&textSearch=SOUTH&sortProperty=email&sortOrder=ASC", None);
    assert_eq!(emails(&searched), ["cid@south.example"]);
    let tenant = server.api("GET", "/api/auth/user", None)["tenantId"]["id"].as_str().unwrap().to_string();
    assert_eq!(emails(&server.api("GET", &format!("/api/tenant/{tenant}/users?pageSize=10&page=0"), None)), [ADMIN_USER]);

    // A customer user sees its customer's users, on both paths, and nothing else.
    for path in ["/api/users?pageSize=10&page=0", "/api/user/users?pageSize=10&page=0"] {
        let (status, page) = as_ann("GET", path, None);
        assert_eq!(status, 200, "{page}");
        assert_eq!(emails(&page), ["ann@north.example", "bob@north.example"], "{path}");
    }
    assert_eq!(as_ann("GET", &format!("/api/user/{}", id_of(&bob)), None).0, 200);
    tb_error("another customer's user", as_ann("GET", &format!("/api/user/{}", id_of(&cid)), None), 403);
    let admin_id = server.api("GET", "/api/auth/user", None)["id"]["id"].as_str().unwrap().to_string();
    tb_error("the tenant administrator", as_ann("GET", &format!("/api/user/{admin_id}"), None), 403);
    tb_error("customer's users by path", as_ann("GET", &format!("/api/customer/{north}/users?pageSize=10&page=0"), None), 403);
    tb_error("tenant admins", as_ann("GET", &format!("/api/tenant/{tenant}/users?pageSize=10&page=0"), None), 403);

    // It changes itself, no one else, and creates no one.
    let mut me = ann.clone();
    me["firstName"] = json!("Annie");
    let (status, saved) = as_ann("POST", "/api/user", Some(me));
    assert_eq!((status, saved["firstName"].as_str()), (200, Some("Annie")), "{saved}");
    let mut colleague = bob.clone();
    colleague["firstName"] = json!("Robert");
    tb_error("changing a colleague", as_ann("POST", "/api/user", Some(colleague)), 403);
    let new = json!({"email": "eve@north.example", "authority": "CUSTOMER_USER", "customerId": {"entityType": "CUSTOMER", "id": north}});
    tb_error("creating a user", as_ann("POST", "/api/user?sendActivationMail=false", Some(new)), 403);
    for (method, path) in [
        ("DELETE", format!("/api/user/{}", id_of(&bob))),
        ("GET", format!("/api/user/{}/activationLink", id_of(&bob))),
        ("POST", format!("/api/user/{}/userCredentialsEnabled?userCredentialsEnabled=false", id_of(&bob))),
    ] {
        tb_error(&format!("{method} {path}"), as_ann(method, &path, None), 403);
    }
    assert_eq!(server.api("GET", &format!("/api/user/{}", id_of(&bob)), None)["firstName"], "Ann", "bob unchanged");
}

#[test]
fn disabled_and_deleted_users_lose_their_sessions_and_their_logins() {
    let server = Server::start();
    let customer = create_customer(&server, "North");
    let (ann, ann_token) = active_customer_user(&server, "ann@north.example", &customer);
    let id = id_of(&ann);
    let me = |token: &str| server.request("GET", "/api/auth/user", None, Some(token)).0;
    assert_eq!(me(&ann_token), 200);

    server.api("POST", &format!("/api/user/{id}/userCredentialsEnabled?userCredentialsEnabled=false"), None);
    assert_eq!(me(&ann_token), 401, "the session ended with the disabling");
    let message = tb_error("disabled login", login(&server, "ann@north.example", NEW_PASSWORD), 401);
    assert_eq!(message, "User account is not active");
    assert_eq!(server.api("GET", &format!("/api/user/{id}"), None)["additionalInfo"]["userCredentialsEnabled"], false);

    // Enabled again (the parameter's default is true), the password works again.
    server.api("POST", &format!("/api/user/{id}/userCredentialsEnabled"), None);
    let (status, pair) = login(&server, "ann@north.example", NEW_PASSWORD);
    assert_eq!(status, 200, "{pair}");
    let token = pair["token"].as_str().unwrap().to_string();
    assert_eq!(me(&token), 200);

    // An administrator can neither disable nor delete itself.
    let admin_id = server.api("GET", "/api/auth/user", None)["id"]["id"].as_str().unwrap().to_string();
    let admin = server.token();
    tb_error("disable self", server.request("POST", &format!("/api/user/{admin_id}/userCredentialsEnabled?userCredentialsEnabled=false"), None, Some(&admin)), 403);
    tb_error("delete self", server.request("DELETE", &format!("/api/user/{admin_id}"), None, Some(&admin)), 403);

    server.api("DELETE", &format!("/api/user/{id}"), None);
    assert_eq!(me(&token), 401, "a deleted user's token is refused");
    tb_error("deleted login", login(&server, "ann@north.example", NEW_PASSWORD), 401);
    tb_error("deleted user", server.request("GET", &format!("/api/user/{id}"), None, Some(&admin)), 404);
    tb_error("deleted twice", server.request("DELETE", &format!("/api/user/{id}"), None, Some(&admin)), 404);

    // Deleting a customer deletes its users.
    let (bob, bob_token) = active_customer_user(&server, "bob@north.example", &customer);
    server.api("DELETE", &format!("/api/customer/{customer}"), None);
    assert_eq!(me(&bob_token), 401);
    tb_error("user of a deleted customer", server.request("GET", &format!("/api/user/{}", id_of(&bob)), None, Some(&admin)), 404);
}

#[test]
fn activation_attempts_are_rate_limited_like_logins() {
    let server = Server::start();
    let customer = create_customer(&server, "North");
    let user = create_customer_user(&server, "ann@north.example", &customer);
    let token = activation_token(&server, &id_of(&user));
    // Guessing tokens from one address: refused with 429 once the address's attempts are spent.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let (status, body) = activate(&server, "guessedtoken0000000000000000000", NEW_PASSWORD);
        statuses.push(status);
        if status == 429 {
            assert!(body["message"].as_str().unwrap().contains("Too many"), "{body}");
            break;
        }
        assert_eq!(status, 400, "{body}");
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // While refused, even the right token waits; the refusal itself does not use the token up.
    assert_eq!(activate(&server, &token, NEW_PASSWORD).0, 429);
}

#[test]
fn tb_rest_client_invites_activates_lists_disables_and_deletes_a_customer_user() {
    let server = Server::start();
    run_python_flow(&server, "tb_rest_client_users.py", "true");
}

/// `coapgate reset-password --email` works for any user: here an invited customer user who never
/// activated, whose link stops working with it.
#[test]
fn reset_password_sets_any_users_password_and_ends_its_invitation() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    let server = Server::start();
    let customer = create_customer(&server, "North");
    let user = create_customer_user(&server, "ann@north.example", &customer);
    let token = activation_token(&server, &id_of(&user));
    let dir = server.kill();

    let mut command = Command::new(env!("CARGO_BIN_EXE_coapgate"));
    command.env_remove("DATABASE_URL");
    if let Some(url) = dir.database_url() {
        command.env("DATABASE_URL", url);
    }
    let mut child = command
        .args(["reset-password", "--email", "ann@north.example", "--password-stdin", "--data-dir"])
        .arg(&dir.path)
        .env_remove("COAPGATE_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"reset-by-operator\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start_in(dir, &[], &[]);
    let (status, pair) = login(&server, "ann@north.example", "reset-by-operator");
    assert_eq!(status, 200, "{pair}");
    assert_eq!(claims(pair["token"].as_str().unwrap())["customerId"], customer.as_str());
    let message = tb_error("the invitation after a reset", activate(&server, &token, NEW_PASSWORD), 400);
    assert!(message.starts_with("Unable to find user credentials"), "{message}");
}
