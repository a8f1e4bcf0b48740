#!/usr/bin/env bash
# Jobs: shoal vs Dask distributed and Ray, side by side, no-op tasks, 2 worker processes.
#   bash bench/jobs.sh       # 10,000-task batch, 1,000 jobs, 200 singles, 10 re-dispatch trials
#   TASKS=2000 JOBS=200 SINGLE=50 REDISPATCH=3 bash bench/jobs.sh
# Creates a virtualenv (bench/.venv) with dask[distributed] and ray from PyPI, builds
# shoal and the bench tool, and writes bench/results/jobs-<time>.txt (JSON lines).
set -euo pipefail
cd "$(dirname "$0")/.."
TASKS=${TASKS:-10000} JOBS=${JOBS:-1000} SINGLE=${SINGLE:-200} REDISPATCH=${REDISPATCH:-10}

if [ ! -x bench/.venv/bin/python ]; then
    python3 -m venv bench/.venv
fi
bench/.venv/bin/pip install -q "dask[distributed]" ray

cargo build --release -q
(cd bench/jobs && cargo build --release -q)

mkdir -p bench/results
out="bench/results/jobs-$(date -u +%Y%m%dT%H%M%SZ).txt"
{
    echo "# $(date -u) · $(nproc) cores · $(uname -r) · tasks $TASKS, jobs $JOBS, single $SINGLE"
    bench/jobs/target/release/shoal-jobs-bench --tasks "$TASKS" --jobs "$JOBS" --single "$SINGLE" \
        --redispatch "$REDISPATCH"
    bench/.venv/bin/python bench/jobs_peers.py dask --tasks "$TASKS" --jobs "$JOBS" --single "$SINGLE"
    bench/.venv/bin/python bench/jobs_peers.py ray --tasks "$TASKS" --jobs "$JOBS" --single "$SINGLE"
} | tee "$out"
echo "results: $out"
