# Shared by scripts/test.sh and scripts/local.sh: installs what the tests and
# the local run need (idempotently, cached outside the repository) and starts
# a private Redis and Kafka-protocol broker on free loopback ports.
#
# Source it; then call `ensure_tools` and `start_services DIR`. It exports
# DEVICE_LOGS_TEST_REDIS and DEVICE_LOGS_TEST_BROKERS and registers
# `stop_services` to run on exit. It never touches a Redis it did not start.

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/device-logs"
TANSU_VERSION=0.6.0
TANSU="$CACHE/tansu-$TANSU_VERSION/bin/tansu"
SERVICE_PIDS=()

log() { printf '[test-env] %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine's package lists can be empty: update first.
  apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2
}

ensure_tools() {
  mkdir -p "$CACHE"
  apt_install redis-server redis-tools prometheus python3-yaml curl openssl
  if [ ! -x "$TANSU" ]; then
    log "building Tansu $TANSU_VERSION (once, about 12 minutes; cached in $CACHE)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features libsql \
      --root "$CACHE/tansu-$TANSU_VERSION" >"$CACHE/tansu-build.log" 2>&1 \
      || { tail -30 "$CACHE/tansu-build.log" >&2; return 1; }
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() { # port, name, seconds
  local deadline=$((SECONDS + $3))
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1).close()" 2>/dev/null; do
    [ $SECONDS -ge $deadline ] && { log "$2 did not start on port $1"; return 1; }
    sleep 0.2
  done
}

stop_services() {
  for pid in "${SERVICE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${SERVICE_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  SERVICE_PIDS=()
}

start_services() { # work dir
  local dir="$1"
  mkdir -p "$dir"
  trap stop_services EXIT
  local redis_port broker_port
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" &
  SERVICE_PIDS+=($!)
  broker_port=$(free_port)
  # Tansu takes the sqlite path relative to its working directory. The
  # sqlite engine (not memory://) resumes consumers mid-batch correctly.
  (cd "$dir" && exec "$TANSU" broker \
    --listener-url "tcp://127.0.0.1:$broker_port" \
    --advertised-listener-url "tcp://127.0.0.1:$broker_port" \
    --storage-engine "sqlite://tansu.db" >"$dir/tansu.log" 2>&1) &
  SERVICE_PIDS+=($!)
  wait_for_port "$redis_port" redis 20 && wait_for_port "$broker_port" tansu 60 || return 1
  export DEVICE_LOGS_TEST_REDIS="redis://127.0.0.1:$redis_port"
  export DEVICE_LOGS_TEST_BROKERS="127.0.0.1:$broker_port"
  export DEVICE_LOGS_TEST_WORKDIR="$dir"
  log "redis on $DEVICE_LOGS_TEST_REDIS, broker on $DEVICE_LOGS_TEST_BROKERS (logs in $dir)"
}
