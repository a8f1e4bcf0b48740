#!/usr/bin/env python3
"""Failure-detection benchmark: shoal and Serf side by side, in one run.

What it measures (see bench/README.md):

  detect     N real processes per system on loopback (profile `local` for both); a random
             non-seed member is killed with SIGKILL; the latency is the time from the kill
             to the moment the LAST survivor declared it failed, taken from each survivor's
             own timestamp (shoal: the NodeFailed event's ts_unix_ms on /v1/events; Serf: a
             member-failed event handler that prints `date +%s.%N`). The victim is restarted
             and the cluster re-converges before the next trial. Trials alternate between
             the systems so both see the same machine conditions.
  footprint  N idle members per system, each system alone in a fresh network namespace;
             over a window: loopback bytes/s per member (/proc/net/dev, headers included),
             CPU % and RSS per process (/proc/<pid>).
  loss       shoal only: N members with 10% of inbound gossip dropped
             (SHOAL_FAULT_DROP_PERCENT) for a duration; counts NodeFailed events about
             healthy members (must be 0). Serf cannot be given the same loss here: the
             kernel has no netem, and Serf has no fault injection.

Everything binds to 127.0.0.1 (or a namespace's own loopback); every loop is bounded.
Results go to stdout as JSON lines and, with --markdown, as a table.
"""

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOAL = os.path.join(ROOT, "target", "release", "shoal")
KEY = "5" * 64
CONVERGE_TIMEOUT_S = 60
DETECT_TIMEOUT_S = 40


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def http_json(url, timeout=1.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait(what, timeout, pred, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(every)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    """What both systems' harnesses share: their processes, by member index."""

    procs: dict

    def kill(self, i):
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait()
        del self.procs[i]

    def observers(self, victim):
        return [self.node_id(i) for i in self.procs if i != victim]

    def pids(self):
        return [p.pid for p in self.procs.values()]

    def stop(self):
        for p in self.procs.values():
            p.send_signal(signal.SIGKILL)
        for p in self.procs.values():
            p.wait()
        self.procs = {}


class Shoal(Cluster):
    name = "shoal"

    def __init__(self, n, base, work, extra_env=None, watch=True):
        self.n, self.base, self.work, self.watch = n, base, work, watch
        self.env = dict(os.environ, SHOAL_CLUSTER_KEY=KEY, RUST_LOG="warn")
        self.env.update(extra_env or {})
        self.procs = {}
        self.failed = {}  # (observer, victim) -> unix seconds
        self.lock = threading.Lock()

    def port(self, i):
        return self.base + 2 * i

    def node_id(self, i):
        return f"s{i}"

    def start(self, i):
        d = os.path.join(self.work, self.node_id(i))
        os.makedirs(d, exist_ok=True)
        args = [SHOAL, "node", "--role", "worker", "--id", self.node_id(i),
                "--listen", f"127.0.0.1:{self.port(i)}", "--profile", "local", "--data-dir", d,
                "--insecure"]
        if i != 0:
            args += ["--seeds", f"127.0.0.1:{self.port(0)}"]
        out = open(os.path.join(d, "node.log"), "ab")
        self.procs[i] = subprocess.Popen(args, env=self.env, stdout=out, stderr=out,
                                         stdin=subprocess.DEVNULL)
        wait(f"{self.node_id(i)} serving", 20, lambda: http_json(self.url(i, "/v1/status")))
        if self.watch:
            threading.Thread(target=self._watch, args=(i, self.procs[i]), daemon=True).start()

    def url(self, i, path):
        return f"http://127.0.0.1:{self.port(i)}{path}"

    def _watch(self, i, proc):
        """Follows one node's /v1/events and records NodeFailed times."""
        try:
            with urllib.request.urlopen(self.url(i, "/v1/events"), timeout=3600) as r:
                for raw in r:
                    if proc.poll() is not None:
                        return
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    ev = json.loads(line[5:])
                    if ev.get("kind") == "NodeFailed":
                        with self.lock:
                            self.failed.setdefault((self.node_id(i), ev["member"]["id"]), []).append(
                                ev["ts_unix_ms"] / 1000.0)
        except Exception:
            return

    def alive_count(self, i):
        rows = http_json(self.url(i, "/v1/members"))
        return sum(1 for m in rows if m["state"] == "alive")

    def converged(self):
        return all(self.alive_count(i) == self.n for i in self.procs)

    def failed_times(self, victim, since):
        vid = self.node_id(victim)
        with self.lock:
            out = {}
            for (obs, v), ts in self.failed.items():
                later = [t for t in ts if t >= since]
                if v == vid and later:
                    out[obs] = min(later)
            return out



class Serf(Cluster):
    name = "serf"

    def __init__(self, n, base, work):
        self.n, self.base, self.work = n, base, work
        os.makedirs(work, exist_ok=True)
        self.procs = {}
        self.events = os.path.join(work, "failed.log")
        open(self.events, "w").close()
        self.handler = os.path.join(work, "on-failed.sh")
        with open(self.handler, "w") as f:
            f.write("#!/bin/sh\nnow=$(date +%s.%N)\n"
                    f"while read name rest; do echo \"$now $SERF_SELF_NAME $name\" >> {self.events}; done\n")
        os.chmod(self.handler, 0o755)

    def bind(self, i):
        return self.base + 2 * i

    def rpc(self, i):
        return self.base + 1000 + i

    def node_id(self, i):
        return f"f{i}"

    def start(self, i):
        args = ["serf", "agent", f"-node={self.node_id(i)}", f"-bind=127.0.0.1:{self.bind(i)}",
                f"-rpc-addr=127.0.0.1:{self.rpc(i)}", "-profile=local", "-log-level=warn",
                f"-event-handler=member-failed={self.handler}"]
        if i != 0:
            args.append(f"-join=127.0.0.1:{self.bind(0)}")
        out = open(os.path.join(self.work, f"{self.node_id(i)}.log"), "ab")
        self.procs[i] = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        wait(f"{self.node_id(i)} serving", 20, lambda: self._members(i) is not None)

    def _members(self, i):
        r = subprocess.run(["serf", "members", f"-rpc-addr=127.0.0.1:{self.rpc(i)}", "-format=json"],
                           capture_output=True, timeout=5)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)["members"]

    def converged(self):
        for i in self.procs:
            ms = self._members(i) or []
            if sum(1 for m in ms if m["status"] == "alive") != self.n:
                return False
        return True

    def failed_times(self, victim, since):
        vid = self.node_id(victim)
        out = {}
        with open(self.events) as f:
            for line in f:
                parts = line.split()
                if len(parts) != 3 or parts[2] != vid:
                    continue
                t = float(parts[0])
                if t >= since and (parts[1] not in out or t < out[parts[1]]):
                    out[parts[1]] = t
        return out



def start_cluster(c):
    for i in range(c.n):
        c.start(i)
    wait(f"{c.name} x{c.n} converged", CONVERGE_TIMEOUT_S, c.converged, every=0.25)


def trial(c, rng):
    victim = rng.randrange(1, c.n)
    observers = c.observers(victim)
    killed = time.time()
    c.kill(victim)
    deadline = killed + DETECT_TIMEOUT_S
    seen = {}
    while time.time() < deadline:
        seen = c.failed_times(victim, killed)
        if all(o in seen for o in observers):
            break
        time.sleep(0.02)
    missing = [o for o in observers if o not in seen]
    latency = None if missing else max(seen.values()) - killed
    c.start(victim)
    wait(f"{c.name} re-converged", CONVERGE_TIMEOUT_S, c.converged, every=0.25)
    return latency, missing


def pct(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(xs):
    return {"n": len(xs), "p50": round(pct(xs, 0.5), 3), "p90": round(pct(xs, 0.9), 3),
            "p99": round(pct(xs, 0.99), 3), "max": round(max(xs), 3),
            "mean": round(statistics.mean(xs), 3)}


def detect(args):
    rng = random.Random(args.seed)
    results = []
    for n in args.sizes:
        work = tempfile.mkdtemp(prefix=f"shoal-bench-{n}-")
        systems = [Shoal(n, 31000, os.path.join(work, "shoal"))]
        if not args.shoal_only:
            systems.append(Serf(n, 33000, os.path.join(work, "serf")))
        for c in systems:
            os.makedirs(c.work, exist_ok=True)
        try:
            for c in systems:
                log(f"starting {c.name} x{n}")
                start_cluster(c)
            lat = {c.name: [] for c in systems}
            misses = {c.name: 0 for c in systems}
            for t in range(args.trials):
                for c in systems:
                    latency, missing = trial(c, rng)
                    if latency is None:
                        misses[c.name] += 1
                        log(f"  {c.name} N={n} trial {t}: NOT DETECTED by {missing}")
                    else:
                        lat[c.name].append(latency)
                        log(f"  {c.name} N={n} trial {t}: {latency:.3f}s")
            for c in systems:
                row = {"bench": "detect", "system": c.name, "N": n, "missed": misses[c.name],
                       **summarize(lat[c.name])}
                results.append(row)
                print(json.dumps(row), flush=True)
        finally:
            for c in systems:
                c.stop()
            shutil.rmtree(work, ignore_errors=True)
    return results


def lo_bytes():
    with open("/proc/net/dev") as f:
        for line in f:
            if line.strip().startswith("lo:"):
                fields = line.split(":", 1)[1].split()
                return int(fields[8])  # tx bytes
    return 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def footprint_inside(system, n, window):
    """Runs inside a fresh network namespace: only this system's traffic is on lo."""
    work = tempfile.mkdtemp(prefix=f"shoal-fp-{system}-")
    c = Shoal(n, 31000, work, watch=False) if system == "shoal" else Serf(n, 33000, work)
    try:
        start_cluster(c)
        time.sleep(10)  # settle: joins and metadata done
        pids = c.pids()
        b0, t0 = lo_bytes(), time.time()
        c0 = {p: cpu_ticks(p) for p in pids}
        time.sleep(window)
        b1, t1 = lo_bytes(), time.time()
        c1 = {p: cpu_ticks(p) for p in pids}
        hz = os.sysconf("SC_CLK_TCK")
        cpu = [100.0 * (c1[p] - c0[p]) / hz / (t1 - t0) for p in pids]
        rss = [rss_mb(p) for p in pids]
        return {"bench": "footprint", "system": system, "N": n, "window_s": window,
                "bytes_per_s_per_node": round((b1 - b0) / (t1 - t0) / n, 1),
                "cpu_pct_per_node": round(statistics.mean(cpu), 3),
                "rss_mb_per_node": round(statistics.mean(rss), 1)}
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


def footprint(args):
    results = []
    systems = ["shoal"] if args.shoal_only else ["shoal", "serf"]
    for system in systems:
        ns = f"shoalbench{os.getpid()}{system}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        try:
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
            r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "_footprint",
                                system, str(args.footprint_n), str(args.window)],
                               capture_output=True, text=True, timeout=args.window + 180)
            if r.returncode != 0:
                raise RuntimeError(f"footprint {system} failed: {r.stderr[-2000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            results.append(row)
            print(json.dumps(row), flush=True)
        finally:
            subprocess.run(["ip", "netns", "del", ns])
    return results


def loss(args):
    work = tempfile.mkdtemp(prefix="shoal-loss-")
    c = Shoal(args.loss_n, 35000, work, {"SHOAL_FAULT_DROP_PERCENT": str(args.loss_percent)})
    try:
        start_cluster(c)
        start = time.time()
        time.sleep(args.loss_seconds)
        false_failures = sum(len([t for t in ts if t >= start]) for ts in c.failed.values())
        row = {"bench": "loss", "system": "shoal", "N": args.loss_n, "loss_pct": args.loss_percent,
               "seconds": args.loss_seconds, "healthy_declared_failed": false_failures}
        print(json.dumps(row), flush=True)
        return [row]
    finally:
        c.stop()
        shutil.rmtree(work, ignore_errors=True)


def markdown(rows):
    out = []
    det = [r for r in rows if r["bench"] == "detect"]
    if det:
        out.append("| N | system | trials | missed | p50 s | p90 s | p99 s | max s | mean s |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in det:
            out.append(f"| {r['N']} | {r['system']} | {r['n']} | {r['missed']} | {r['p50']} | "
                       f"{r['p90']} | {r['p99']} | {r['max']} | {r['mean']} |")
        for n in sorted({r["N"] for r in det}):
            s = {r["system"]: r for r in det if r["N"] == n}
            if "shoal" in s and "serf" in s:
                out.append(f"\nN = {n}: serf/shoal p50 ratio = {s['serf']['p50'] / s['shoal']['p50']:.1f}x, "
                           f"p99 ratio = {s['serf']['p99'] / s['shoal']['p99']:.1f}x")
    fp = [r for r in rows if r["bench"] == "footprint"]
    if fp:
        out.append("\n| system | N | window s | gossip bytes/s per node | CPU % per node | RSS MB per node |")
        out.append("|---|---|---|---|---|---|")
        for r in fp:
            out.append(f"| {r['system']} | {r['N']} | {r['window_s']} | {r['bytes_per_s_per_node']} | "
                       f"{r['cpu_pct_per_node']} | {r['rss_mb_per_node']} |")
    for r in rows:
        if r["bench"] == "loss":
            out.append(f"\nloss: shoal N={r['N']}, {r['loss_pct']}% inbound gossip dropped for "
                       f"{r['seconds']} s: {r['healthy_declared_failed']} healthy members declared failed")
    return "\n".join(out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_footprint":
        print(json.dumps(footprint_inside(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=["detect", "footprint", "loss"], action="append")
    p.add_argument("--sizes", type=int, nargs="+", default=[5, 16])
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--footprint-n", type=int, default=16)
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--loss-n", type=int, default=16)
    p.add_argument("--loss-percent", type=float, default=10.0)
    p.add_argument("--loss-seconds", type=float, default=600.0)
    p.add_argument("--shoal-only", action="store_true", help="skip serf (e.g. not installed)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    if not os.path.exists(SHOAL):
        subprocess.run(["cargo", "build", "--release", "-p", "shoal-cli"], cwd=ROOT, check=True)
    if not args.shoal_only and shutil.which("serf") is None:
        sys.exit("serf is not installed: apt-get install serf (or pass --shoal-only)")
    only = args.only or ["detect", "footprint", "loss"]
    rows = []
    if "detect" in only:
        rows += detect(args)
    if "footprint" in only:
        rows += footprint(args)
    if "loss" in only:
        rows += loss(args)
    if args.markdown:
        print(markdown(rows))


if __name__ == "__main__":
    main()
