//! `POST /api/coapgate/converter/checkScript`: does a converter script compile?
//!
//! The console's editor asks this when a converter is saved, to mark the line of a syntax
//! error; it cannot compile JavaScript itself (its Content-Security-Policy forbids `eval`, and
//! a browser's parser is not QuickJS). The script goes through the same compile step as a
//! converter's first uplink ([`coapgate_script::check_once`]: the same wrapping of the decoder
//! body, the same TBEL parser and limits), so the reported line and column are the user's.
//! Nothing runs and nothing is stored. Beyond ThingsBoard, hence the `coapgate` prefix.

use std::sync::LazyLock;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use coapgate_script::{DecoderScript, ScriptError, ScriptLang};
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, parse_body};

/// The largest request body taken: a script at the character limit, every character written
/// as a JSON surrogate-pair escape (12 bytes), and room for the rest of the object. Larger
/// bodies are refused before they are read.
pub const MAX_BODY_BYTES: usize = coapgate_script::limits::DEFAULT_MAX_SCRIPT_CHARS * 12 + 64 * 1024;

/// Checks run at once: each builds a script engine on a thread of its own, so a burst of
/// requests waits here rather than taking every core.
static RUNNING: LazyLock<tokio::sync::Semaphore> = LazyLock::new(|| tokio::sync::Semaphore::new(2));

/// `{scriptLang: "JS"|"TBEL", script}` → `{ok: true}` or
/// `{ok: false, error, line?, column?}` (the error text as "Test payload decoder" and debug
/// events word it; line and column 1-based in the user's script).
pub async fn check_script(State(state): State<AppState>, headers: HeaderMap, body: Body) -> ApiResult<Json<Value>> {
    // Refused by its announced length before anything is read; a body without one (chunked)
    // is read up to the bound.
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let too_long = || too_large(format!("Request body is larger than {MAX_BODY_BYTES} bytes"));
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_long());
    }
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| too_long())?;
    let body = parse_body(&body)?;
    let lang = match body.get("scriptLang").and_then(Value::as_str).unwrap_or("JS") {
        "JS" => ScriptLang::Js,
        "TBEL" => ScriptLang::Tbel,
        other => return Err(ApiError::bad_request(format!("Field 'scriptLang' must be JS or TBEL, not '{other}'"))),
    };
    let script = match body.get("script") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(ApiError::bad_request("Field 'script' must be a string")),
        None => return Err(ApiError::bad_request("Field 'script' should be specified!")),
    };
    let limits = crate::serve::script_limits(&state.config);
    let chars = script.chars().count();
    if chars > limits.max_script_chars {
        return Err(too_large(format!(
            "Script body exceeds maximum allowed size of {} symbols ({chars})",
            limits.max_script_chars
        )));
    }
    let script = DecoderScript { id: uuid::Uuid::new_v4(), version: 1, lang, source: script.into() };
    let _permit = RUNNING.acquire().await.map_err(|_| ApiError::internal("script checks are shut down"))?;
    let result = tokio::task::spawn_blocking(move || coapgate_script::check_once(&script, &limits))
        .await
        .map_err(|e| ApiError::internal(format!("script check failed: {e}")))?;
    Ok(Json(answer(result)))
}

fn answer(result: Result<(), ScriptError>) -> Value {
    let error = match result {
        Ok(()) => return json!({"ok": true}),
        Err(error) => error,
    };
    let mut out = json!({"ok": false, "error": error.to_string()});
    if let Some(line) = error.line() {
        out["line"] = json!(line);
    }
    if let Some(column) = error.column() {
        out["column"] = json!(column);
    }
    out
}

fn too_large(message: String) -> ApiError {
    ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, message, error_code: 31 }
}
