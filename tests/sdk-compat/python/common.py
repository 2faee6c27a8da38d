"""Helpers shared by the Python scenarios of the SDK compatibility suite.

Only the official SDKs talk to the hub's Azure-shaped endpoints. The helpers here do the two
things the SDKs cannot: read feedback over HTTPS as raw JSON (the SDK's public method returns
None) and call the emulator's test-control API (`/_emulator/...`), both through `requests`,
which trusts the emulator's CA through `REQUESTS_CA_BUNDLE` like the SDK's own REST calls.

Environment (set by run.sh):
  IOTHUB_CONNECTION_STRING  the iothubowner connection string the emulator printed
  IOTHUB_CA_CERT            path of the emulator's CA (PEM), for `server_verification_cert`
  REQUESTS_CA_BUNDLE        the same CA, for the registry and feedback REST calls
  SSL_CERT_FILE             the same CA, for uamqp (C2D send over AMQP)
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import traceback
import urllib.parse
import uuid

import requests

# A custom property value with spaces and every character that has a meaning in a URL query or
# an MQTT property bag.
TRICKY_VALUE = "a value with spaces & = / ? and more"


class ScenarioFailure(Exception):
    """The scenario's reason for failing, printed on the RESULT line."""


def log(*args):
    """Diagnostics go to stderr (the scenario's log file); only RESULT lines go to stdout."""
    stamp = time.strftime("%H:%M:%S", time.gmtime()) + "{:.3f}Z".format(time.time() % 1)[1:]
    print(stamp, *args, file=sys.stderr, flush=True)


def check(condition, reason):
    if not condition:
        raise ScenarioFailure(reason)


def service_connection_string():
    return os.environ["IOTHUB_CONNECTION_STRING"]


def parse_connection_string(cs):
    parts = {}
    for item in cs.split(";"):
        if item:
            key, _, value = item.partition("=")
            parts[key] = value
    return parts


def hostname():
    return parse_connection_string(service_connection_string())["HostName"]


def ca_pem():
    with open(os.environ["IOTHUB_CA_CERT"], encoding="utf-8") as f:
        return f.read()


def unique_id(prefix):
    return "{}-{}".format(prefix, uuid.uuid4().hex[:10])


def device_connection_string(device_id, key):
    return "HostName={};DeviceId={};SharedAccessKey={}".format(hostname(), device_id, key)


def service_sas_token(ttl_secs=3600):
    """An iothubowner SAS token (iothub-protocol.md 7.1), for the control API."""
    cs = parse_connection_string(service_connection_string())
    sr = urllib.parse.quote(cs["HostName"], safe="")
    se = int(time.time()) + ttl_secs
    to_sign = "{}\n{}".format(sr, se).encode("utf-8")
    sig = base64.b64encode(
        hmac.new(base64.b64decode(cs["SharedAccessKey"]), to_sign, hashlib.sha256).digest()
    ).decode("ascii")
    return "SharedAccessSignature sr={}&sig={}&se={}&skn={}".format(
        sr, urllib.parse.quote(sig, safe=""), se, cs["SharedAccessKeyName"]
    )


def control(method, path, **params):
    """Calls the emulator's test-control API; returns the response (any status)."""
    url = "https://{}/_emulator/{}".format(hostname(), path)
    r = requests.request(
        method,
        url,
        params=params,
        headers={"Authorization": service_sas_token()},
        timeout=10,
    )
    log("control {} {} -> {} {}".format(method, path, r.status_code, r.text[:200]))
    return r


def flush_feedback():
    """Best effort: the suite runs the emulator with a zero feedback window anyway."""
    try:
        control("POST", "feedback/flush")
    except requests.RequestException as e:
        log("feedback flush failed (ignored): {!r}".format(e))


def wait_for_feedback_https(runtime_manager, predicate, timeout_secs=20):
    """Reads feedback batches over HTTPS (GET /messages/serviceBound/feedback through the SDK's
    generated operation, raw=True) and completes each one, until a record matches `predicate`.
    Returns (record, every record seen)."""
    ops = runtime_manager.protocol.cloud_to_device_messages
    deadline = time.time() + timeout_secs
    seen = []
    while time.time() < deadline:
        flush_feedback()
        raw = ops.receive_feedback_notification(raw=True)
        resp = raw.response
        log(
            "GET feedback -> {} ETag={!r} body={}".format(
                resp.status_code, resp.headers.get("ETag"), resp.text[:500]
            )
        )
        if resp.status_code == 204:
            time.sleep(0.5)
            continue
        check(resp.status_code == 200, "feedback GET answered {}".format(resp.status_code))
        etag = resp.headers.get("ETag")
        check(etag, "feedback batch without an ETag lock token: {}".format(dict(resp.headers)))
        lock = etag.strip('"')
        try:
            records = json.loads(resp.text)
        except ValueError as e:
            raise ScenarioFailure("feedback body is not JSON ({}): {!r}".format(e, resp.text[:300]))
        check(isinstance(records, list), "feedback body is not a JSON array: {!r}".format(records))
        seen.extend(records)
        done = ops.complete_feedback_notification(lock, raw=True)
        log("DELETE feedback/{} -> {}".format(lock, done.response.status_code))
        for record in records:
            if predicate(record):
                return record, seen
    raise ScenarioFailure(
        "no matching feedback record over HTTPS within {}s; records seen: {}".format(
            timeout_secs, json.dumps(seen)
        )
    )


def run(scenarios):
    """Runs the scenario named on the command line and prints one RESULT line."""
    if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
        print("usage: {} {{{}}}".format(sys.argv[0], ",".join(scenarios)), file=sys.stderr)
        sys.exit(2)
    name = sys.argv[1]
    try:
        scenarios[name]()
        line, code = "RESULT PASS", 0
    except ScenarioFailure as e:
        line, code = "RESULT FAIL {}".format(e), 1
    except Exception as e:  # an SDK error: report its type and text
        log(traceback.format_exc())
        line, code = "RESULT FAIL unexpected {}: {}".format(type(e).__name__, e), 1
    print(" ".join(line.split("\n")), flush=True)
    sys.stderr.flush()
    # An SDK thread stuck in a call must not keep the process alive after the verdict.
    os._exit(code)
