#!/usr/bin/env bash
# Runs the worker on this machine with the embedded default configuration:
# installs Redis and the Tansu broker if missing (cached under
# ~/.cache/device-logs), starts both on free loopback ports, creates the
# topics, and runs `device-logs run` until Ctrl-C. Prints the commands to
# send a request and an upload and to read the status.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/test-env.sh

ensure_tools
workdir=$(mktemp -d "${TMPDIR:-/tmp}/device-logs-local.XXXXXX")
start_services "$workdir"
cargo build --locked --bins >&2
bin="$PWD/target/debug/device-logs"
export DEVICE_LOGS__KAFKA__BROKERS="$DEVICE_LOGS_TEST_BROKERS"
export DEVICE_LOGS__REDIS__URL="$DEVICE_LOGS_TEST_REDIS"
export DEVICE_LOGS__KAFKA__PARTITIONS=3
export DEVICE_LOGS__LOG__FORMAT="${DEVICE_LOGS__LOG__FORMAT:-text}"
export DEVICE_LOGS__HTTP__LISTEN="${DEVICE_LOGS__HTTP__LISTEN:-127.0.0.1:9464}"
"$bin" create-topics
ids="--environment $(python3 -c 'import uuid;print(uuid.uuid4())') --user $(python3 -c 'import uuid;print(uuid.uuid4())') --device $(python3 -c 'import uuid;print(uuid.uuid4())')"
cat >&2 <<MSG

device-logs is starting (Ctrl-C stops it). In another shell:
  export DEVICE_LOGS__KAFKA__BROKERS=$DEVICE_LOGS__KAFKA__BROKERS DEVICE_LOGS__REDIS__URL=$DEVICE_LOGS__REDIS__URL
  $bin request $ids
  $bin status  $ids
  $bin upload  $ids
  $bin status  $ids
  curl -s http://$DEVICE_LOGS__HTTP__LISTEN/metrics | grep device_logs_transitions_total

MSG
"$bin" run
