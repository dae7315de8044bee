#!/usr/bin/env python3
"""coapgate's "Test payload decoder" and events through the official client (tb-rest-client==4.4).

Environment: BASE_URL, USERNAME, PASSWORD, COAP_PORT, COAP_SEND_CMD (a shell template with
{endpoint}, run with bash). Flow: test_up_link_converter (success and a script error), a
converter and integration with "debug all" on, one uplink over CoAP, then the integration's and
the converter's debug events with get_events_v1_get1 and get_events_post (filtered), and
get_latest_converter_debug_input. Prints OK, or FAIL: <reason> on stderr and exits 1.
"""

import base64
import json
import os
import subprocess
import sys
import time
import uuid

from tb_rest_client.rest_client import RestClient
from tb_rest_client.models.converter import Converter
from tb_rest_client.models.integration import Integration
from tb_rest_client.models.debug_integration_event_filter import DebugIntegrationEventFilter

DECODER = """var text = decodeToString(payload);
var parts = text.split(',');
return {deviceName: parts[0], deviceType: 'ev', telemetry: {v: parseFloat(parts[1])}, attributes: {src: metadata.src}};
"""


def check(cond, msg):
    if not cond:
        print("FAIL: " + msg, file=sys.stderr)
        sys.exit(1)


def wait_for(fn, what, timeout=5.0):
    deadline = time.time() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.time() > deadline:
            check(False, "timed out waiting for " + what)
        time.sleep(0.1)


def main():
    base_url = os.environ["BASE_URL"]
    client = RestClient(base_url=base_url)
    client.login(username=os.environ["USERNAME"], password=os.environ["PASSWORD"])

    # "Test payload decoder": the output as JSON text, nothing stored.
    body = {"payload": base64.b64encode(b"T-1,21.5").decode(), "metadata": {"src": "test"}, "decoder": DECODER}
    result = client.test_up_link_converter(body=body, script_lang="JS")
    check(result.get("error") == "", "testUpLink error: %r" % result)
    output = json.loads(result["output"])
    check(output == {"deviceName": "T-1", "deviceType": "ev", "telemetry": {"v": 21.5}, "attributes": {"src": "test"}},
          "testUpLink output %r" % output)
    broken = client.test_up_link_converter(body=dict(body, decoder="var x = ;\nreturn x;"), script_lang="JS")
    check("line 1" in broken.get("error", ""), "testUpLink of a syntax error: %r" % broken)

    until = int(time.time() * 1000) + 300000
    debug = {"failuresEnabled": True, "allEnabled": True, "allEnabledUntil": until}
    converter = client.save_converter(Converter(
        name="events-" + uuid.uuid4().hex[:6], type="UPLINK", integration_type="COAP",
        debug_settings=debug, configuration={"scriptLang": "JS", "decoder": DECODER}))
    integration = Integration(
        name="events-" + uuid.uuid4().hex[:6], type="COAP", enabled=True, allow_create_devices_or_assets=True,
        default_converter_id=converter.id, routing_key=str(uuid.uuid4()), debug_settings=debug,
        configuration={"clientConfiguration": {"baseUrl": "coap://127.0.0.1:%s" % os.environ["COAP_PORT"],
                                               "securityMode": "NO_SECURE"},
                       "metadata": {"src": "coap"}})
    integration = client.save_integration(integration)
    endpoint = integration.configuration["clientConfiguration"]["coapEndpoint"]
    cmd = os.environ["COAP_SEND_CMD"].replace("{endpoint}", endpoint)
    proc = subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=30)
    check(proc.returncode == 0, "coap-client failed: %s" % proc.stderr)

    tenant_id = integration.tenant_id
    page = wait_for(lambda: (lambda p: p if p.data else None)(client.get_events_v1_get1(
        entity_id=integration.id, event_type="DEBUG_INTEGRATION", tenant_id=tenant_id, page_size=10, page=0)),
        "the integration's debug event")
    event = page.data[0]
    check(event.type == "DEBUG_INTEGRATION", "event type %r" % event.type)
    check(event.body["status"] == "OK" and event.body["messageType"] == "TEXT", "event body %r" % event.body)
    check(event.body["message"].startswith("E-1,7.25"), "event message %r" % event.body["message"])

    filtered = client.get_events_post(tenant_id=tenant_id, page_size=10, page=0, entity_id=integration.id,
                                      body=DebugIntegrationEventFilter(event_type="DEBUG_INTEGRATION",
                                                                       status_integration="ERROR"))
    check(filtered.total_elements == 0, "no ERROR events expected, got %r" % filtered.total_elements)
    filtered = client.get_events_post(tenant_id=tenant_id, page_size=10, page=0, entity_id=integration.id,
                                      body=DebugIntegrationEventFilter(event_type="DEBUG_INTEGRATION",
                                                                       status_integration="OK"))
    check(filtered.total_elements == 1, "one OK event expected, got %r" % filtered.total_elements)

    conv_page = wait_for(lambda: (lambda p: p if p.data else None)(client.get_events_v1_get1(
        entity_id=converter.id, event_type="DEBUG_CONVERTER", tenant_id=tenant_id, page_size=10, page=0)),
        "the converter's debug event")
    out = json.loads(conv_page.data[0].body["out"])
    check(out["deviceName"] == "E-1" and out["telemetry"] == {"v": 7.25}, "converter out %r" % out)
    debug_in = client.get_latest_converter_debug_input(converter.id)
    check(debug_in["inContent"].startswith("E-1,7.25") and debug_in["inMetadata"]["src"] == "coap",
          "debugIn %r" % debug_in)

    lifecycle = client.get_events_v1_get1(entity_id=integration.id, event_type="LC_EVENT", tenant_id=tenant_id,
                                          page_size=10, page=0)
    check(any(e.body.get("event") == "STARTED" for e in lifecycle.data), "no STARTED lifecycle event")
    print("OK")


if __name__ == "__main__":
    main()
