//! `coapgate decode`: run a converter script on one payload, offline, with the server's engine.
//!
//! Prints the converter's output as JSON on success; on a script error prints the error (with
//! its line) and exits non-zero, so it can be used in scripts and CI.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use coapgate_script::{DecoderScript, Limits, ScriptLang, decode_once};

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The converter script (the body of ThingsBoard's `Decoder(payload, metadata)`).
    #[arg(long)]
    script: PathBuf,
    /// Script language.
    #[arg(long, value_parser = ["JS", "TBEL"], default_value = "JS")]
    lang: String,
    /// Payload as text (UTF-8).
    #[arg(long, group = "input")]
    text: Option<String>,
    /// Payload as hexadecimal, e.g. 0102ff.
    #[arg(long, group = "input")]
    hex: Option<String>,
    /// Payload as Base64.
    #[arg(long, group = "input")]
    base64: Option<String>,
    /// Payload read from a file, byte for byte.
    #[arg(long, group = "input")]
    file: Option<PathBuf>,
    /// Metadata entries as key=value; repeatable.
    #[arg(long = "metadata", short = 'm')]
    metadata: Vec<String>,
    /// Time limit in milliseconds.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
}

pub fn run(args: DecodeArgs) -> anyhow::Result<()> {
    let source = std::fs::read_to_string(&args.script).with_context(|| format!("--script: cannot read {}", args.script.display()))?;
    let payload = payload(&args)?;
    let mut metadata = BTreeMap::new();
    for entry in &args.metadata {
        let Some((k, v)) = entry.split_once('=') else {
            bail!("--metadata: `{entry}` is not key=value");
        };
        metadata.insert(k.to_string(), v.to_string());
    }
    let lang = if args.lang == "TBEL" { ScriptLang::Tbel } else { ScriptLang::Js };
    let script = DecoderScript { id: uuid::Uuid::nil(), version: 0, lang, source: source.into() };
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let limits = Limits { timeout, tbel_timeout: timeout, ..Limits::default() };
    let output = decode_once(&script, &payload, &metadata, &limits).map_err(|e| anyhow::anyhow!("converter error: {e}"))?;
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

fn payload(args: &DecodeArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(text) = &args.text {
        return Ok(text.as_bytes().to_vec());
    }
    if let Some(hex) = &args.hex {
        return decode_hex(hex).context("--hex");
    }
    if let Some(b64) = &args.base64 {
        return base64::engine::general_purpose::STANDARD.decode(b64.trim()).context("--base64: not valid Base64");
    }
    if let Some(file) = &args.file {
        return std::fs::read(file).with_context(|| format!("--file: cannot read {}", file.display()));
    }
    bail!("give the payload with one of --text, --hex, --base64 or --file")
}

fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = digits.strip_prefix("0x").unwrap_or(&digits);
    if !digits.len().is_multiple_of(2) {
        bail!("odd number of hex digits");
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).with_context(|| format!("`{}` is not hex", &digits[i..i + 2])))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_payloads() {
        assert_eq!(super::decode_hex("01 02ff").unwrap(), vec![1, 2, 255]);
        assert_eq!(super::decode_hex("0xA0").unwrap(), vec![0xa0]);
        assert!(super::decode_hex("abc").is_err());
        assert!(super::decode_hex("zz").is_err());
    }
}
