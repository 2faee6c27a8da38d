"""Direct methods with the official Python SDKs: `azure-iot-device` answers
(`on_method_request_received` + `send_method_response`) over MQTT or MQTT over WebSockets, and
`azure-iot-hub` calls (`IoTHubRegistryManager.invoke_device_method`).

    python methods.py mqtt | mqtt-ws | errors

Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
"""

import json
import logging
import os
import threading
import time

from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod
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

logging.basicConfig(level=logging.DEBUG if os.environ.get("SDK_COMPAT_DEBUG") else logging.WARNING)

# Every payload shape must survive the trip both ways exactly.
PAYLOADS = [None, "", "foo", {}, {"k1": "v1"}, [1, "two", {"three": 3}]]


def registry_manager():
    return IoTHubRegistryManager.from_connection_string(service_connection_string())


def create_device(rm, prefix):
    device_id = unique_id(prefix)
    device = rm.create_device_with_sas(device_id, None, None, "enabled")
    return device_id, device.authentication.symmetric_key.primary_key


def device_client(device_id, key, websockets=False):
    return IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, key),
        server_verification_cert=ca_pem(),
        websockets=websockets,
        connection_retry=False,
    )


def echo_handler(client, seen):
    """Answers every request with status 200 + index and the payload it got."""

    def handler(request):
        seen.append((request.name, request.payload))
        log("request", request.name, request.request_id, repr(request.payload))
        if request.name == "silent":
            return  # never answers: the service must get 504101
        status = 200 + len(seen)
        client.send_method_response(
            MethodResponse.create_from_method_request(request, status, request.payload)
        )

    return handler


def invoke(rm, device_id, name, payload, response_timeout=30, connect_timeout=None):
    method = CloudToDeviceMethod(
        method_name=name,
        payload=payload,
        response_timeout_in_seconds=response_timeout,
        connect_timeout_in_seconds=connect_timeout,
    )
    return rm.invoke_device_method(device_id, method)


def expect_method_error(call, status, error_code, what):
    started = time.time()
    try:
        result = call()
    except HttpOperationError as e:
        got, body = e.response.status_code, e.response.text
        log("{} -> {} after {:.1f}s: {}".format(what, got, time.time() - started, body))
        check(got == status, "{}: expected HTTP {}, got {} {}".format(what, status, got, body))
        check(str(error_code) in body, "{}: the body does not name {}: {}".format(what, error_code, body))
        return time.time() - started
    raise ScenarioFailure("{}: expected HTTP {}, got a result: {}".format(what, status, result))


def scenario_round_trip(websockets):
    rm = registry_manager()
    device_id, key = create_device(rm, "py-meth-ws" if websockets else "py-meth")
    client = device_client(device_id, key, websockets)
    seen = []
    try:
        client.connect()
        client.on_method_request_received = echo_handler(client, seen)  # SUBSCRIBE methods
        # The subscription is sent in the background: wait until a call gets through.
        for _ in range(50):
            try:
                invoke(rm, device_id, "warmup", None, connect_timeout=5)
                break
            except HttpOperationError as e:
                log("warm-up call failed, retrying:", e.response.status_code)
                time.sleep(0.1)
        for i, payload in enumerate(PAYLOADS):
            result = invoke(rm, device_id, "reboot", payload)
            log("result", result.status, repr(result.payload))
            # azure-iot-hub's invoke_device_method replaces a None payload with "" before it
            # sends the request, so the hub (real or emulated) never sees null from this SDK.
            sent = "" if payload is None else payload
            check(
                result.payload == sent,
                "payload {!r} (sent as {!r}) came back as {!r}".format(payload, sent, result.payload),
            )
            check(
                result.status == 200 + len(seen),
                "status {} for call {} (device saw {} calls)".format(result.status, i, len(seen)),
            )
            check(seen[-1] == ("reboot", sent), "the device saw {!r}".format(seen[-1]))
    finally:
        client.shutdown()
    rm.delete_device(device_id)


def scenario_errors():
    """404103 for a device that is offline (at once, and after a connect timeout); 504101 for a
    device that never answers, after the response timeout."""
    rm = registry_manager()
    device_id, key = create_device(rm, "py-meth-err")
    expect_method_error(lambda: invoke(rm, device_id, "m", None), 404, 404103, "offline")
    took = expect_method_error(
        lambda: invoke(rm, device_id, "m", None, connect_timeout=2), 404, 404103, "offline 2 s"
    )
    check(took >= 1.5, "404103 came after {:.1f}s, before the 2 s connect timeout".format(took))

    client = device_client(device_id, key)
    seen = []
    try:
        client.connect()
        client.on_method_request_received = echo_handler(client, seen)
        # A call waiting for the subscription (connect timeout) reaches the device.
        result = invoke(rm, device_id, "late", {"a": 1}, connect_timeout=10)
        check(result.payload == {"a": 1}, "late call result {!r}".format(result.payload))
        took = expect_method_error(
            lambda: invoke(rm, device_id, "silent", "x", response_timeout=5), 504, 504101, "silent"
        )
        check(4 <= took <= 10, "504101 after {:.1f}s for a 5 s response timeout".format(took))
        # Concurrent calls are independent.
        results, errors = {}, []

        def call(i):
            try:
                results[i] = invoke(rm, device_id, "c{}".format(i), i)
            except Exception as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        check(not errors, "concurrent calls failed: {!r}".format(errors))
        check(
            all(results[i].payload == i for i in range(4)),
            "concurrent results: {}".format({i: r.payload for i, r in results.items()}),
        )
    finally:
        client.shutdown()
    rm.delete_device(device_id)


if __name__ == "__main__":
    run(
        {
            "mqtt": lambda: scenario_round_trip(False),
            "mqtt-ws": lambda: scenario_round_trip(True),
            "errors": scenario_errors,
        }
    )
