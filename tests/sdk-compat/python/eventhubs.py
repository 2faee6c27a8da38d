"""Python scenarios for the built-in Event Hubs-compatible endpoint: `azure-eventhub`'s
`EventHubConsumerClient`, unchanged, reads telemetry that `azure-iot-device` sent over MQTT.

    python eventhubs.py dev | tls-async | websocket

`dev` uses the `UseDevelopmentEmulator=true` connection string (plain AMQP on 5672, no CA) and
checks every start position, partition discovery and the consumer-group refusal; `tls-async`
uses the TLS form on 5671 with `connection_verify` and the async client; `websocket` the TLS
form over `TransportType.AmqpOverWebsocket` (`wss://{host}:443/$servicebus/websocket`, with
websocket-client), for networks that only let 443 through.

Prints one `RESULT PASS` or `RESULT FAIL <reason>` line on stdout; diagnostics go to stderr.
"""

import asyncio
import datetime
import logging
import os
import threading
import time
import uuid

from azure.eventhub import EventHubConsumerClient, TransportType
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumerClient
from azure.iot.device import IoTHubDeviceClient, Message
from azure.iot.hub import IoTHubRegistryManager

from common import (
    check,
    ca_pem,
    device_connection_string,
    log,
    parse_connection_string,
    run,
    service_connection_string,
    unique_id,
)

if os.environ.get("SDK_COMPAT_DEBUG"):
    logging.basicConfig(level=logging.DEBUG)
else:
    logging.basicConfig(level=logging.WARNING)

WAIT_SECS = 20


def eventhub_connection_string(development):
    """The Event Hubs-compatible connection string, built as the portal documents it: the hub
    host as `sb://` endpoint, an IoT Hub policy, the hub name as entity."""
    cs = parse_connection_string(service_connection_string())
    host = cs["HostName"]
    out = "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={};EntityPath={}".format(
        host, cs["SharedAccessKeyName"], cs["SharedAccessKey"], host.split(".")[0]
    )
    if development:
        out += ";UseDevelopmentEmulator=true"
    return out


def new_device(websockets=False):
    rm = IoTHubRegistryManager.from_connection_string(service_connection_string())
    device_id = unique_id("eh-py")
    primary = rm.create_device_with_sas(device_id, None, None, "enabled")
    key = primary.authentication.symmetric_key.primary_key
    client = IoTHubDeviceClient.create_from_connection_string(
        device_connection_string(device_id, key),
        server_verification_cert=ca_pem(),
        websockets=websockets,
    )
    client.connect()
    return device_id, client


def telemetry(text, message_id=None):
    m = Message(text)
    if message_id:
        m.message_id = message_id
        m.content_type = "application/json"
        m.content_encoding = "utf-8"
        m.custom_properties["unit"] = "celsius"
    return m


def collect(client, device_id, count, **receive_args):
    """Runs `client.receive` on a thread until `count` events of `device_id` arrived; returns
    them as (partition id, event)."""
    got = []
    done = threading.Event()

    def on_event(context, event):
        if event is None:
            return
        sys_props = event.system_properties
        if sys_props.get(b"iothub-connection-device-id") == device_id.encode():
            got.append((context.partition_id, event))
            if len(got) >= count:
                done.set()

    t = threading.Thread(
        target=client.receive,
        kwargs=dict(on_event=on_event, max_wait_time=1, **receive_args),
        daemon=True,
    )
    t.start()
    done.wait(WAIT_SECS)
    client.close()
    t.join(10)
    return got


def consumer(cs, group="$Default", **kwargs):
    # SDK_COMPAT_DEBUG adds pyamqp's frame trace to the log.
    kwargs.setdefault("logging_enable", bool(os.environ.get("SDK_COMPAT_DEBUG")))
    return EventHubConsumerClient.from_connection_string(cs, consumer_group=group, **kwargs)


