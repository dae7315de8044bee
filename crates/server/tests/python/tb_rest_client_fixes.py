#!/usr/bin/env python3
"""Issue 17's REST fixes through the official ThingsBoard Python REST client (tb-rest-client==4.4, the PE
client), every response through the client's model deserialization.

Environment:
  BASE_URL        e.g. http://127.0.0.1:8080
  USERNAME        tenant administrator login
  PASSWORD

Flow: login -> save_device (with an accessToken) x2 and save_asset -> get_device_types / get_asset_types ->
get_device_credentials_by_device_id -> update_device_credentials (and a taken token refused) ->
save_entity_telemetry_with_ttl -> get_timeseries raw, with agg and no interval (raw points), with agg and an
interval (buckets, limit ignored), with key= -> delete_entity_timeseries (range, then all) ->
save_entity_attributes_v1 / save_device_attributes / save_entity_attributes_v2 with CLIENT_SCOPE refused ->
delete_entity_attributes / delete_device_attributes -> assign_device_to_customer -> get_tenant_device_infos
(own devices by default, with its customers' with include_customers).
Prints "OK" and exits 0 on success; on failure prints "FAIL: <reason>" to stderr and exits non-zero.
"""

import os
import uuid


from flow_checks import CheckFailed, check, env, main


def points_of(answer, key):
    return [(p.ts, p.value) for p in answer[key]]


def run_flow():
    from tb_rest_client.rest_client import RestClient
    from tb_rest_client.models import Asset, Device
    from tb_rest_client.rest import ApiException

    suffix = uuid.uuid4().hex[:8]
    with RestClient(env("BASE_URL")) as client:
        client.login(username=env("USERNAME"), password=env("PASSWORD"))

        device = client.save_device(Device(name="fix-dev-" + suffix, type="fix-meter"), access_token="tok-" + suffix)
        other = client.save_device(Device(name="fix-other-" + suffix, type="fix-sensor"))
        client.save_asset(Asset(name="fix-asset-" + suffix, type="fix-building"))

        device_types = sorted(t.type for t in client.get_device_types())
        check(device_types == ["fix-meter", "fix-sensor"], "device types %r" % device_types)
        check(all(t.entity_type == "DEVICE" for t in client.get_device_types()), "entity types")
        asset_types = [t.type for t in client.get_asset_types()]
        check(asset_types == ["fix-building"], "asset types %r" % asset_types)

        credentials = client.get_device_credentials_by_device_id(device.id)
        check(credentials.credentials_type == "ACCESS_TOKEN", "credentials type %r" % credentials)
        check(credentials.credentials_id == "tok-" + suffix, "the accessToken given at creation: %r" % credentials)
        credentials.credentials_id = "new-" + suffix
        saved = client.update_device_credentials(credentials)
        check(saved.credentials_id == "new-" + suffix, "updated credentials %r" % saved)
        check(client.get_device_credentials_by_device_id(device.id).credentials_id == "new-" + suffix, "stored")
        theirs = client.get_device_credentials_by_device_id(other.id)
        check(len(theirs.credentials_id) == 20, "a generated token %r" % theirs)
        theirs.credentials_id = "new-" + suffix
        try:
            client.update_device_credentials(theirs)
            raise CheckFailed("a token another device holds was accepted")
        except ApiException as e:
            check(e.status == 400, "taken token: %s" % e.status)

        points = [{"ts": 1000 * i, "values": {"t": i, "big": 12345678.5}} for i in range(1, 6)]
        client.save_entity_telemetry_with_ttl(device.id, "ANY", 3600, points)
        raw = client.get_timeseries(device.id, 0, 100000, keys="t", order_by="ASC")
        check([ts for ts, _ in points_of(raw, "t")] == [1000, 2000, 3000, 4000, 5000], "raw %r" % raw)
        no_interval = client.get_timeseries(device.id, 0, 100000, keys="t", agg="AVG", order_by="ASC")
        check(points_of(no_interval, "t") == points_of(raw, "t"), "agg without an interval reads raw points: %r" % no_interval)
        buckets = client.get_timeseries(device.id, 0, 6000, keys="t", agg="SUM", interval=2000, limit=1, order_by="ASC")
        check(points_of(buckets, "t") == [(1000, "1"), (3000, "5"), (5000, "9")],
              "buckets %r" % buckets)
        by_key = client.get_timeseries(device.id, 0, 100000, key=["t"], order_by="ASC")
        check(points_of(by_key, "t") == points_of(raw, "t"), "key= %r" % by_key)
        big = client.get_timeseries(device.id, 0, 100000, keys="big", limit=1)
        check(big["big"][0].value == "1.23456785E7", "Double.toString %r" % big)

        client.delete_entity_timeseries(device.id, keys="t", start_ts=2000, end_ts=4000)
        left = client.get_timeseries(device.id, 0, 100000, keys="t", order_by="ASC")
        check([ts for ts, _ in points_of(left, "t")] == [1000, 4000, 5000], "after a range delete %r" % left)
        client.delete_entity_timeseries(device.id, keys="t", delete_all_data_for_keys=True)
        check("t" not in client.get_timeseries(device.id, 0, 100000, keys="t"), "after deleting all")

        client.save_entity_attributes_v1(device.id, "SERVER_SCOPE", {"a": 1, "b": 2})
        client.save_device_attributes(device.id, "SHARED_SCOPE", {"c": "x"})
        try:
            client.save_entity_attributes_v2(device.id, "CLIENT_SCOPE", {"d": 1})
            raise CheckFailed("a CLIENT_SCOPE write was accepted")
        except ApiException as e:
            check(e.status == 400, "CLIENT_SCOPE write: %s" % e.status)
        check(sorted(client.get_attribute_keys_by_scope(device.id, "SERVER_SCOPE")) == ["a", "b"], "server keys")
        client.delete_entity_attributes(device.id, "SERVER_SCOPE", keys="a")
        client.delete_device_attributes(device.id, "SHARED_SCOPE", keys="c")
        check(client.get_attribute_keys_by_scope(device.id, "SERVER_SCOPE") == ["b"], "after delete")
        check(client.get_attribute_keys_by_scope(device.id, "SHARED_SCOPE") == [], "after device delete")

        from tb_rest_client.models import Customer
        customer = client.save_customer(Customer(title="fix-customer-" + suffix))
        client.assign_device_to_customer(customer.id, other.id)
        own = client.get_tenant_device_infos(page_size=10, page=0, sort_property="name", sort_order="ASC")
        check([d.name for d in own.data] == ["fix-dev-" + suffix], "own device infos %r" % own)
        infos = client.get_tenant_device_infos(page_size=10, page=0, include_customers=True, sort_property="name",
                                               sort_order="ASC")
        rows = [(d.name, d.owner_name) for d in infos.data]
        check(rows == [("fix-dev-" + suffix, None), ("fix-other-" + suffix, "fix-customer-" + suffix)],
              "device infos %r" % rows)
    print("OK")


if __name__ == "__main__":
    main(run_flow)
