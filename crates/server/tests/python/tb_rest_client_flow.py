#!/usr/bin/env python3
"""End-to-end check of coapgate against the official ThingsBoard Python REST client (tb-rest-client==4.4).

Environment:
  BASE_URL        e.g. http://127.0.0.1:8080
  USERNAME        tenant administrator login
  PASSWORD
  COAP_SEND_CMD   shell command template containing {endpoint}, e.g.
                  echo -e 'SN-001,default,temperature,25.7,humidity,69' | coap-client-notls -m post {endpoint} -t text/plain -f-
  COAP_PORT       port of the CoAP listener used in the integration's clientConfiguration.baseUrl (default 5683)
  TB_ROUTING_KEY  optional; when unset the integration is saved WITHOUT "routingKey" and the server must generate one
                  (note: the client's Integration model itself refuses routing_key=None, see make_integration())
  DEVICE_WAIT_S   seconds to wait for the device to appear (default 5)

Flow: login -> save_converter (UPLINK/COAP) -> save_integration (COAP) -> run COAP_SEND_CMD with
configuration.clientConfiguration.coapEndpoint -> get_tenant_device("SN-001") -> get_latest_timeseries
(string values, then useStrictDataTypes=True numeric values).  Prints "OK" and exits 0 on success; on failure
prints "FAIL: <reason>" to stderr and exits non-zero.
"""

import os
import shlex
import subprocess
import sys
import time
import uuid

DEVICE_NAME = "SN-001"
DEVICE_TYPE = "default"

SEED_DECODER = """var strArray = decodeToString(payload);
var payloadArray = strArray.replaceAll("\\"", "").split(',');
var telemetryPayload = {};
for (var i = 2; i < payloadArray.length; i = i + 2) {
    var telemetryKey = payloadArray[i];
    var telemetryValue = parseFloat(payloadArray[i + 1]);
    telemetryPayload[telemetryKey] = telemetryValue;
}
var result = { deviceName: payloadArray[0], deviceType: payloadArray[1], telemetry: telemetryPayload, attributes: {} };
return result;
"""


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def env(name, default=None, required=True):
    value = os.environ.get(name, default)
    if required and not value:
        raise CheckFailed("environment variable %s is not set" % name)
    return value


def import_client():
    """The issue asks for `from tb_rest_client.rest_client import RestClient`; 4.4 ships exactly that module
    (one unified CE+PE client).  Older releases had rest_client_pe.RestClientPE only, so fall back to it."""
    try:
        from tb_rest_client.rest_client import RestClient
        print("client: tb_rest_client.rest_client.RestClient")
        return RestClient
    except ImportError:
        from tb_rest_client.rest_client_pe import RestClientPE
        print("client: tb_rest_client.rest_client_pe.RestClientPE (rest_client.RestClient not available)")
        return RestClientPE


def make_integration(Integration, name, converter_id, coap_port, routing_key):
    configuration = {
        "clientConfiguration": {
            "baseUrl": "coap://127.0.0.1:%s" % coap_port,
            "securityMode": "NO_SECURE",
        },
        "metadata": {},
    }
    # Integration.__init__ runs the routing_key setter unconditionally and it raises ValueError on None,
    # so a placeholder is needed to build the model at all.
    integration = Integration(name=name, type="COAP", enabled=True, allow_create_devices_or_assets=True,
                              default_converter_id=converter_id, configuration=configuration,
                              routing_key=routing_key or "placeholder")
    if not routing_key:
        # ApiClient.sanitize_for_serialization drops None attributes, so "routingKey" is not sent at all.
        integration._routing_key = None
    return integration


