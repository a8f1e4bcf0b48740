#!/usr/bin/env bash
# shoal vs etcd 3.4, side by side: leader failover and write throughput.
#   bash bench/kv.sh                 # 50 failover trials, 1/64/256 clients for 10 s
#   TRIALS=10 SECS=4 bash bench/kv.sh
# Installs Debian's etcd-server and protobuf-compiler (the etcd-client crate needs
# protoc) when missing, builds shoal and the bench tool, and writes the results to
# bench/results/kv-<time>.txt (JSON lines, then markdown tables).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release -q
(cd bench/kv && cargo build --release -q)

mkdir -p bench/results
out="bench/results/kv-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "# $(date -u) · $(nproc) cores · $(uname -r) · etcd $(etcd --version | head -1)"
    bench/kv/target/release/shoal-kv-bench failover --trials "${TRIALS:-50}"
    bench/kv/target/release/shoal-kv-bench throughput --clients "${CLIENTS:-1,64,256}" --secs "${SECS:-10}"
} | tee "$out"
echo "results: $out"
