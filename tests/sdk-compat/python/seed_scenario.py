"""The seed tutorial, end to end: the modern Python SimulatedDevice (simulated_device.py, on
azure-iot-device over MQTT) receives the message sent by the project's own
`cargo run -p iothub-service --example send_cloud_to_device_message`, which then prints the
message's feedback. Checks both programs' output.

Environment: as for scenarios.py, plus REPO_ROOT (the workspace, for cargo).
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

from azure.iot.hub import IoTHubRegistryManager

from common import (
    ScenarioFailure,
    check,
    device_connection_string,
    flush_feedback,
    log,
    run,
    service_connection_string,
    unique_id,
)

HERE = os.path.dirname(os.path.abspath(__file__))
WAITING_LINE = "IoTHubDeviceClient waiting for commands"


class Output:
    """Collects a child's stdout lines on a thread."""

    def __init__(self, proc):
        self.lines = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_for(self, predicate, timeout):
        deadline = time.time() + timeout
        with self.cond:
            while not predicate(self.text()):
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def text(self):
        return "\n".join(self.lines)


def scenario_seed():
    rm = IoTHubRegistryManager.from_connection_string(service_connection_string())
    device_id = unique_id("seed-device")
    device = rm.create_device_with_sas(device_id, None, None, "enabled")
    key = device.authentication.symmetric_key.primary_key

    env = dict(os.environ)
    device_proc = subprocess.Popen(
        [sys.executable, "-u", os.path.join(HERE, "simulated_device.py"),
         device_connection_string(device_id, key)],
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env=env,
    )
    device_out = Output(device_proc)
    stop_flushing = threading.Event()

    def flusher():  # the suite uses a zero feedback window; this is only a backup
        while not stop_flushing.wait(1.0):
            flush_feedback()

    try:
        if not device_out.wait_for(lambda t: WAITING_LINE in t, 30):
            raise ScenarioFailure(
                "simulated_device.py did not start listening within 30 s; it printed: {!r}".format(
                    device_out.text()))

        threading.Thread(target=flusher, daemon=True).start()
        cmd = [
            "cargo", "run", "--quiet", "-p", "iothub-service",
            "--example", "send_cloud_to_device_message", "--",
            service_connection_string(), device_id,
        ]
        log("running", " ".join(cmd[:8]), "<service cs>", device_id)
        try:
            sender = subprocess.run(
                cmd, cwd=os.environ["REPO_ROOT"], env=env, capture_output=True, text=True,
                timeout=90,
            )
        except subprocess.TimeoutExpired as e:
            raise ScenarioFailure(
                "send_cloud_to_device_message did not finish within 90 s; stdout: {!r}".format(
                    e.stdout))
        log("sender exit", sender.returncode)
        log("sender stdout:\n" + sender.stdout)
        log("sender stderr:\n" + sender.stderr[-3000:])

        got_message = device_out.wait_for(lambda t: "Total calls received: 1" in t, 15)
        log("device stdout:\n" + device_out.text())
        problems = []
        if sender.returncode != 0:
            tail = (sender.stderr.strip().splitlines() or [""])[-1]
            problems.append(
                "send_cloud_to_device_message exited {} ({})".format(sender.returncode, tail))
        if not re.search(r"message_0", sender.stdout) or "Success" not in sender.stdout:
            problems.append("the sender printed no Success feedback for message_0")
        text = device_out.text()
        if not got_message:
            problems.append("the device printed no received message")
        else:
            if not re.search(r'Data: <<\{"service client sent a message": ?1[2-6](\.\d+)?\}>>', text):
                problems.append("the device did not print the tutorial's body")
            if "Properties: {'Property': 'PropMsg_0'}" not in text:
                problems.append("the device did not print {'Property': 'PropMsg_0'}")
        check(not problems, "; ".join(problems))
    finally:
        stop_flushing.set()
        if device_proc.poll() is None:
            device_proc.send_signal(signal.SIGINT)
            try:
                device_proc.wait(10)
            except subprocess.TimeoutExpired:
                device_proc.kill()
        rm.delete_device(device_id)


if __name__ == "__main__":
    # `timeout` sends SIGTERM: unwind through the finally blocks (stop the device app).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    run({"seed": scenario_seed})
