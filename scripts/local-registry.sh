# Sourced by benchmarks: a local registry (Debian's docker-registry) on a free loopback port.
# Needs $work (a scratch directory). `fresh_registry` (re)starts it with empty storage in
# $work/store; `registry_cpu` prints its CPU seconds so far; `stop_registry` stops it.
[ -x /usr/bin/docker-registry ] || { echo "no docker-registry (scripts/setup.sh)" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=""
stop_registry() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
fresh_registry() {
    stop_registry
    rm -rf "$work/store"
    cat >"$work/registry.yml" <<CONF
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/store}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$port}
CONF
    docker-registry serve "$work/registry.yml" >>"$work/registry.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/v2/" >/dev/null; do sleep 0.05; done
}
registry_cpu() {
    awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$pid/stat"
}
