//! `check_once`: compiling without running, with positions in the user's own text.

use coapgate_script::{DecoderScript, Limits, ScriptError, ScriptLang, check_once};

fn check(lang: ScriptLang, source: &str) -> Result<(), ScriptError> {
    let script = DecoderScript { id: uuid::Uuid::new_v4(), version: 1, lang, source: source.into() };
    check_once(&script, &Limits::default())
}

fn position(lang: ScriptLang, source: &str) -> (Option<u32>, Option<u32>) {
    match check(lang, source) {
        Err(e @ ScriptError::Compile { .. }) => (e.line(), e.column()),
        other => panic!("{source:?}: expected a compile error, got {other:?}"),
    }
}

#[test]
fn valid_scripts_pass_without_running() {
    // The body would throw if it ran.
    check(ScriptLang::Js, "throw new Error('ran');\nreturn 1;").unwrap();
    check(ScriptLang::Tbel, "var a = payload[0];\nreturn {deviceName: 'x', a: a};").unwrap();
}

#[test]
fn javascript_positions_are_the_users_lines_and_columns() {
    assert_eq!(position(ScriptLang::Js, "var a = 1;\nvar b = 2;\nvar c = ;\nreturn a;"), (Some(3), Some(9)));
    // Line 1 shares its line with the wrapper: columns are still the user's.
    assert_eq!(position(ScriptLang::Js, "var c = ;"), (Some(1), Some(9)));
    // An unclosed block is found at the wrapper's end: the end of the user's last line.
    assert_eq!(position(ScriptLang::Js, "if (a) {\n  return 1;"), (Some(2), Some(12)));
}

#[test]
fn tbel_positions_are_the_users() {
    let (line, _) = position(ScriptLang::Tbel, "var a = 1;\nvar b = 2;\nvar c = ;\nreturn a;");
    assert_eq!(line, Some(3));
}

#[test]
fn oversized_scripts_are_refused_before_compiling() {
    let big = "var a = 1;\n".repeat(6000);
    assert!(matches!(check(ScriptLang::Js, &big), Err(ScriptError::TooLarge { .. })));
}
