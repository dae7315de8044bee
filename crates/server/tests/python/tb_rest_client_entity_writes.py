#!/usr/bin/env python3
"""Devices, assets and customers created, assigned and given attributes and telemetry with the official
ThingsBoard Python REST client (tb-rest-client==4.4), the way a ThingsBoard user's provisioning script does.

Environment:
  BASE_URL        e.g. http://127.0.0.1:8080
  USERNAME        tenant administrator login
  PASSWORD

Flow: login -> save_customer -> save_device (a new profile by type) -> save_asset -> the duplicate device
name is refused with ThingsBoard's 400 -> assign_device_to_customer and assign_asset_to_customer (ThingsBoard
PE's owner change) -> get_customer_devices / get_customer_assets -> save_entity_attributes_v2 and
save_entity_telemetry on the customer -> get_attributes_by_scope / get_latest_timeseries ->
unassign_device_from_customer -> save_device again to rename it.  Every response goes through the client's
model deserialization.  Prints "OK" and exits 0 on success; on failure prints "FAIL: <reason>" to stderr
and exits non-zero.
"""

import uuid

NULL_CUSTOMER_ID = "13814000-1dd2-11b2-8080-808080808080"


from flow_checks import CheckFailed, check, env, main


def names(page):
    return sorted(item.name for item in page.data)


def run_flow():
    from tb_rest_client.rest_client import RestClient
    from tb_rest_client.models import Asset, Customer, Device
    from tb_rest_client.rest import ApiException

    suffix = uuid.uuid4().hex[:8]
    with RestClient(env("BASE_URL")) as client:
        client.login(username=env("USERNAME"), password=env("PASSWORD"))

        customer = client.save_customer(Customer(title="Py Buyer " + suffix))
        check(customer.id.entity_type == "CUSTOMER" and customer.title == "Py Buyer " + suffix, "customer %r" % customer)

        device = client.save_device(Device(name="py-dev-" + suffix, type="py-writer", label="Desk"))
        check(device.id.entity_type == "DEVICE", "device id %r" % device.id)
        check((device.name, device.type, device.label) == ("py-dev-" + suffix, "py-writer", "Desk"),
              "device fields %r" % device)
        profile = client.get_device_profile_by_id(device.device_profile_id)
        check(profile.name == "py-writer", "the device's profile %r" % profile.name)

        asset = client.save_asset(Asset(name="py-asset-" + suffix, type="py-place"))
        check(asset.id.entity_type == "ASSET" and asset.type == "py-place", "asset %r" % asset)

        try:
            client.save_device(Device(name="py-dev-" + suffix, type="py-writer"))
            raise CheckFailed("a second device with the same name was saved")
        except ApiException as e:
            check(e.status == 400, "duplicate name answered %s" % e.status)
            body = e.body.decode() if isinstance(e.body, bytes) else (e.body or "")
            check("Device with such name already exists!" in body, "duplicate name body %r" % body)

        device = client.assign_device_to_customer(customer.id, device.id)
        check(device.customer_id.id == customer.id.id, "assigned device's customer %r" % device.customer_id)
        asset = client.assign_asset_to_customer(customer.id, asset.id)
        check(asset.customer_id.id == customer.id.id, "assigned asset's customer %r" % asset.customer_id)
        check(names(client.get_customer_devices(customer.id, page_size=10, page=0)) == ["py-dev-" + suffix],
              "get_customer_devices")
        check(names(client.get_customer_assets(customer.id, page_size=10, page=0)) == ["py-asset-" + suffix],
              "get_customer_assets")

        client.save_entity_attributes_v2(customer.id, "SERVER_SCOPE", {"tier": "gold", "seats": 12})
        attributes = client.get_attributes_by_scope(customer.id, "SERVER_SCOPE", keys="tier,seats")
        got = sorted((a.key, a.value) for a in attributes) if attributes and hasattr(attributes[0], "key") \
            else sorted((a["key"], a["value"]) for a in attributes)
        check(got == [("seats", 12), ("tier", "gold")], "customer attributes %r" % got)

        client.save_entity_telemetry(customer.id, "ANY", {"ts": 1700000000000, "values": {"revenue": 99.5}})
        latest = client.get_latest_timeseries(customer.id, keys="revenue")
        point = latest["revenue"][0]
        value = point.value if hasattr(point, "value") else point["value"]
        check(str(value) == "99.5", "customer latest revenue %r" % latest)

        device = client.unassign_device_from_customer(device.id)
        check(device.customer_id.id == NULL_CUSTOMER_ID, "unassigned device's customer %r" % device.customer_id)

        device.name = "py-dev-renamed-" + suffix
        renamed = client.save_device(device)
        check(renamed.id.id == device.id.id and renamed.name == "py-dev-renamed-" + suffix, "renamed %r" % renamed)
        check(client.get_tenant_device("py-dev-renamed-" + suffix).id.id == device.id.id, "get_tenant_device after rename")
    print("OK")


if __name__ == "__main__":
    main(run_flow)
