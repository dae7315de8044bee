#!/usr/bin/env python3
"""Customers, assets and entity groups created by a converter, read back with the official ThingsBoard
Python REST client (tb-rest-client==4.4).

Environment:
  BASE_URL        e.g. http://127.0.0.1:8080
  USERNAME        tenant administrator login
  PASSWORD
  COAP_SEND_CMD   shell command template containing {payload} and {endpoint} (both shell-quoted when
                  substituted), e.g.
                  echo -n {payload} | coap-client-notls -m post {endpoint} -t application/json -f-
  COAP_PORT       port of the CoAP listener used in the integration's clientConfiguration.baseUrl (default 5683)
  WAIT_S          seconds to wait for the entities to appear (default 5)

Flow: login -> save_converter whose decoder emits, from one JSON payload, a device assigned to a new
customer and put in a customer-owned device group, a tenant-owned device in a tenant device group, and an
asset of the same customer in an asset group -> save_integration -> run COAP_SEND_CMD -> read back with the
client's own methods: get_customers / get_tenant_customer, get_tenant_device (its customer_id),
get_customer_by_id, get_customer_devices, get_tenant_asset, get_tenant_assets, get_asset_by_id,
get_customer_assets, get_asset_profiles, get_latest_timeseries on the asset, get_entity_groups_by_type,
get_entity_groups_by_owner_and_type, get_entity_group_by_owner_and_name_and_type, get_entity_group_by_id,
get_entities, get_entity_groups_for_entity.  Every response goes through the client's model
deserialization, so required fields and types are checked too.  Prints "OK" and exits 0 on success; on
failure prints "FAIL: <reason>" to stderr and exits non-zero.
"""

import json
import os
import shlex
import subprocess
import sys
import time
import uuid

# The payload names the entities; the converter adds types, customer and groups.
DECODER = """var p = decodeToJson(payload);
return [
  { deviceName: p.device, deviceType: 'py-meter', customerName: p.customer, groupName: p.group,
    telemetry: { power: p.power } },
  { deviceName: p.device + '-spare', deviceType: 'py-meter', groupName: p.group + ' (tenant)' },
  { assetName: p.asset, assetType: 'py-site', assetLabel: 'Main site', customerName: p.customer,
    groupName: p.group + ' sites', telemetry: { load: '' + p.power }, attributes: { floors: 3 } }
];
"""


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def env(name, default=None):
    value = os.environ.get(name, default)
    if not value:
        raise CheckFailed("environment variable %s is not set" % name)
    return value


def names(page_or_list):
    items = page_or_list.data if hasattr(page_or_list, "data") else page_or_list
    return sorted(item.name for item in items)


