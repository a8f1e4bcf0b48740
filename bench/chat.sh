#!/usr/bin/env bash
# Chat: publish → last subscriber receipt, and the maximum sustained post rate, on a
# local 3-manager cluster with fsync on.
#   bash bench/chat.sh                          # 100 subscribers, 1,000 msg/s for 60 s
#   SUBSCRIBERS=20 RATE=200 SECS=10 bash bench/chat.sh
# Writes bench/results/chat-<time>.txt (JSON lines).
set -euo pipefail
cd "$(dirname "$0")/.."
SUBSCRIBERS=${SUBSCRIBERS:-100} RATE=${RATE:-1000} SECS=${SECS:-60}

cargo build --release -q
(cd bench/chat && cargo build --release -q)

mkdir -p bench/results
out="bench/results/chat-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "# $(date -u) · $(nproc) cores · $(uname -r) · subscribers $SUBSCRIBERS, rate $RATE/s, $SECS s"
    bench/chat/target/release/shoal-chat-bench --subscribers "$SUBSCRIBERS" --rate "$RATE" --secs "$SECS"
} | tee "$out"
echo "results: $out"
