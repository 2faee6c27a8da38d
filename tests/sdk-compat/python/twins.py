"""Python twin scenarios: `azure-iot-device` get_twin / patch_twin_reported_properties /
on_twin_desired_properties_patch_received over MQTT and MQTT-WS, and `azure-iot-hub`
get_twin / update_twin (etag and `*`) / replace_twin / query_iot_hub paging / bulk create,
unchanged, pointed at the emulator with the connection string and CA trust only.

    python twins.py device-mqtt | device-mqtt-ws | service | bulk

Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
"""

import logging
import os
import queue

from azure.iot.device import IoTHubDeviceClient
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import (
    AuthenticationMechanism,
    ExportImportDevice,
    QuerySpecification,
    SymmetricKey,
    Twin,
    TwinProperties,
)
from msrest.exceptions import HttpOperationError

from common import (
    ScenarioFailure,
    ca_pem,
    check,
    device_connection_string,
    log,
    run,
    service_connection_string,
    unique_id,
)

if os.environ.get("SDK_COMPAT_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)
else:
    logging.basicConfig(level=logging.WARNING)


def registry_manager():
    return IoTHubRegistryManager.from_connection_string(service_connection_string())


def create_device(rm, prefix):
    device_id = unique_id(prefix)
    device = rm.create_device_with_sas(device_id, None, None, "enabled")
    return device_id, device.authentication.symmetric_key.primary_key


def scenario_device(websockets):
    """The device reads its twin, reports, and receives the desired patches the service writes,
    in version order; the service sees the reported values."""
    rm = registry_manager()
    device_id, key = create_device(rm, "py-twin-ws" if websockets else "py-twin")
    client = IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, key),
        server_verification_cert=ca_pem(),
        websockets=websockets,
        connection_retry=False,
    )
    patches = queue.Queue()
    try:
        client.connect()
        twin = client.get_twin()
        log("device twin:", twin)
        check(twin["desired"]["$version"] == 1, "new twin's desired $version: {}".format(twin))
        check("tags" not in twin, "the device view shows tags: {}".format(twin))

        client.patch_twin_reported_properties({"battery": 55, "fw": {"version": "1.0"}})
        client.patch_twin_reported_properties({"fw": None})
        service_twin = rm.get_twin(device_id)
        reported = service_twin.properties.reported
        log("service sees reported:", reported)
        check(reported.get("battery") == 55, "reported battery not 55: {}".format(reported))
        check("fw" not in reported, "reported fw not removed by null: {}".format(reported))
        check(reported.get("$version") == 3, "reported $version not 3: {}".format(reported))

        client.on_twin_desired_properties_patch_received = patches.put
        # The handler subscribes lazily; a GET round trip makes sure the SUBSCRIBE is done.
        client.get_twin()
        etag = rm.get_twin(device_id).etag
        rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"speed": 1})), etag)
        rm.update_twin(device_id, Twin(properties=TwinProperties(desired={"speed": 2, "mode": "eco"})), "*")
        first = patches.get(timeout=20)
        second = patches.get(timeout=20)
        log("desired patches:", first, second)
        check(first.get("speed") == 1 and first.get("$version") == 2, "first patch: {}".format(first))
        check(second.get("speed") == 2 and second.get("$version") == 3, "second patch: {}".format(second))
        twin = client.get_twin()
        check(twin["desired"].get("mode") == "eco", "desired after patches: {}".format(twin))
    except queue.Empty:
        raise ScenarioFailure("no desired-property patch reached the handler within 20 s")
    finally:
        client.shutdown()
        rm.delete_device(device_id)


def expect_status(call, status, what):
    try:
        result = call()
    except HttpOperationError as e:
        got = e.response.status_code
        log("{} -> {} {}".format(what, got, e.response.text))
        check(got == status, "{}: expected HTTP {}, got {} {}".format(what, status, got, e.response.text))
        return
    raise ScenarioFailure("{}: expected HTTP {}, but it succeeded: {}".format(what, status, result))


