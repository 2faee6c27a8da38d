#!/usr/bin/env bash
# The official Azure IoT SDKs (Python azure-iot-device / azure-iot-hub, Node azure-iot-device-* /
# azure-iothub), unchanged, against the release emulator on the standard ports.
#
#   tests/sdk-compat/run.sh            # everything
#   SDK_COMPAT_ONLY='node-c2d' tests/sdk-compat/run.sh    # scenarios whose name matches a regex
#   SDK_COMPAT_DEBUG=1 ...             # SDK debug logs (wire traces) and a debug emulator log
#
# What it does:
#   1. installs the SDKs from the lock files: a venv in .work/venv from requirements.txt (pip
#      --no-deps, every package pinned), node_modules from package-lock.json (npm ci); each is
#      reused while its lock file (and the interpreter version) is unchanged;
#   2. builds the release emulator (and the seed service example);
#   3. starts it on 443/8883/5671 (+ plain 8088) with a fresh data dir, --virtual-clock and a
#      zero feedback window, and waits for readiness (`iothub-emulator healthcheck`);
#   4. trusts its CA only through the SDKs' own mechanisms: server_verification_cert and
#      setOptions({ ca }) in the scenarios, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, NODE_EXTRA_CA_CERTS
#      in their environment (never the system store);
#   5. runs each scenario in its own process with a timeout, printing PASS/FAIL with a reason
#      (and the tail of its log, in .work/logs/, on failure), stops the emulator whatever
#      happens, and ends with one line `N passed, M failed`; the exit status is nonzero on any
#      failure.
#
# The SDKs cannot use other ports (official-sdks.md 3), so binding 443 needs root or a lowered
# net.ipv4.ip_unprivileged_port_start. Without either the suite prints a SKIP line and exits 0
# (CI runs as root). SDK_COMPAT_SKIP=1 skips it on purpose.
set -uo pipefail

# The suite needs the standard ports, so two checkouts on one machine (or two runs) cannot
# overlap: the second waits here until the first is done.
exec 9>"${TMPDIR:-/tmp}/iothub-emulator-sdk-compat.lock"
flock 9

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$HERE/.work
LOGS=$WORK/logs
VENV=$WORK/venv
DATA=$WORK/data
EMU=$ROOT/target/release/iothub-emulator
HOSTNAME_=localhost
PORTS=(443 8883 5671 8088)

SCENARIO_TIMEOUT=${SDK_COMPAT_SCENARIO_TIMEOUT:-60}
SEED_TIMEOUT=${SDK_COMPAT_SEED_TIMEOUT:-150}
BUDGET=${SDK_COMPAT_BUDGET_SECS:-360} # for all scenarios together
DEFAULT_TTL_SECS=300                  # the hub's default C2D TTL in this run (node-expired)
ONLY=${SDK_COMPAT_ONLY:-}
DEBUG_=${SDK_COMPAT_DEBUG:-}