def run_flow():
    base_url = env("BASE_URL")
    username = env("USERNAME")
    password = env("PASSWORD")
    send_cmd = env("COAP_SEND_CMD")
    coap_port = env("COAP_PORT", "5683")
    wait_s = float(os.environ.get("WAIT_S", "5"))

    from tb_rest_client.rest_client import RestClient
    from tb_rest_client.models import Converter, Integration
    from tb_rest_client.rest import ApiException

    suffix = uuid.uuid4().hex[:8]
    device_name = "py-meter-" + suffix
    spare_name = device_name + "-spare"
    asset_name = "py-site-" + suffix
    customer_title = "Py Customer " + suffix
    group_name = "Py Meters " + suffix

    with RestClient(base_url) as client:
        client.login(username=username, password=password)
        try:
            converter = client.save_converter(Converter(
                name="coapgate-py-entities-" + suffix, type="UPLINK", integration_type="COAP", debug_mode=False,
                configuration={"scriptLang": "JS", "decoder": DECODER}))
            integration = client.save_integration(Integration(
                name="coapgate-py-entities-" + suffix, type="COAP", enabled=True, allow_create_devices_or_assets=True,
                default_converter_id=converter.id, routing_key=str(uuid.uuid4()),
                configuration={"clientConfiguration": {"baseUrl": "coap://127.0.0.1:%s" % coap_port,
                                                       "securityMode": "NO_SECURE"}, "metadata": {}}))
            endpoint = integration.configuration["clientConfiguration"]["coapEndpoint"]

            payload = json.dumps({"device": device_name, "asset": asset_name, "customer": customer_title,
                                  "group": group_name, "power": 42.5})
            cmd = send_cmd.replace("{payload}", shlex.quote(payload)).replace("{endpoint}", shlex.quote(endpoint))
            print("running:", cmd)
            proc = subprocess.run(cmd, shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=30)
            check(proc.returncode == 0, "COAP_SEND_CMD exited with %d: %s" % (proc.returncode, proc.stderr.strip()))
            check("4." not in proc.stdout and "5." not in proc.stdout, "CoAP error reply: %r" % proc.stdout)

            # ---- the device, with its customer (the 2.01 follows the commit, but be patient with remote servers)
            deadline = time.time() + wait_s
            while True:
                try:
                    device = client.get_tenant_device(device_name)
                    break
                except ApiException as e:
                    if e.status != 404 or time.time() >= deadline:
                        raise
                    time.sleep(0.25)
            check(device.type == "py-meter", "device type %r" % device.type)
            check(device.customer_id is not None and device.customer_id.entity_type == "CUSTOMER",
                  "device customer_id %r" % device.customer_id)

            # ---- customers
            customers = client.get_customers(page_size=100, page=0, text_search=suffix)
            check([c.title for c in customers.data] == [customer_title],
                  "get_customers(text_search) -> %r" % [c.title for c in customers.data])
            customer = customers.data[0]
            check(customer.id.id == device.customer_id.id,
                  "device's customer %s is not %s" % (device.customer_id.id, customer.id.id))
            check(client.get_customer_by_id(device.customer_id).title == customer_title, "get_customer_by_id title")
            check(client.get_tenant_customer(customer_title).id.id == customer.id.id, "get_tenant_customer")
            check(names(client.get_customer_devices(customer.id, page_size=10, page=0)) == [device_name],
                  "get_customer_devices: the spare device belongs to the tenant")
            spare = client.get_tenant_device(spare_name)
            check(spare.owner_id.entity_type == "TENANT", "spare device owner %r" % spare.owner_id)
            print("customer:", customer.id.id)

            # ---- the asset
            asset = client.get_tenant_asset(asset_name)
            check(asset.id.entity_type == "ASSET", "asset id %r" % asset.id)
            check((asset.type, asset.label) == ("py-site", "Main site"), "asset type/label %r/%r" % (asset.type, asset.label))
            check(asset.customer_id.id == customer.id.id, "asset customer %r" % asset.customer_id)
            check(client.get_asset_by_id(asset.id).name == asset_name, "get_asset_by_id")
            check(asset_name in names(client.get_tenant_assets(page_size=100, page=0, type="py-site")),
                  "get_tenant_assets(type='py-site')")
            check(names(client.get_customer_assets(customer.id, page_size=10, page=0)) == [asset_name],
                  "get_customer_assets")
            profiles = client.get_asset_profiles(page_size=100, page=0)
            profile = [p for p in profiles.data if p.name == "py-site"]
            check(profile and profile[0].id.id == asset.asset_profile_id.id, "asset profile py-site: %r" % names(profiles))
            ts = client.get_latest_timeseries(asset.id, keys="load", use_strict_data_types=True)
            check(ts.get("load") and ts["load"][0].value == 42.5, "asset telemetry load: %r" % (ts,))
            print("asset:", asset.id.id)

            # ---- entity groups: the customer's device and asset groups, the tenant's device group
            group = client.get_entity_group_by_owner_and_name_and_type(customer.id, "DEVICE", group_name)
            check(group.type == "DEVICE" and group.name == group_name, "group %r/%r" % (group.type, group.name))
            check(group.owner_id.id == customer.id.id, "group owner %r" % group.owner_id)
            check(client.get_entity_group_by_id(group.id).name == group_name, "get_entity_group_by_id")
            owned = client.get_entity_groups_by_owner_and_type("CUSTOMER", customer.id, "DEVICE")
            check(names(owned) == [group_name], "get_entity_groups_by_owner_and_type -> %r" % names(owned))
            members = client.get_entities(group.id, page_size=10, page=0)
            check([(m.name, m.id.entity_type, m.id.id) for m in members.data] == [(device_name, "DEVICE", device.id.id)],
                  "get_entities -> %r" % [(m.name, m.id) for m in members.data])
            of_device = client.get_entity_groups_for_entity(device.id)
            check([g.id for g in of_device] == [group.id.id], "get_entity_groups_for_entity -> %r" % of_device)

            tenant_groups = client.get_entity_groups_by_type("DEVICE")
            tenant_group = [g for g in tenant_groups if g.name == group_name + " (tenant)"]
            check(tenant_group, "get_entity_groups_by_type('DEVICE') -> %r" % names(tenant_groups))
            check(tenant_group[0].owner_id.entity_type == "TENANT", "tenant group owner %r" % tenant_group[0].owner_id)
            check(names(client.get_entities(tenant_group[0].id, page_size=10, page=0)) == [spare_name],
                  "tenant group members")

            site_groups = client.get_entity_groups_by_owner_and_type("CUSTOMER", customer.id, "ASSET")
            check(names(site_groups) == [group_name + " sites"], "asset groups -> %r" % names(site_groups))
            site_members = client.get_entities(site_groups[0].id, page_size=10, page=0)
            check([m.id.id for m in site_members.data] == [asset.id.id], "asset group members")
            print("groups:", group.id.id, tenant_group[0].id.id, site_groups[0].id.id)
        except ApiException as e:
            body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else e.body
            raise CheckFailed("HTTP %s %s: %s" % (e.status, e.reason, body))


def main():
    try:
        run_flow()
    except CheckFailed as e:
        print("FAIL: %s" % e, file=sys.stderr)
        return 1
    except Exception as e:  # connection errors, model ValueErrors on bad JSON, ...
        import traceback
        traceback.print_exc()
        print("FAIL: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 2
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
