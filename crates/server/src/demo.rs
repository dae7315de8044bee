//! `serve --demo`: the seed tutorial's converter and integration, created once.

use anyhow::Context;
use coapgate_storage::Store;
use coapgate_storage::model::{Converter, Integration};
use serde_json::json;
use uuid::Uuid;

use crate::config::Config;
use crate::registry::endpoint_url;

/// The seed tutorial's decoder, verbatim.
pub const SEED_DECODER: &str = r#"/** Decoder **/
// decode payload to string
var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
// Result object with device attributes/telemetry data
var result = {
    deviceName: payloadArray[0],
    deviceType: payloadArray[1],
    telemetry: telemetryPayload,
    attributes: {}
};
/** Helper functions 'decodeToString' and 'decodeToJson' are already built-in **/
return result;
"#;

const DEMO_SETTING: &str = "demo_integration_id";

/// Creates the demo converter and integration unless an earlier `--demo` did, and returns the
/// `coap-client` command that sends the seed uplink to it.
pub fn setup(store: &dyn Store, config: &Config, coap_addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let existing = match store.setting(DEMO_SETTING)? {
        Some(id) => store.integration(Uuid::parse_str(&id)?)?,
        None => None,
    };
    let integration = match existing {
        Some(i) => i,
        None => create(store, config).context("creating the demo integration")?,
    };
    // The command is for pasting on this machine, so it names the socket actually bound.
    let host = if coap_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { coap_addr.ip().to_string() };
    let url = endpoint_url(&format!("coap://{host}:{}", coap_addr.port()), None, &integration.routing_key);
    Ok(format!(
        "echo -e 'SN-001,default,temperature,25.7,humidity,69' | coap-client-notls -m post {url} -t text/plain -f-"
    ))
}

fn create(store: &dyn Store, config: &Config) -> anyhow::Result<Integration> {
    let now = coapgate_storage::now_millis();
    let converter = Converter {
        id: Uuid::new_v4(),
        created_time: now,
        name: "CoAP Uplink Converter".into(),
        converter_type: "UPLINK".into(),
        integration_type: Some("COAP".into()),
        debug_settings: json!({"failuresEnabled": true, "allEnabled": false, "allEnabledUntil": 0}),
        configuration: json!({"scriptLang": "JS", "decoder": SEED_DECODER}),
        additional_info: json!({"description": "The seed tutorial's decoder (created by serve --demo)"}),
        version: 1,
    };
    store.save_converter(&converter)?;
    let routing_key = Uuid::new_v4().to_string();
    let integration = Integration {
        id: Uuid::new_v4(),
        created_time: now,
        name: "CoAP Integration".into(),
        integration_type: "COAP".into(),
        enabled: true,
        allow_create_devices_or_assets: true,
        is_remote: false,
        debug_settings: json!({"failuresEnabled": true, "allEnabled": false, "allEnabledUntil": 0}),
        default_converter_id: converter.id,
        downlink_converter_id: None,
        configuration: json!({
            "clientConfiguration": {
                "baseUrl": config.coap_base_url,
                "securityMode": "NO_SECURE",
                "coapEndpoint": endpoint_url(&config.coap_base_url, None, &routing_key),
            },
            "metadata": {},
        }),
        routing_key,
        secret: crate::api::random_secret(),
        additional_info: json!({"description": "The seed tutorial's integration (created by serve --demo)"}),
        version: 1,
    };
    store.save_integration(&integration)?;
    store.put_setting(DEMO_SETTING, &integration.id.to_string())?;
    Ok(integration)
}
