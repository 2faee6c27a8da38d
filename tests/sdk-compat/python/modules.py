"""Module identities with the official Python SDKs: `azure-iot-device` IoTHubModuleClient over
MQTT and MQTT-WS sends telemetry (read back by `azure-eventhub` with the module id), gets and
patches its twin, receives a desired patch and answers a method that `azure-iot-hub`
`invoke_device_module_method` calls; the registry's create_module_with_sas / get_module /
get_modules / update_module_with_sas / delete_module and the module twin calls. Unchanged SDKs,
pointed at the emulator with the connection string and CA trust only.

    python modules.py module-mqtt | module-mqtt-ws | registry

Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
"""

import base64
import logging
import os
import queue
import threading
import time
import uuid

from azure.eventhub import EventHubConsumerClient
from azure.iot.device import IoTHubModuleClient, Message, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, Twin, TwinProperties
from msrest.exceptions import HttpOperationError

from common import (
    ScenarioFailure,
    ca_pem,
    check,
    hostname,
    log,
    parse_connection_string,
    run,
    service_connection_string,
    unique_id,
)

logging.basicConfig(level=logging.DEBUG if os.environ.get("SDK_COMPAT_DEBUG") else logging.WARNING)

WAIT_SECS = 20


def registry_manager():
    return IoTHubRegistryManager.from_connection_string(service_connection_string())


def new_key():
    return base64.b64encode(os.urandom(32)).decode()


def module_connection_string(device_id, module_id, key):
    return "HostName={};DeviceId={};ModuleId={};SharedAccessKey={}".format(hostname(), device_id, module_id, key)


def eventhub_connection_string():
    """The Event Hubs-compatible connection string with `UseDevelopmentEmulator=true` (plain AMQP,
    no CA), as the portal's form plus the emulator switch."""
    cs = parse_connection_string(service_connection_string())
    host = cs["HostName"]
    return "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={};UseDevelopmentEmulator=true".format(
        host, cs["SharedAccessKeyName"], cs["SharedAccessKey"], host.split(".")[0]
    )


class Events:
    """Receives the events of one device from every partition on a thread."""

    def __init__(self, device_id):
        self.device_id = device_id.encode()
        self.got = []
        self.client = EventHubConsumerClient.from_connection_string(
            eventhub_connection_string(), consumer_group="$Default"
        )
        self.thread = threading.Thread(
            target=self.client.receive,
            kwargs=dict(on_event=self._on_event, max_wait_time=1, starting_position="-1"),
            daemon=True,
        )
        self.thread.start()

    def _on_event(self, context, event):
        if event is not None and event.system_properties.get(b"iothub-connection-device-id") == self.device_id:
            log("event:", event.body_as_str(), event.system_properties)
            self.got.append(event)

    def wait_for(self, pred, what):
        deadline = time.time() + WAIT_SECS
        while time.time() < deadline:
            for e in self.got:
                if pred(e):
                    return e
            time.sleep(0.2)
        raise ScenarioFailure("{}: not received; {} events of the device seen".format(what, len(self.got)))

    def close(self):
        self.client.close()
        self.thread.join(10)


