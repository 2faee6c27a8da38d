"""The seed tutorial's SimulatedDevice.py in its modern form (azure-iot-device 2.x).

The tutorial used `client.receive_message()` in a thread; azure-iot-device 2.x replaces that with
the `on_message_received` handler. The output is the tutorial's. The only emulator-specific
line is the CA: `server_verification_cert` when IOTHUB_CA_CERT names a PEM file.

    python simulated_device.py "<device connection string>"
    (or IOTHUB_DEVICE_CONNECTION_STRING in the environment)
"""

import os
import sys
import time

from azure.iot.device import IoTHubDeviceClient

RECEIVED_MESSAGES = 0

CONNECTION_STRING = (
    sys.argv[1] if len(sys.argv) > 1 else os.environ.get("IOTHUB_DEVICE_CONNECTION_STRING", "")
)


def message_handler(message):
    global RECEIVED_MESSAGES
    RECEIVED_MESSAGES += 1
    print("Message received")
    print("    Data: <<{}>>".format(message.data.decode("utf-8")))
    print("    Properties: {}".format(message.custom_properties))
    print("    Total calls received: {}".format(RECEIVED_MESSAGES), flush=True)


def iothub_client_sample_run():
    kwargs = {}
    ca_path = os.environ.get("IOTHUB_CA_CERT")
    if ca_path:
        with open(ca_path, encoding="utf-8") as f:
            kwargs["server_verification_cert"] = f.read()
    client = IoTHubDeviceClient.create_from_connection_string(CONNECTION_STRING, **kwargs)
    try:
        client.connect()
        client.on_message_received = message_handler
        print("IoTHubDeviceClient waiting for commands, press Ctrl-C to exit", flush=True)
        while True:
            time.sleep(1000)
    except KeyboardInterrupt:
        print("IoTHubDeviceClient sample stopped", flush=True)
    finally:
        client.shutdown()


if __name__ == "__main__":
    if not CONNECTION_STRING:
        sys.exit("usage: simulated_device.py <device connection string>")
    print("Starting the IoT Hub Python sample...", flush=True)
    iothub_client_sample_run()