# name | kind | timeout | command (relative to tests/sdk-compat). Order matters: node-expired
# moves the virtual clock, so it runs last.
SCENARIOS=(
  "py-registry|py|$SCENARIO_TIMEOUT|python/scenarios.py registry"
  "py-c2d-mqtt|py|$SCENARIO_TIMEOUT|python/scenarios.py c2d-mqtt"
  "py-c2d-mqtt-ws|py|$SCENARIO_TIMEOUT|python/scenarios.py c2d-mqtt-ws"
  "py-wrong-key|py|$SCENARIO_TIMEOUT|python/scenarios.py wrong-key"
  "seed-tutorial|py|$SEED_TIMEOUT|python/seed_scenario.py seed"
  "node-registry|node|$SCENARIO_TIMEOUT|node/scenarios.js registry"
  "node-c2d-mqtt|node|$SCENARIO_TIMEOUT|node/scenarios.js c2d-mqtt"
  "node-c2d-mqtt-ws|node|$SCENARIO_TIMEOUT|node/scenarios.js c2d-mqtt-ws"
  "node-c2d-amqp|node|$SCENARIO_TIMEOUT|node/scenarios.js c2d-amqp"
  "node-c2d-amqp-ws|node|$SCENARIO_TIMEOUT|node/scenarios.js c2d-amqp-ws"
  "node-c2d-http|node|$SCENARIO_TIMEOUT|node/scenarios.js c2d-http"
  "node-abandon-reject-amqp|node|$SCENARIO_TIMEOUT|node/scenarios.js abandon-reject-amqp"
  "node-abandon-reject-http|node|$SCENARIO_TIMEOUT|node/scenarios.js abandon-reject-http"
  "node-wrong-key|node|$SCENARIO_TIMEOUT|node/scenarios.js wrong-key"
  "node-queue-full|node|$SCENARIO_TIMEOUT|node/scenarios.js queue-full"
)
# Each feature lists its own scenarios in scenarios.d/<feature>.list (one
# `name|kind|timeout|command` per line, `-` for the default timeout; `#` comments), so features
# land without touching this file. A list may end with `budget=N`: N more seconds for the suite.
for list in "$HERE"/scenarios.d/*.list; do
  [ -f "$list" ] || continue
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      '' | '#'*) continue ;;
      budget=*) BUDGET=$((BUDGET + ${line#budget=})); continue ;;
    esac
    IFS='|' read -r l_name l_kind l_timeout l_cmd <<<"$line"
    [ "$l_timeout" = "-" ] && l_timeout=$SCENARIO_TIMEOUT
    SCENARIOS+=("$l_name|$l_kind|$l_timeout|$l_cmd")
  done <"$list"
done
# node-expired moves the virtual clock, so it runs last.
SCENARIOS+=("node-expired|node|$SCENARIO_TIMEOUT|node/scenarios.js expired")

PASSED=0
FAILED=0
EMU_PID=

say() { printf '%s\n' "$*"; }
note() { printf 'sdk-compat: %s\n' "$*"; }

selected() {
  local name=$1
  [ -z "$ONLY" ] || [[ $name =~ $ONLY ]]
}

count_selected() {
  local n=0 entry
  for entry in "${SCENARIOS[@]}"; do
    selected "${entry%%|*}" && n=$((n + 1))
  done
  echo "$n"
}

# Prints the last lines of a log, indented, so a CI log shows why without opening files.
show_tail() {
  local file=$1 lines=${2:-25}
  [ -f "$file" ] || return 0
  tail -n "$lines" "$file" | cut -c1-400 | sed 's/^/    | /'
  say "    (full log: ${file#"$ROOT"/})"
}

stop_emulator() {
  if [ -n "$EMU_PID" ] && kill -0 "$EMU_PID" 2>/dev/null; then
    kill -TERM "$EMU_PID" 2>/dev/null
    local _
    for _ in $(seq 1 50); do
      kill -0 "$EMU_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$EMU_PID" 2>/dev/null
    wait "$EMU_PID" 2>/dev/null
  fi
  EMU_PID=
}
trap stop_emulator EXIT
trap 'stop_emulator; exit 130' INT TERM

finish() {
  stop_emulator
  say "$PASSED passed, $FAILED failed"
  [ "$FAILED" -eq 0 ]
  exit
}

# Every selected scenario fails with the same reason (setup went wrong); then the summary.
fail_all() {
  local reason=$1 entry name
  for entry in "${SCENARIOS[@]}"; do
    name=${entry%%|*}
    selected "$name" || continue
    say "FAIL $name: not run: $reason"
    FAILED=$((FAILED + 1))
  done
  finish
}

# --- 0. can this machine run it? ---------------------------------------------------------------

if [ -n "${SDK_COMPAT_SKIP:-}" ]; then
  say "SKIP sdk-compat: SDK_COMPAT_SKIP is set"
  say "0 passed, 0 failed, $(count_selected) skipped"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  unpriv=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
  if [ "$unpriv" -gt 443 ]; then
    say "SKIP sdk-compat: the official SDKs only reach HTTPS and WebSockets on port 443, which a non-root user cannot bind here; run as root (as CI does) or 'sudo sysctl net.ipv4.ip_unprivileged_port_start=443'"
    say "0 passed, 0 failed, $(count_selected) skipped"
    exit 0
  fi
fi

mkdir -p "$LOGS"
rm -f "$LOGS"/*.log

for tool in python3 node npm cargo timeout; do
  command -v "$tool" >/dev/null 2>&1 || fail_all "'$tool' is not installed"
done

# --- 1. the SDKs, from the lock files ----------------------------------------------------------

install_python() {
  local stamp
  stamp=$({ cat "$HERE/requirements.txt"; python3 --version; } | sha256sum | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.lock-stamp" 2>/dev/null)" = "$stamp" ]; then
    note "python venv up to date (.work/venv)"
    return 0
  fi
  note "installing the Python SDKs into .work/venv from requirements.txt"
  rm -rf "$VENV"
  python3 -m venv "$VENV" &&
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      -r "$HERE/requirements.txt" &&
    "$VENV/bin/pip" check --disable-pip-version-check &&
    echo "$stamp" >"$VENV/.lock-stamp"
}

install_node() {
  local stamp
  stamp=$({ cat "$HERE/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$HERE/node_modules/.lock-stamp" 2>/dev/null)" = "$stamp" ]; then
    note "node_modules up to date"
    return 0
  fi
  note "installing the Node SDKs from package-lock.json (npm ci)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) &&
    echo "$stamp" >"$HERE/node_modules/.lock-stamp"
}

install_python >"$LOGS/install-python.log" 2>&1 || {
  show_tail "$LOGS/install-python.log"
  fail_all "the Python SDKs did not install (.work/logs/install-python.log)"
}
cat "$LOGS/install-python.log"
install_node >"$LOGS/install-node.log" 2>&1 || {
  show_tail "$LOGS/install-node.log"
  fail_all "the Node SDKs did not install (.work/logs/install-node.log)"
}
cat "$LOGS/install-node.log"

# --- 2. build ----------------------------------------------------------------------------------

note "building the release emulator"
(cd "$ROOT" && cargo build --release -p iothub-emulator) >"$LOGS/build.log" 2>&1 || {
  show_tail "$LOGS/build.log"
  fail_all "cargo build --release -p iothub-emulator failed"
}
# The seed scenario uses `cargo run`; build it first so its time is not the scenario's.
SEED_BUILD_ERROR=
if selected seed-tutorial; then
  note "building the seed service example"
  (cd "$ROOT" && cargo build -p iothub-service --example send_cloud_to_device_message) \
    >"$LOGS/build-seed.log" 2>&1 ||
    SEED_BUILD_ERROR="cargo build -p iothub-service --example send_cloud_to_device_message failed: $(grep -m1 '^error' "$LOGS/build-seed.log")"
fi

# --- 3. start the emulator ---------------------------------------------------------------------

for port in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail_all "port $port is already in use (another emulator running?)"
  fi
done

rm -rf "$DATA"
mkdir -p "$DATA"
cat >"$WORK/emulator.toml" <<EOF
# Written by tests/sdk-compat/run.sh
[hub]
feedback_window_ms = 0
default_ttl_secs = $DEFAULT_TTL_SECS
EOF

EMU_LOG_LEVEL=info
[ -n "$DEBUG_" ] && EMU_LOG_LEVEL=debug
note "starting the emulator (log: .work/logs/emulator.log)"
(
  # Flags given here win, but an IOTHUB_EMULATOR_* variable in the caller's shell could still add
  # a SAN, a certificate or a config; start from none of them.
  for v in $(compgen -e | grep '^IOTHUB_EMULATOR_'); do unset "$v"; done
  exec "$EMU" --host 127.0.0.1 --hostname "$HOSTNAME_" \
    --https-port 443 --mqtt-port 8883 --amqp-port 5671 --http-port 8088 \
    --data-dir "$DATA" --config "$WORK/emulator.toml" --virtual-clock --log-level "$EMU_LOG_LEVEL"
) >"$LOGS/emulator.log" 2>&1 &
EMU_PID=$!

ready=
for _ in $(seq 1 60); do
  if ! kill -0 "$EMU_PID" 2>/dev/null; then
    show_tail "$LOGS/emulator.log"
    EMU_PID=
    fail_all "the emulator exited during start-up"
  fi
  if "$EMU" healthcheck --host 127.0.0.1 --http-port 8088 >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.5
done
if [ -z "$ready" ]; then
  show_tail "$LOGS/emulator.log"
  fail_all "the emulator was not ready within 30 s (GET http://127.0.0.1:8088/ready)"
fi

# The service connection string from the start-up banner, the CA path from `iothub-emulator env`.
SERVICE_CS=$(grep -m1 -o 'HostName=[^ ]*;SharedAccessKeyName=iothubowner;SharedAccessKey=[^ ]*' "$LOGS/emulator.log")
CA=$("$EMU" env --data-dir "$DATA" --hostname "$HOSTNAME_" 2>/dev/null |
  sed -n "s/^export IOTHUB_CA_CERT='\(.*\)'\$/\1/p")
[ -n "$CA" ] || CA=$DATA/tls/ca.pem
[ -n "$SERVICE_CS" ] || fail_all "no iothubowner connection string in the emulator's banner"
[ -f "$CA" ] || fail_all "no CA certificate at $CA"
note "emulator ready (pid $EMU_PID); CA $CA"

# --- 4. scenarios ------------------------------------------------------------------------------

NODE_DEBUG_NS=
PY_DEBUG=
if [ -n "$DEBUG_" ]; then
  NODE_DEBUG_NS='azure*,rhea*,mqttjs*'
  PY_DEBUG=1
fi

run_scenario() {
  local name=$1 kind=$2 limit=$3 cmd=$4 log rc result started
  log=$LOGS/$name.log
  started=$SECONDS
  # shellcheck disable=SC2086 # cmd is "script args"
  case $kind in
    py)
      (cd "$HERE" && timeout --kill-after=5 "$limit" env \
        IOTHUB_CONNECTION_STRING="$SERVICE_CS" IOTHUB_CA_CERT="$CA" \
        REQUESTS_CA_BUNDLE="$CA" SSL_CERT_FILE="$CA" \
        REPO_ROOT="$ROOT" SDK_COMPAT_DEBUG="$PY_DEBUG" PYTHONDONTWRITEBYTECODE=1 \
        "$VENV/bin/python" -u $cmd) >"$log" 2>&1 </dev/null
      ;;
    node)
      (cd "$HERE" && timeout --kill-after=5 "$limit" env \
        IOTHUB_CONNECTION_STRING="$SERVICE_CS" IOTHUB_CA_CERT="$CA" \
        NODE_EXTRA_CA_CERTS="$CA" SDK_COMPAT_DEFAULT_TTL_SECS="$DEFAULT_TTL_SECS" \
        DEBUG="$NODE_DEBUG_NS" \
        node $cmd) >"$log" 2>&1 </dev/null
      ;;
  esac
  rc=$?
  result=$(grep -a '^RESULT ' "$log" | tail -n 1)
  case $result in
    "RESULT PASS")
      say "PASS $name ($((SECONDS - started)) s)"
      PASSED=$((PASSED + 1))
      return
      ;;
    "RESULT FAIL "*)
      say "FAIL $name: ${result#RESULT FAIL }"
      ;;
    *)
      if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        say "FAIL $name: timed out after $limit s"
      else
        say "FAIL $name: exited with status $rc and no RESULT line"
      fi
      ;;
  esac
  FAILED=$((FAILED + 1))
  show_tail "$log"
  if ! kill -0 "$EMU_PID" 2>/dev/null; then
    say "    the emulator is no longer running; its log ends with:"
    show_tail "$LOGS/emulator.log" 15
  fi
}

phase_start=$SECONDS
for entry in "${SCENARIOS[@]}"; do
  IFS='|' read -r name kind limit cmd <<<"$entry"
  selected "$name" || continue
  if [ "$name" = seed-tutorial ] && [ -n "$SEED_BUILD_ERROR" ]; then
    say "FAIL $name: $SEED_BUILD_ERROR"
    FAILED=$((FAILED + 1))
    continue
  fi
  if ! kill -0 "$EMU_PID" 2>/dev/null; then
    say "FAIL $name: not run: the emulator is no longer running"
    FAILED=$((FAILED + 1))
    continue
  fi
  if [ $((SECONDS - phase_start)) -ge "$BUDGET" ]; then
    say "FAIL $name: not run: the scenarios' time budget ($BUDGET s) is used up"
    FAILED=$((FAILED + 1))
    continue
  fi
  run_scenario "$name" "$kind" "$limit" "$cmd"
done

finish