def scenario_service():
    """get_twin, update_twin with a real etag, a stale one and `*`, replace_twin, and
    query_iot_hub followed page by page until the continuation token is gone."""
    rm = registry_manager()
    prefix = unique_id("pyq")
    ids = ["{}-{}".format(prefix, i) for i in range(7)]
    for device_id in ids:
        rm.create_device_with_sas(device_id, None, None, "enabled")
    try:
        twin = rm.get_twin(ids[0])
        check(twin.device_id == ids[0] and twin.version == 2, "new twin: {}".format(twin))
        updated = rm.update_twin(
            ids[0], Twin(tags={"site": "oslo"}, properties=TwinProperties(desired={"fw": "1.0"})), twin.etag
        )
        check(updated.tags == {"site": "oslo"}, "tags after update: {}".format(updated.tags))
        check(updated.properties.desired.get("fw") == "1.0", "desired after update: {}".format(updated.properties.desired))
        check(updated.etag != twin.etag, "etag did not change")
        expect_status(lambda: rm.update_twin(ids[0], Twin(tags={"site": "bergen"}), twin.etag), 412, "update with a stale etag")
        replaced = rm.replace_twin(ids[0], Twin(tags={"group": prefix}, properties=TwinProperties(desired={"x": 1})))
        check(replaced.tags == {"group": prefix}, "tags after replace: {}".format(replaced.tags))
        check("fw" not in replaced.properties.desired, "desired after replace: {}".format(replaced.properties.desired))
        for device_id in ids[1:]:
            rm.update_twin(device_id, Twin(tags={"group": prefix}), "*")

        spec = QuerySpecification(query="SELECT * FROM devices WHERE tags.group = '{}'".format(prefix))
        seen, token, pages = [], None, 0
        while True:
            result = rm.query_iot_hub(spec, token, 3)
            pages += 1
            log("query page {}: type={} items={} token={!r}".format(pages, result.type, len(result.items), result.continuation_token))
            check(result.type == "twin", "x-ms-item-type: {}".format(result.type))
            seen.extend(t.device_id for t in result.items)
            token = result.continuation_token
            if not token:
                break
            check(pages < 10, "the query never ended")
        check(sorted(seen) == sorted(ids), "query returned {}".format(seen))
        check(pages == 3, "7 twins in pages of 3 took {} pages".format(pages))
    finally:
        for device_id in ids:
            rm.delete_device(device_id)


def scenario_bulk():
    """bulk_create_or_update_devices: create two devices, then a batch with one failure that
    reports per-device errors."""
    rm = registry_manager()
    a, b = unique_id("pyb"), unique_id("pyb")

    def item(device_id, mode):
        return ExportImportDevice(
            id=device_id,
            import_mode=mode,
            status="enabled",
            authentication=AuthenticationMechanism(type="sas", symmetric_key=SymmetricKey()),
        )

    try:
        result = rm.bulk_create_or_update_devices([item(a, "create"), item(b, "create")])
        log("bulk create:", result)
        check(result.is_successful, "bulk create failed: {}".format(result.errors))
        check(rm.get_device(a).device_id == a, "device {} not created".format(a))
        try:
            result = rm.bulk_create_or_update_devices([item(a, "create"), item(b, "delete")])
        except HttpOperationError as e:
            raise ScenarioFailure("bulk with one failure raised HTTP {}: {}".format(e.response.status_code, e.response.text))
        log("bulk mixed:", result)
        check(not result.is_successful, "a duplicate create reported success")
        check([e.device_id for e in result.errors] == [a], "errors: {}".format(result.errors))
        check(result.errors[0].error_code == "DeviceAlreadyExists", "error code: {}".format(result.errors[0].error_code))
        expect_status(lambda: rm.get_device(b), 404, "get the bulk-deleted device")
    finally:
        for device_id in (a, b):
            try:
                rm.delete_device(device_id)
            except HttpOperationError:
                pass


if __name__ == "__main__":
    run({
        "device-mqtt": lambda: scenario_device(False),
        "device-mqtt-ws": lambda: scenario_device(True),
        "service": scenario_service,
        "bulk": scenario_bulk,
    })
