//! The web console: a static single-page application built into the binary.
//!
//! The files under `crates/server/console/` are embedded with `include_bytes!`, so the binary
//! needs nothing beside it and the browser talks to no other server. The page is served at `/`
//! and its files under `/assets/`; everything else (notably `/api/*` and `/metrics`) is left to
//! the REST router, and an unknown path keeps answering ThingsBoard's 404 JSON. Navigation
//! inside the console uses the URL fragment (`/#/devices`), so no console route can shadow an
//! API path.
//!
//! Every response carries a Content-Security-Policy that allows only this origin: no inline
//! script, no external script, style, image or connection.

use std::sync::OnceLock;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// Only this origin; `style-src` has no `'unsafe-inline'` (the libraries set styles through
/// the CSSOM, which CSP allows).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset { path: $path, content_type: $content_type, bytes: include_bytes!(concat!("../console/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Every file of the console, by its path under `/assets/` (`index.html` is `/`).
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/table.js", JS),
    asset!("js/login.js", JS),
    asset!("js/converters.js", JS),
    asset!("js/integrations.js", JS),
    asset!("js/events.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/entities.js", JS),
    asset!("js/editor.js", JS),
    asset!("js/forms.js", JS),
    asset!("js/users.js", JS),
    asset!("tbel-mode.js", JS),
    asset!("vendor/codemirror-5.65.20/codemirror.js", JS),
    asset!("vendor/codemirror-5.65.20/codemirror.css", CSS),
    asset!("vendor/codemirror-5.65.20/mode/javascript.js", JS),
    asset!("vendor/codemirror-5.65.20/matchbrackets.js", JS),
    asset!("vendor/uplot-1.6.32/uPlot.iife.min.js", JS),
    asset!("vendor/uplot-1.6.32/uPlot.min.css", CSS),
];

/// The console's file for `uri`, or `None` to let the API answer (its 404 JSON).
pub fn response(method: &Method, uri: &Uri, request_headers: &HeaderMap) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = uri.path();
    let name = match path {
        "/" | "/index.html" => "index.html",
        "/favicon.ico" => "favicon.svg",
        _ => path.strip_prefix("/assets/")?,
    };
    let index = ASSETS.iter().position(|a| a.path == name)?;
    let asset = &ASSETS[index];
    let etag = etags()[index].as_str();
    // Vendored libraries live under versioned folders and never change at a given path; our
    // own files change with the binary, so the browser revalidates them (cheaply, by ETag).
    let cache_control =
        if name.starts_with("vendor/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(header::ETAG, HeaderValue::from_str(etag).expect("hex ETag"));
    security_headers(&mut headers);
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    if not_modified {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    let body = if method == Method::HEAD { &[][..] } else { asset.bytes };
    Some((StatusCode::OK, headers, body).into_response())
}

fn security_headers(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

/// A strong ETag per asset (FNV-1a of its bytes), computed once.
fn etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let hash = a.bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
                format!("\"{hash:016x}-{}\"", a.bytes.len())
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<Response> {
        response(&Method::GET, &path.parse().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn serves_the_page_and_its_files_but_never_api_paths() {
        let index = get("/").expect("index");
        assert_eq!(index.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(index.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().contains("script-src 'self'"));
        assert_eq!(get("/assets/js/main.js").unwrap().headers()[header::CONTENT_TYPE], JS);
        assert_eq!(get("/assets/app.css").unwrap().headers()[header::CONTENT_TYPE], CSS);
        let vendor = get("/assets/vendor/uplot-1.6.32/uPlot.iife.min.js").unwrap();
        assert!(vendor.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        for path in ["/api/converters", "/metrics", "/assets/../Cargo.toml", "/assets/nope.js", "/devices"] {
            assert!(get(path).is_none(), "{path}");
        }
        assert!(response(&Method::POST, &"/".parse().unwrap(), &HeaderMap::new()).is_none());
    }

    #[test]
    fn revalidation_by_etag() {
        let first = get("/assets/js/api.js").unwrap();
        let etag = first.headers()[header::ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag);
        let again = response(&Method::GET, &"/assets/js/api.js".parse().unwrap(), &headers).unwrap();
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn every_script_is_a_file_not_inline() {
        let html = std::str::from_utf8(ASSETS[0].bytes).unwrap();
        assert!(!html.contains("<script>") && !html.contains("style=") && !html.contains(" onload="), "inline code in index.html");
    }
}