def run_flow():
    base_url = env("BASE_URL")
    username = env("USERNAME")
    password = env("PASSWORD")
    send_cmd = env("COAP_SEND_CMD")
    coap_port = env("COAP_PORT", "5683")
    routing_key = os.environ.get("TB_ROUTING_KEY") or None
    device_wait = float(os.environ.get("DEVICE_WAIT_S", "5"))

    RestClient = import_client()
    from tb_rest_client.models import Converter, Integration
    from tb_rest_client.rest import ApiException
    import requests

    # `with` starts the client's token-refresh thread (it refreshes via POST /api/auth/token once time() >= exp)
    # and stops it on exit; __exit__ does not log out.
    with RestClient(base_url) as rest_client:
        # ---- login: POST /api/auth/login {"username","password"} -> {"token","refreshToken"}
        try:
            rest_client.login(username=username, password=password)
        except requests.exceptions.ConnectionError as e:
            raise CheckFailed("cannot connect to %s (is the server running?): %s" % (base_url, e))
        except ValueError as e:  # response body is not JSON
            raise CheckFailed("POST /api/auth/login did not return JSON: %s" % e)
        except KeyError as e:
            raise CheckFailed("POST /api/auth/login response lacks %s (client reads token_json['refreshToken'])" % e)
        token = rest_client.get_token()
        check(token, "login failed: POST /api/auth/login returned no 'token' (wrong USERNAME/PASSWORD?)")
        exp = rest_client.token_info.get("exp") or 0
        check(exp > time.time(),
              "JWT 'exp' claim missing/undecodable or in the past (exp=%r); the client would hammer "
              "POST /api/auth/token every second" % exp)
        print("login ok, token exp in %d s" % int(exp - time.time()))

        try:
            # ---- converter: POST /api/converter
            suffix = uuid.uuid4().hex[:8]
            converter = Converter(name="coapgate-py-uplink-" + suffix, type="UPLINK", integration_type="COAP",
                                  debug_mode=False,
                                  configuration={"scriptLang": "JS", "decoder": SEED_DECODER})
            converter = rest_client.save_converter(converter)
            check(converter.id is not None and converter.id.id, "saved converter has no id")
            check(converter.id.entity_type == "CONVERTER",
                  "converter id entityType is %r, expected 'CONVERTER'" % converter.id.entity_type)
            check(converter.type == "UPLINK", "converter type is %r, expected 'UPLINK'" % converter.type)
            print("converter id:", converter.id.id)

            # ---- integration: POST /api/integration
            integration = make_integration(Integration, "coapgate-py-coap-" + suffix, converter.id, coap_port,
                                           routing_key)
            integration = rest_client.save_integration(integration)
            check(integration.id is not None and integration.id.id, "saved integration has no id")
            check(integration.id.entity_type == "INTEGRATION",
                  "integration id entityType is %r, expected 'INTEGRATION'" % integration.id.entity_type)
            check(integration.type == "COAP", "integration type is %r" % integration.type)
            check(integration.default_converter_id.id == converter.id.id,
                  "integration defaultConverterId %r != converter id %r"
                  % (integration.default_converter_id.id, converter.id.id))
            check(integration.routing_key, "integration routingKey is empty")
            if routing_key:
                check(integration.routing_key == routing_key,
                      "routingKey %r != sent %r" % (integration.routing_key, routing_key))
            cfg = integration.configuration
            check(isinstance(cfg, dict), "integration configuration is not a JSON object: %r" % (cfg,))
            endpoint = (cfg.get("clientConfiguration") or {}).get("coapEndpoint")
            check(isinstance(endpoint, str) and endpoint,
                  "integration configuration.clientConfiguration.coapEndpoint missing: %r" % (cfg,))
            print("routing key:", integration.routing_key)
            print("coap endpoint:", endpoint)

            # ---- uplink via CoAP
            cmd = send_cmd.replace("{endpoint}", shlex.quote(endpoint))
            print("running:", cmd)
            proc = subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=30)
            if proc.stdout.strip():
                print("coap stdout:", proc.stdout.strip())
            if proc.stderr.strip():
                print("coap stderr:", proc.stderr.strip())
            check(proc.returncode == 0, "COAP_SEND_CMD exited with %d" % proc.returncode)

            # ---- device: GET /api/tenant/device?deviceName=SN-001 (404 until created)
            deadline = time.time() + device_wait
            device = None
            while True:
                try:
                    device = rest_client.get_tenant_device(DEVICE_NAME)
                    break
                except ApiException as e:
                    if e.status != 404 or time.time() >= deadline:
                        raise
                    time.sleep(0.25)
            check(device is not None and device.id is not None, "device %s has no id" % DEVICE_NAME)
            check(device.name == DEVICE_NAME, "device name %r != %r" % (device.name, DEVICE_NAME))
            check(device.type == DEVICE_TYPE, "device type %r != %r" % (device.type, DEVICE_TYPE))
            check(device.id.entity_type == "DEVICE", "device id entityType %r != 'DEVICE'" % device.id.entity_type)
            print("device id:", device.id.id)

            # ---- latest telemetry: GET /api/plugins/telemetry/DEVICE/{id}/values/timeseries?keys=...
            def latest(strict):
                deadline = time.time() + device_wait
                while True:
                    ts = rest_client.get_latest_timeseries(device.id, keys="temperature,humidity",
                                                           use_strict_data_types=strict)
                    check(isinstance(ts, dict), "latest timeseries is not a JSON object: %r" % (ts,))
                    ok = all(ts.get(k) and ts[k][0].value is not None for k in ("temperature", "humidity"))
                    if ok or time.time() >= deadline:
                        break
                    time.sleep(0.25)
                for k in ("temperature", "humidity"):
                    check(isinstance(ts.get(k), list) and ts[k],
                          "latest timeseries (strict=%s) has no entry for %r: %r" % (strict, k, ts))
                    check(ts[k][0].ts is not None and ts[k][0].ts > 0, "entry for %r has no ts: %r" % (k, ts[k]))
                return ts["temperature"][0].value, ts["humidity"][0].value

            t, h = latest(None)
            print("latest (default):", repr(t), repr(h))
            try:
                check(float(t) == 25.7, "temperature %r != 25.7" % (t,))
                check(float(h) == 69 and int(float(h)) == 69, "humidity %r != 69" % (h,))
            except (TypeError, ValueError):
                raise CheckFailed("non-numeric telemetry values: temperature=%r humidity=%r" % (t, h))
            # ThingsBoard answers strings when useStrictDataTypes is false/absent: "25.7" and "69" (a long).
            check(isinstance(t, str) and t == "25.7", "temperature should be the string '25.7', got %r" % (t,))
            check(isinstance(h, str) and h == "69", "humidity should be the string '69', got %r" % (h,))

            t, h = latest(True)  # sent as useStrictDataTypes=True (capital T)
            print("latest (strict):", repr(t), repr(h))
            check(type(t) is float and t == 25.7, "strict temperature should be the number 25.7, got %r" % (t,))
            check(type(h) is int and h == 69, "strict humidity should be the integer 69, got %r" % (h,))
        except ApiException as e:
            body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
            raise CheckFailed("HTTP %s %s: %s" % (e.status, e.reason, body))
    return 0


def main():
    try:
        run_flow()
    except CheckFailed as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    except Exception as e:  # connection errors from urllib3, model ValueErrors on bad JSON, ...
        print("FAIL: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 2
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