def scenario_module(websockets):
    rm = registry_manager()
    device_id = unique_id("py-mod-ws" if websockets else "py-mod")
    module_id = unique_id("mod")
    rm.create_device_with_sas(device_id, None, None, "enabled")
    key = new_key()
    rm.create_module_with_sas(device_id, module_id, None, key, new_key())
    events = Events(device_id)
    client = IoTHubModuleClient.create_from_connection_string(
        module_connection_string(device_id, module_id, key),
        server_verification_cert=ca_pem(),
        websockets=websockets,
        connection_retry=False,
    )
    patches = queue.Queue()
    try:
        client.connect()

        # Telemetry, read back with the module id the hub stamps.
        mid = str(uuid.uuid4())
        m = Message('{"from": "module"}')
        m.message_id = mid
        m.custom_properties["kind"] = "module"
        client.send_message(m)
        e = events.wait_for(
            lambda ev: ev.system_properties.get(b"message-id") in (mid, mid.encode()), "module telemetry"
        )
        sp = e.system_properties
        check(sp.get(b"iothub-connection-module-id") == module_id.encode(), "module id on the event: {!r}".format(sp))
        check(e.properties.get(b"kind") == b"module", "properties {!r}".format(e.properties))

        # The module's own twin.
        twin = client.get_twin()
        log("module twin:", twin)
        check(twin["desired"]["$version"] == 1, "new module twin: {}".format(twin))
        client.patch_twin_reported_properties({"role": "sensor"})
        service_twin = rm.get_module_twin(device_id, module_id)
        log("service sees module twin:", service_twin)
        check(service_twin.module_id == module_id, "module twin id: {}".format(service_twin.module_id))
        check(service_twin.properties.reported.get("role") == "sensor", "module reported: {}".format(service_twin.properties.reported))
        device_twin = rm.get_twin(device_id)
        check("role" not in device_twin.properties.reported, "the device twin got the module's reported properties")

        client.on_twin_desired_properties_patch_received = patches.put
        # The handler subscribes lazily; a GET round trip makes sure the SUBSCRIBE is done.
        client.get_twin()
        rm.update_module_twin(device_id, module_id, Twin(properties=TwinProperties(desired={"interval": 7})), service_twin.etag)
        patch = patches.get(timeout=WAIT_SECS)
        log("desired patch:", patch)
        check(patch.get("interval") == 7 and patch.get("$version") == 2, "desired patch: {}".format(patch))

        # A method invoked on the module.
        calls = []

        def on_method(request):
            calls.append(request.payload)
            log("method", request.name, request.request_id, repr(request.payload))
            client.send_method_response(
                MethodResponse.create_from_method_request(request, 201, {"module": module_id, "got": request.payload})
            )

        client.on_method_request_received = on_method
        result = None
        for _ in range(50):
            try:
                result = rm.invoke_device_module_method(
                    device_id,
                    module_id,
                    CloudToDeviceMethod(
                        method_name="reboot", payload={"n": 1}, response_timeout_in_seconds=30, connect_timeout_in_seconds=5
                    ),
                )
                break
            except HttpOperationError as err:
                log("module method failed, retrying:", err.response.status_code, err.response.text)
                time.sleep(0.2)
        log("method result:", result)
        check(result is not None and result.status == 201, "method result: {}".format(result))
        check(result.payload == {"module": module_id, "got": {"n": 1}}, "method payload: {}".format(result.payload))
        check(calls == [{"n": 1}], "the handler saw {}".format(calls))
    except queue.Empty:
        raise ScenarioFailure("no desired-property patch reached the module within {} s".format(WAIT_SECS))
    finally:
        client.shutdown()
        events.close()
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


def scenario_registry():
    rm = registry_manager()
    device_id = unique_id("py-modreg")
    rm.create_device_with_sas(device_id, None, None, "enabled")
    a, b = unique_id("moda"), unique_id("modb")
    try:
        pk, sk = new_key(), new_key()
        created = rm.create_module_with_sas(device_id, a, "py-e2e", pk, sk)
        log("created:", created)
        check(created.module_id == a and created.device_id == device_id, "create_module_with_sas: {}".format(created))
        check(created.authentication.symmetric_key.primary_key == pk, "the given primary key was not kept")
        check(created.managed_by == "py-e2e", "managed_by {!r}".format(created.managed_by))
        rm.create_module_with_sas(device_id, b, None, new_key(), new_key())
        expect_status(lambda: rm.create_module_with_sas(device_id, a, None, pk, sk), 409, "create the module twice")
        expect_status(lambda: rm.create_module_with_sas(unique_id("no-device"), a, None, pk, sk), 404, "module on an unknown device")

        got = rm.get_module(device_id, a)
        check(got.module_id == a and got.etag, "get_module: {}".format(got))
        ids = sorted(m.module_id for m in rm.get_modules(device_id))
        check(ids == sorted([a, b]), "get_modules: {}".format(ids))

        new_pk = new_key()
        updated = rm.update_module_with_sas(device_id, a, "updated", got.etag, new_pk, sk)
        check(updated.authentication.symmetric_key.primary_key == new_pk, "update_module_with_sas kept the old key")
        check(updated.managed_by == "updated" and updated.etag != got.etag, "update_module_with_sas: {}".format(updated))
        expect_status(
            lambda: rm.update_module_with_sas(device_id, a, "stale", got.etag, pk, sk), 412, "update with a stale etag"
        )
        forced = rm.update_module_with_sas(device_id, a, "forced", None, pk, sk)
        check(forced.managed_by == "forced", "update_module_with_sas with etag None ('*'): {}".format(forced))

        twin = rm.get_module_twin(device_id, a)
        check(twin.device_id == device_id and twin.module_id == a, "get_module_twin: {}".format(twin))
        patched = rm.update_module_twin(device_id, a, Twin(tags={"site": "x"}, properties=TwinProperties(desired={"k": 1})), twin.etag)
        check(patched.tags == {"site": "x"} and patched.properties.desired.get("k") == 1, "update_module_twin: {}".format(patched))

        rm.delete_module(device_id, a)
        expect_status(lambda: rm.get_module(device_id, a), 404, "get_module after delete_module")
        left = [m.module_id for m in rm.get_modules(device_id)]
        check(left == [b], "modules left: {}".format(left))
    finally:
        rm.delete_device(device_id)
    expect_status(lambda: rm.get_modules(device_id), 404, "get_modules of a deleted device")


if __name__ == "__main__":
    run({
        "module-mqtt": lambda: scenario_module(False),
        "module-mqtt-ws": lambda: scenario_module(True),
        "registry": scenario_registry,
    })
