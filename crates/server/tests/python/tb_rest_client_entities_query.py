#!/usr/bin/env python3
"""Entity data queries with the official ThingsBoard Python REST client (tb-rest-client==4.4), the calls
widgets and entity aliases make: find_entity_data_by_query (a device-type filter, entity fields, a latest
time series, sorted by it and paged), count_entities_by_query (entity type and entity name filters),
find_entity_timeseries_and_attributes_keys_by_query, a numeric key filter, and an unsupported filter type
refused with ThingsBoard's 400.
Every response goes through the client's model deserialization.

Runs against the fixture of tests/entities_query.rs: meters "Meter 01" (21.5), "Meter 02" (19),
"meter 03" (30.25) and "Meter 04" ("broken"), sensors "Sensor A" and "Sensor B", the uplink's "SN-001".

Environment: BASE_URL, USERNAME, PASSWORD.  Prints "OK" and exits 0 on success; on failure prints
"FAIL: <reason>" to stderr and exits non-zero.
"""



from flow_checks import CheckFailed, check, env, main


def run_flow():
    from tb_rest_client.rest_client import RestClient
    from tb_rest_client.models import (DeviceTypeFilter, EntityCountQuery, EntityDataPageLink, EntityDataQuery,
                                       EntityDataSortOrder, EntityKey, EntityNameFilter, EntityTypeFilter,
                                       KeyFilter, RelationsQueryFilter)
    from tb_rest_client.rest import ApiException

    with RestClient(env("BASE_URL")) as client:
        client.login(username=env("USERNAME"), password=env("PASSWORD"))

        name = EntityKey(type="ENTITY_FIELD", key="name")
        temperature = EntityKey(type="TIME_SERIES", key="temperature")
        meters = DeviceTypeFilter(type="deviceType", device_types=["meter"])
        page_link = EntityDataPageLink(page_size=2, page=0,
                                       sort_order=EntityDataSortOrder(key=temperature, direction="DESC"))
        query = EntityDataQuery(entity_filter=meters, page_link=page_link, entity_fields=[name],
                                latest_values=[temperature])
        page = client.find_entity_data_by_query(query)
        check(page.total_elements == 4 and page.total_pages == 2 and page.has_next, "first page %r" % page)
        rows = [(e.latest["ENTITY_FIELD"]["name"].value, e.latest["TIME_SERIES"]["temperature"].value)
                for e in page.data]
        check(rows == [("meter 03", "30.25"), ("Meter 01", "21.5")], "sorted by temperature %r" % rows)
        check(all(e.entity_id.entity_type == "DEVICE" for e in page.data), "entity ids %r" % page.data)

        page_link.page = 1
        page = client.find_entity_data_by_query(query)
        rows = [(e.latest["ENTITY_FIELD"]["name"].value, e.latest["TIME_SERIES"]["temperature"].value)
                for e in page.data]
        check(rows == [("Meter 02", "19"), ("Meter 04", "broken")] and not page.has_next, "second page %r" % rows)

        devices = client.count_entities_by_query(
            EntityCountQuery(entity_filter=EntityTypeFilter(type="entityType", entity_type="DEVICE")))
        check(devices == 7, "device count %r" % devices)
        sensors = client.count_entities_by_query(EntityCountQuery(
            entity_filter=EntityNameFilter(type="entityName", entity_type="DEVICE", entity_name_filter="sEnSoR")))
        check(sensors == 2, "sensor count %r" % sensors)

        keys = client.find_entity_timeseries_and_attributes_keys_by_query(
            timeseries=True, attributes=True, body=EntityDataQuery(entity_filter=meters, page_link=EntityDataPageLink(page_size=10, page=0)))
        check(keys.timeseries == ["temperature"] and keys.attribute == ["floor", "mode"], "keys %r" % keys)

        greater = {"type": "NUMERIC", "operation": "GREATER", "value": {"defaultValue": 20}}
        warm = client.count_entities_by_query(EntityCountQuery(
            entity_filter=meters, key_filters=[KeyFilter(key=temperature, value_type="NUMERIC", predicate=greater)]))
        check(warm == 2, "meters warmer than 20: %r" % warm)

        try:
            client.count_entities_by_query(
                EntityCountQuery(entity_filter=RelationsQueryFilter(type="relationsQuery", max_level=1)))
            raise CheckFailed("a relations query was answered as if it matched everything")
        except ApiException as e:
            check(e.status == 400, "relations query answered %s" % e.status)
    print("OK")


if __name__ == "__main__":
    main(run_flow)
