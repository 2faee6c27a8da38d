#!/usr/bin/env bash
# Runs the emulator benchmarks of issue 9 (see tests/bench/README.md):
#   1. installs Debian's mosquitto (the same-machine anchor) if it is missing,
#   2. raises the open-file limit (10,000+ TLS connections need 2 descriptors each here),
#   3. builds the emulator and the bench in release mode,
#   4. runs the scenarios and keeps a copy of the output under target/bench/.
#
# Usage: tests/bench/run.sh [--quick|--full] [scenario ...] [-- extra bench options]
#   scenarios: c2d capacity d2c d2c-e2e startup mosquitto hub twin methods durable all (default: all)
#   e.g.       tests/bench/run.sh --full c2d -- --senders 4
set -euo pipefail

cd "$(dirname "$0")/../.."

mode=--quick
scenarios=()
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --quick|--full) mode=$1 ;;
        --) shift; extra=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) scenarios+=("$1") ;;
    esac
    shift
done
[ ${#scenarios[@]} -gt 0 ] || scenarios=(all)

if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    echo "run.sh: installing mosquitto (apt-get)" >&2
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y --no-install-recommends mosquitto ||
        { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y --no-install-recommends mosquitto; }
fi

# As high as the kernel allows; the bench also lifts its soft limit to the hard one, and the
# emulator and mosquitto inherit it.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
echo "run.sh: open-file limit $(ulimit -n), $(nproc) CPUs, mosquitto: $(command -v mosquitto || echo /usr/sbin/mosquitto)" >&2

cargo build --release -p iothub-emulator -p iothub-tests --bin iothub-emulator --bin bench

mkdir -p target/bench
out="target/bench/$(date -u +%Y%m%dT%H%M%SZ)${mode}.txt"
set +e
(
    status=0
    for s in "${scenarios[@]}"; do
        target/release/bench "$s" "$mode" "${extra[@]}" || status=$?
    done
    exit "$status"
) 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
echo "run.sh: output kept in $out; JSON lines: grep '^{\"bench\"' $out" >&2
exit "$status"
