"""Python scenarios: `azure-iot-hub` (registry REST, C2D over AMQP via uamqp, feedback over HTTPS)
and `azure-iot-device` (MQTT and MQTT over WebSockets), unchanged, pointed at the emulator with
the connection string and CA trust only.

    python scenarios.py registry | c2d-mqtt | c2d-mqtt-ws | wrong-key

Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
"""

import base64
import json
import logging
import os
import queue
import threading
import uuid

from azure.iot.device import IoTHubDeviceClient
from azure.iot.device import exceptions as device_errors
from azure.iot.hub import IoTHubHttpRuntimeManager, IoTHubRegistryManager
from msrest.exceptions import HttpOperationError

from common import (
    TRICKY_VALUE,
    ScenarioFailure,
    ca_pem,
    check,
    device_connection_string,
    log,
    run,
    service_connection_string,
    unique_id,
    wait_for_feedback_https,
)

if os.environ.get("SDK_COMPAT_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)
else:
    logging.basicConfig(level=logging.WARNING)


def registry_manager():
    return IoTHubRegistryManager.from_connection_string(service_connection_string())


def expect_status(call, status, what):
    """Runs `call`, which must fail with HTTP `status`; returns the error's body text."""
    try:
        result = call()
    except HttpOperationError as e:
        got = e.response.status_code
        body = e.response.text
        log("{} -> {} {} iothub-errorcode={!r}".format(
            what, got, body, e.response.headers.get("iothub-errorcode")))
        check(got == status, "{}: expected HTTP {}, got {} {}".format(what, status, got, body))
        return body
    raise ScenarioFailure("{}: expected HTTP {}, but it succeeded: {}".format(what, status, result))


def _capture(errors, fn, *args):
    try:
        fn(*args)
    except Exception as e:  # re-raised by the caller's thread
        errors.append(e)


def create_device(rm, prefix):
    device_id = unique_id(prefix)
    device = rm.create_device_with_sas(device_id, None, None, "enabled")
    key = device.authentication.symmetric_key.primary_key
    check(key, "created {} without a generated primary key".format(device_id))
    return device_id, key


def scenario_registry():
    """Create with generated keys, get, duplicate create (409), delete, get after delete (404)."""
    rm = registry_manager()
    device_id = unique_id("py-reg")
    created = rm.create_device_with_sas(device_id, None, None, "enabled")
    log("created", created)
    check(created.device_id == device_id, "create returned device id {!r}".format(created.device_id))
    keys = created.authentication.symmetric_key
    for name, key in (("primary", keys.primary_key), ("secondary", keys.secondary_key)):
        check(key, "no generated {} key in the create response".format(name))
        raw = base64.b64decode(key, validate=True)
        check(16 <= len(raw) <= 64, "generated {} key has {} bytes".format(name, len(raw)))
    check(keys.primary_key != keys.secondary_key, "primary and secondary keys are equal")
    check(created.status == "enabled", "status {!r}".format(created.status))
    check(created.etag, "no etag in the create response")

    got = rm.get_device(device_id)
    check(got.device_id == device_id, "get returned {!r}".format(got.device_id))
    check(
        got.authentication.symmetric_key.primary_key == keys.primary_key
        and got.authentication.symmetric_key.secondary_key == keys.secondary_key,
        "get returned different keys than create",
    )
    check(got.generation_id, "no generationId from get")

    body = expect_status(
        lambda: rm.create_device_with_sas(device_id, None, None, "enabled"), 409, "duplicate create"
    )
    check("DeviceAlreadyExists" in body, "409 body does not name DeviceAlreadyExists: {}".format(body))

    rm.delete_device(device_id)
    body = expect_status(lambda: rm.get_device(device_id), 404, "get after delete")
    check("DeviceNotFound" in body, "404 body does not name DeviceNotFound: {}".format(body))


def scenario_c2d(websockets):
    """C2D from send_c2d_message (uamqp) with every property to a device on MQTT (or MQTT-WS),
    then the Success feedback record read over HTTPS."""
    rm = registry_manager()
    runtime = IoTHubHttpRuntimeManager.from_connection_string(service_connection_string())
    device_id, key = create_device(rm, "py-ws" if websockets else "py-mqtt")
    client = IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, key),
        server_verification_cert=ca_pem(),
        websockets=websockets,
        connection_retry=False,
    )
    received = queue.Queue()
    send_hung = [False]
    try:
        client.connect()
        client.on_message_received = received.put  # sends SUBSCRIBE devices/<id>/messages/devicebound/#

        message_id = "py-mid-" + uuid.uuid4().hex
        correlation_id = "py-cid-" + uuid.uuid4().hex
        body = json.dumps({"from": "azure-iot-hub", "websockets": websockets})
        if os.environ.get("SDK_COMPAT_DEBUG"):
            # uamqp's frame trace (-> / <- lines) in the log; the flag is read when it connects.
            rm.amqp_svc_client.amqp_client._debug_trace = True
        # send_c2d_message blocks until uamqp sees the delivery settled; run it aside so a hang
        # is reported as such, with what the device saw meanwhile.
        send_error = []
        sender = threading.Thread(
            target=lambda: _capture(send_error, rm.send_c2d_message, device_id, body, {
                "messageId": message_id,
                "correlationId": correlation_id,
                "contentType": "application/json",
                "contentEncoding": "utf-8",
                "iothub-ack": "full",
                "custom-prop": TRICKY_VALUE,
            }),
            daemon=True,
        )
        sender.start()
        sender.join(20)
        if sender.is_alive():
            try:
                received.get(timeout=1)
                seen = "the device did receive the message"
            except queue.Empty:
                seen = "the device received nothing"
            send_hung[0] = True
            raise ScenarioFailure(
                "send_c2d_message (uamqp) did not return within 20 s ({}); uamqp completes a "
                "send only on a settled disposition".format(seen))
        if send_error:
            raise send_error[0]
        log("sent", message_id)
        try:
            msg = received.get(timeout=20)
        except queue.Empty:
            raise ScenarioFailure("the device received no C2D message within 20 s")
        log("received", vars(msg))
        problems = []
        for what, got, want in (
            ("data", msg.data, body.encode("utf-8")),
            ("message_id", msg.message_id, message_id),
            ("correlation_id", msg.correlation_id, correlation_id),
            ("content_type", msg.content_type, "application/json"),
            ("content_encoding", msg.content_encoding, "utf-8"),
            ("ack", msg.ack, "full"),
            ("custom_properties['custom-prop']", msg.custom_properties.get("custom-prop"), TRICKY_VALUE),
        ):
            if got != want:
                problems.append("{}: got {!r}, want {!r}".format(what, got, want))
        check(not problems, "the device saw: " + "; ".join(problems))
    finally:
        client.shutdown()
        if not send_hung[0]:
            rm.amqp_svc_client.disconnect_sync()

    record, _ = wait_for_feedback_https(
        runtime, lambda r: r.get("originalMessageId") == message_id
    )
    check(
        record.get("statusCode") == "Success" and record.get("deviceId") == device_id,
        "feedback record for {}: {}".format(message_id, record),
    )
    rm.delete_device(device_id)


