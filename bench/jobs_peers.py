"""The jobs benchmark's peers: the same no-op workloads on Dask distributed and Ray,
with 2 worker processes (like shoal's 2 workers), printed as JSON lines.

    python bench/jobs_peers.py dask|ray [--tasks 10000] [--jobs 1000] [--single 200]

- batch:  N no-op tasks submitted at once; tasks/s until every result is back.
- jobs:   M one-task submissions, each timed from submit to its result (p50/p99).
- single: S tasks one after another, submit -> result (p50/p99).
"""

import argparse
import json
import time


def noop(*_):
    return None


def pct(values, p):
    v = sorted(values)
    return v[round((len(v) - 1) * p)] if v else float("nan")


def emit(system, bench, **kw):
    print(json.dumps({"bench": bench, "system": system, **kw}), flush=True)


def run_dask(a):
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None)
    client = Client(cluster)
    label = f"dask {dask.__version__}"
    client.submit(noop, 0, pure=False).result()  # warm up

    t = time.perf_counter()
    client.gather(client.map(noop, range(a.tasks), pure=False))
    s = time.perf_counter() - t
    emit(label, "batch", tasks=a.tasks, secs=round(s, 3), tasks_per_s=round(a.tasks / s))

    t = time.perf_counter()
    started = {}
    futures = []
    for i in range(a.jobs):
        f = client.submit(noop, i, pure=False)
        started[f.key] = time.perf_counter()
        futures.append(f)
    lat = []
    for f in as_completed(futures):
        lat.append((time.perf_counter() - started[f.key]) * 1000)
    s = time.perf_counter() - t
    emit(label, "jobs", tasks=a.jobs, secs=round(s, 3), tasks_per_s=round(a.jobs / s),
         p50_ms=round(pct(lat, 0.5), 1), p99_ms=round(pct(lat, 0.99), 1))

    lat = []
    for i in range(a.single):
        t = time.perf_counter()
        client.submit(noop, i, pure=False).result()
        lat.append((time.perf_counter() - t) * 1000)
    emit(label, "single", tasks=a.single, p50_ms=round(pct(lat, 0.5), 2),
         p99_ms=round(pct(lat, 0.99), 2))
    client.close()
    cluster.close()


def run_ray(a):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    label = f"ray {ray.__version__}"

    @ray.remote
    def rnoop(*_):
        return None

    ray.get(rnoop.remote())  # warm up

    t = time.perf_counter()
    ray.get([rnoop.remote(i) for i in range(a.tasks)])
    s = time.perf_counter() - t
    emit(label, "batch", tasks=a.tasks, secs=round(s, 3), tasks_per_s=round(a.tasks / s))

    t = time.perf_counter()
    started = {}
    refs = []
    for i in range(a.jobs):
        r = rnoop.remote(i)
        started[r] = time.perf_counter()
        refs.append(r)
    lat = []
    pending = refs
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        now = time.perf_counter()
        for r in done:
            lat.append((now - started[r]) * 1000)
    s = time.perf_counter() - t
    emit(label, "jobs", tasks=a.jobs, secs=round(s, 3), tasks_per_s=round(a.jobs / s),
         p50_ms=round(pct(lat, 0.5), 1), p99_ms=round(pct(lat, 0.99), 1))

    lat = []
    for i in range(a.single):
        t = time.perf_counter()
        ray.get(rnoop.remote(i))
        lat.append((time.perf_counter() - t) * 1000)
    emit(label, "single", tasks=a.single, p50_ms=round(pct(lat, 0.5), 2),
         p99_ms=round(pct(lat, 0.99), 2))
    ray.shutdown()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["dask", "ray"])
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--single", type=int, default=200)
    a = p.parse_args()
    (run_dask if a.system == "dask" else run_ray)(a)


if __name__ == "__main__":
    main()