def scenario_dev():
    cs = eventhub_connection_string(True)
    log("event hub connection string:", cs)
    device_id, device = new_device()
    mid = str(uuid.uuid4())
    device.send_message(telemetry('{"temp": 21.5}', mid))
    device.send_message(telemetry("plain string"))
    # The enqueued-time check below needs "third" in a later millisecond than "plain string":
    # two sends can be acknowledged within one millisecond, and an enqueued time has no finer
    # grain (as on Azure).
    time.sleep(0.005)
    device.send_message(telemetry("third"))

    # Earliest, across all partitions.
    got = collect(consumer(cs), device_id, 3, starting_position="-1")
    check(len(got) == 3, "earliest: {} of 3 events arrived".format(len(got)))
    partition = got[0][0]
    first, second, third = [e for _, e in got]
    check(first.body_as_str() == '{"temp": 21.5}', "body {!r}".format(first.body_as_str()))
    sp = first.system_properties
    check(sp.get(b"message-id") in (mid, mid.encode()), "message id {!r}".format(sp))
    check(sp.get(b"content-type") == b"application/json", "content type {!r}".format(sp))
    check(first.properties.get(b"unit") == b"celsius", "properties {!r}".format(first.properties))
    check(sp.get(b"iothub-message-source") == b"Telemetry", "source {!r}".format(sp))
    check(isinstance(first.offset, str), "offset {!r} must be a string".format(first.offset))
    check(second.sequence_number == first.sequence_number + 1, "dense sequence numbers")
    check(second.body_as_str() == "plain string", "second body")
    check(second.message.properties is None, "no properties section for a plain message")
    check(first.enqueued_time is not None, "enqueued time")

    # Partition discovery.
    c = consumer(cs)
    ids = c.get_partition_ids()
    check(ids == ["0", "1", "2", "3"], "partition ids {!r}".format(ids))
    props = c.get_partition_properties(partition)
    log("partition properties", props)
    check(props["last_enqueued_sequence_number"] == third.sequence_number, "last seq {!r}".format(props))
    check(props["last_enqueued_offset"] == third.offset, "last offset {!r}".format(props))
    check(props["is_empty"] is False, "is_empty {!r}".format(props))
    hub = c.get_eventhub_properties()
    check(hub["partition_ids"] == ids, "eventhub properties {!r}".format(hub))
    c.close()

    # From an offset, a sequence number (inclusive or not), an enqueued time.
    got = collect(consumer(cs), device_id, 2, partition_id=partition, starting_position=first.offset)
    check([e.body_as_str() for _, e in got] == ["plain string", "third"], "after offset")
    got = collect(
        consumer(cs),
        device_id,
        2,
        partition_id=partition,
        starting_position=second.sequence_number,
        starting_position_inclusive=True,
    )
    check([e.body_as_str() for _, e in got] == ["plain string", "third"], "from sequence number")
    got = collect(
        consumer(cs),
        device_id,
        1,
        partition_id=partition,
        starting_position=third.enqueued_time - datetime.timedelta(milliseconds=1),
    )
    check(got and got[0][1].body_as_str() == "third", "after enqueued time: {!r}".format(got))

    # Latest: only what comes after the receiver attached.
    c = consumer(cs)
    got = []
    t = threading.Thread(
        target=lambda: got.extend(
            collect(c, device_id, 1, partition_id=partition, starting_position="@latest")
        ),
        daemon=True,
    )
    t.start()
    time.sleep(3)
    device.send_message(telemetry("fourth"))
    t.join(WAIT_SECS + 5)
    check([e.body_as_str() for _, e in got] == ["fourth"], "latest: {!r}".format(got))

    # An unknown consumer group is refused.
    errors = []
    bad = consumer(cs, group="no-such-group", retry_total=0)

    def on_error(context, error):
        errors.append(error)

    t = threading.Thread(
        target=bad.receive,
        kwargs=dict(on_event=lambda c, e: None, on_error=on_error, partition_id="0"),
        daemon=True,
    )
    t.start()
    deadline = time.time() + WAIT_SECS
    while not errors and time.time() < deadline:
        time.sleep(0.2)
    bad.close()
    check(errors, "no error for an unknown consumer group")
    log("consumer group error:", repr(errors[0]))
    check("could not be found" in str(errors[0]), "error {!r}".format(errors[0]))
    device.shutdown()


async def receive_async(cs, device_id, count):
    client = AsyncConsumerClient.from_connection_string(
        cs, consumer_group="$Default", connection_verify=os.environ["IOTHUB_CA_CERT"]
    )
    got = []
    done = asyncio.Event()

    async def on_event(context, event):
        if event and event.system_properties.get(b"iothub-connection-device-id") == device_id.encode():
            got.append(event)
            if len(got) >= count:
                done.set()

    async with client:
        ids = await client.get_partition_ids()
        check(len(ids) == 4, "partition ids {!r}".format(ids))
        task = asyncio.ensure_future(client.receive(on_event=on_event, starting_position="-1"))
        try:
            await asyncio.wait_for(done.wait(), WAIT_SECS)
        except asyncio.TimeoutError:
            pass
        await client.close()
        task.cancel()
    return got


def scenario_tls_async():
    cs = eventhub_connection_string(False)
    device_id, device = new_device()
    device.send_message(telemetry("over tls", str(uuid.uuid4())))
    got = asyncio.run(receive_async(cs, device_id, 1))
    check(len(got) == 1 and got[0].body_as_str() == "over tls", "async TLS receive: {!r}".format(got))
    device.shutdown()


def scenario_websocket():
    # WebSockets end to end: the device sends over MQTT on a WebSocket, the consumer reads over
    # AMQP on one.
    cs = eventhub_connection_string(False)
    device_id, device = new_device(websockets=True)
    mid = str(uuid.uuid4())
    device.send_message(telemetry('{"over": "websocket"}', mid))

    def ws_consumer():
        return consumer(
            cs,
            transport_type=TransportType.AmqpOverWebsocket,
            connection_verify=os.environ["IOTHUB_CA_CERT"],
        )

    c = ws_consumer()
    ids = c.get_partition_ids()
    check(ids == ["0", "1", "2", "3"], "partition ids over a WebSocket {!r}".format(ids))
    c.close()
    got = collect(ws_consumer(), device_id, 1, starting_position="-1")
    check(len(got) == 1, "{} of 1 events arrived over a WebSocket".format(len(got)))
    partition, event = got[0]
    check(event.body_as_str() == '{"over": "websocket"}', "body {!r}".format(event.body_as_str()))
    sp = event.system_properties
    check(sp.get(b"message-id") in (mid, mid.encode()), "message id {!r}".format(sp))
    check(sp.get(b"iothub-connection-device-id") == device_id.encode(), "device id {!r}".format(sp))
    c = ws_consumer()
    props = c.get_partition_properties(partition)
    c.close()
    check(props["last_enqueued_sequence_number"] >= event.sequence_number, "last seq {!r}".format(props))
    device.shutdown()


if __name__ == "__main__":
    run({"dev": scenario_dev, "tls-async": scenario_tls_async, "websocket": scenario_websocket})