def scenario_wrong_key():
    """The right key connects; a wrong one is refused with CONNACK 'not authorised'."""
    rm = registry_manager()
    device_id, key = create_device(rm, "py-badkey")
    good = IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, key),
        server_verification_cert=ca_pem(),
        connection_retry=False,
    )
    try:
        good.connect()  # proves TLS and the right key work, so the failure below is the key
    finally:
        good.shutdown()

    wrong_key = base64.b64encode(os.urandom(32)).decode("ascii")
    bad = IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, wrong_key),
        server_verification_cert=ca_pem(),
        connection_retry=False,
    )
    try:
        bad.connect()
    except device_errors.CredentialError as e:
        cause = e.__cause__
        log("refused:", repr(e), "cause:", repr(cause))
        # The SDK maps a TLS failure to CredentialError too; insist on a CONNACK refusal.
        check(
            cause is not None and "Connection Refused" in str(cause),
            "CredentialError, but not from a CONNACK refusal: {!r} caused by {!r}".format(e, cause),
        )
        return
    except device_errors.ClientError as e:
        raise ScenarioFailure("expected CredentialError, got {}: {!r}".format(type(e).__name__, e))
    finally:
        bad.shutdown()
    raise ScenarioFailure("connect() with a wrong key succeeded")


if __name__ == "__main__":
    run(
        {
            "registry": scenario_registry,
            "c2d-mqtt": lambda: scenario_c2d(False),
            "c2d-mqtt-ws": lambda: scenario_c2d(True),
            "wrong-key": scenario_wrong_key,
        }
    )
