#!/usr/bin/env python3
"""Descriptor flood (issue 12): N idle TCP connections against an emulator whose RLIMIT_NOFILE
is 20,000, then the time a legitimate MQTT/TLS device needs for its CONNACK. Run by hand:

    prlimit --nofile=20000:20000 target/release/iothub-emulator --in-memory --data-dir /tmp/ff \
        --https-port 0 --amqp-port 0 --eventhubs-port 0 --http-port 18088 --mqtt-port 18883 &
    HTTPS_PORT=<the banner's HTTPS port> CA=/tmp/ff/tls/ca.pem python3 tests/bench/fd_flood.py 27000

The attackers connect from 127.0.0.2 and 127.0.0.3 (two processes, so neither needs more than
its own 20,000 descriptors, and each source address has its own ephemeral ports)."""
import base64, hashlib, hmac, json, os, socket, ssl, sys, time, urllib.parse, urllib.request, multiprocessing

HOST = "localhost"
MQTT = int(os.environ.get("MQTT_PORT", "18883"))
HTTPS = int(os.environ["HTTPS_PORT"])
CA = os.environ["CA"]
OWNER = "JKhuaqkm1MITMpoBZpWyP1QPHzRpnF7O0Le6yabQJgU="
KEY = base64.b64encode(b"k" * 32).decode()

def sas(sr, key, skn=None):
    se = int(time.time()) + 3600
    enc = urllib.parse.quote(sr, safe="")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), f"{enc}\n{se}".encode(), hashlib.sha256).digest()).decode()
    t = f"SharedAccessSignature sr={enc}&sig={urllib.parse.quote(sig, safe='')}&se={se}"
    return t + (f"&skn={skn}" if skn else "")

def create_device(did):
    ctx = ssl.create_default_context(cafile=CA)
    body = json.dumps({"deviceId": did, "authentication": {"type": "sas", "symmetricKey": {"primaryKey": KEY, "secondaryKey": KEY}}}).encode()
    req = urllib.request.Request(f"https://{HOST}:{HTTPS}/devices/{did}?api-version=2021-04-12", data=body, method="PUT",
        headers={"Authorization": sas(HOST, OWNER, "iothubowner"), "Content-Type": "application/json"})
    urllib.request.urlopen(req, context=ctx).read()

def utf8(s):
    b = s.encode(); return len(b).to_bytes(2, "big") + b

def connect_once(did):
    started = time.monotonic()
    ctx = ssl.create_default_context(cafile=CA)
    raw = socket.create_connection(("127.0.0.1", MQTT), timeout=30)
    s = ctx.wrap_socket(raw, server_hostname=HOST)
    payload = utf8("MQTT") + bytes([4, 0xC2]) + (60).to_bytes(2, "big") + utf8(did) + \
        utf8(f"{HOST}/{did}/?api-version=2021-04-12") + utf8(sas(f"{HOST}/devices/{did}", KEY))
    n, rl = len(payload), b""
    while True:
        d, n = n % 128, n // 128
        rl += bytes([d | (0x80 if n else 0)])
        if not n: break
    s.sendall(bytes([0x10]) + rl + payload)
    ack = s.recv(4)
    took = time.monotonic() - started
    s.close()
    return took, ack.hex()

def attacker(source, count, ready):
    socks = []
    for i in range(count):
        try:
            c = socket.socket()
            c.bind((source, 0))
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", MQTT))
            socks.append(c)
        except OSError as e:
            print(f"attacker {source}: stopped at {i}: {e}", flush=True)
            break
    ready.put(len(socks))
    time.sleep(3600)

if __name__ == "__main__":
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 27000
    create_device("flood-d1")
    print("baseline connects (s, connack):", [connect_once("flood-d1") for _ in range(3)], flush=True)
    q = multiprocessing.Queue()
    procs, per = [], total // 2
    for src in ("127.0.0.2", "127.0.0.3"):
        p = multiprocessing.Process(target=attacker, args=(src, per, q)); p.start(); procs.append(p)
    t0 = time.monotonic()
    opened = q.get() + q.get()
    print(f"flood: {opened} idle connections opened in {time.monotonic() - t0:.1f} s", flush=True)
    time.sleep(2)
    for i in range(5):
        try:
            print(f"legit connect {i} under the flood: %.3f s, connack %s" % connect_once("flood-d1"), flush=True)
        except Exception as e:
            print(f"legit connect {i} under the flood FAILED: {e!r}", flush=True)
        time.sleep(1)
    for p in procs: p.kill()
