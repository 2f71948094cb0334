#!/usr/bin/env bash
# Agent benchmarks (root): policyd's memory on generated medium and large clusters, and its
# event-to-kernel latency (benches/agent_latency.rs). Each policyd runs with a `dir:` source on
# `policyc generate` output and applies its node's ruleset in a throwaway network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-agent.sh: needs root (network namespaces, nft)" >&2; exit 1; }
cargo build --release --quiet --bin policyd --bin policyc

work=$(mktemp -d)
ns="npmem$$"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ready() { # port
  exec 3<>"/dev/tcp/127.0.0.1/$1" 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.0\r\n\r\n' >&3
  head -1 <&3 | grep -q ' 200 '
}

port=19808
for size in medium large; do
  mkdir -p "$work/$size"
  ./target/release/policyc generate --size "$size" > "$work/$size/cluster.yaml"
  ip netns add "$ns"
  start=$(date +%s.%N)
  ./target/release/policyd --node-name node-0 --source "dir:$work/$size" --netns "$ns" \
    --listen "127.0.0.1:$port" --poll-ms 2000 --log-format json 2>"$work/$size.log" &
  pid=$!
  until ready "$port"; do sleep 0.2; kill -0 "$pid" || { cat "$work/$size.log"; exit 1; }; done
  up=$(echo "$(date +%s.%N) - $start" | bc)
  sleep 1
  hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "agent $size: ready in ${up}s (read, parse, compile, load); resident now $((rss / 1024)) MiB, peak $((hwm / 1024)) MiB"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  ip netns del "$ns"
  port=$((port + 1))
done
cargo bench --quiet --bench agent_latency 2>/dev/null | grep pods
