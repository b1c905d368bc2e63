#!/usr/bin/env bash
# The whole test suite on real services: installs what is missing (cached
# under ~/.cache/device-logs), starts Redis and the Tansu broker on free
# loopback ports, runs the monitoring and Helm checks, then every cargo test.
# Exits non-zero if anything failed; the last line is the test runner's summary.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

ensure_tools || exit 1
workdir=$(mktemp -d "${TMPDIR:-/tmp}/device-logs-test.XXXXXX")
start_services "$workdir" || exit 1

status=0
cargo build --locked --bins >&2 || exit 1
export DEVICE_LOGS_BIN="$PWD/target/debug/device-logs"

bash scripts/check-monitoring.sh || status=1
bash scripts/check-helm.sh || status=1

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast --profile ci || status=1
else
  cargo test --locked --no-fail-fast || status=1
fi
exit $status
