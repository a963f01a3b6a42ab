#!/usr/bin/env python3
"""Load the shared peer dataset into a real `argus server` through the HTTP API and measure
what issue 2 asks: resident bytes per series, sealed-block bytes per sample by kind of series,
and the latency of the peer benchmark's questions asked in the Atlas Stack Language.

    cargo build --release -p argus-ingest --bin argus
    python3 ingest/benches/peer_load.py [--series 20000] [--minutes 180] [--repeats 10]

The dataset comes from ../shared/bench/peers/gen.py (numpy + cramjam, installed into a venv
under the work dir on first use). Counters (`http.requests`) are sent with
`atlas.dstype=counter`, so the store keeps per-second rates, as Atlas does; the other kinds
are gauges. Data goes through POST /api/v1/backfill (the publish endpoint only takes the last
minute). Prints one JSON document with every figure.
"""
import argparse
import array
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "..", "shared", "bench", "peers")

QUERIES = [
    ("q1_sum_by_app", "name,sys.cpu.utilization,:eq,:sum,(,nf.app,),:by"),
    ("q2_rate_by_app_status", "name,http.requests,:eq,:sum,(,nf.app,status,),:by"),
    ("q3_regex_by_cluster", "name,http.latency,:eq,nf.cluster,app00[0-3].*,:re,:and,"
                            "method,GET,:eq,:and,:sum,(,nf.cluster,),:by"),
    ("q4_by_node_highcard", "name,http.requests,:eq,:sum,(,nf.node,),:by"),
    ("q5_max_all_latency", "name,http.latency,:eq,:max"),
    ("q6_count_all_series", "name,(,http.requests,http.latency,sys.cpu.utilization,jvm.threads,),:in,:count"),
]
KINDS = {"counter": "name,http.requests,:eq", "gauge_f": "name,http.latency,:eq",
         "gauge_pct": "name,sys.cpu.utilization,:eq", "gauge_int": "name,jvm.threads,:eq"}


def ensure_dataset(work, series, minutes):
    out = os.path.join(work, "data-%d-%d" % (series, minutes))
    venv = os.path.join(work, "venv")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(venv, "bin", "pip"), "install", "-q", "numpy", "cramjam"])
    # Always regenerate: the time anchor is "now - 10 min" and must fall inside retention.
    subprocess.check_call([os.path.join(venv, "bin", "python"), os.path.join(PEERS, "gen.py"),
                           "--series", str(series), "--minutes", str(minutes), "--out", out],
                          stdout=subprocess.DEVNULL)
    return out


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--minutes", type=int, default=180)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=100, help="series per backfill request")
    ap.add_argument("--work", default="/tmp/argus-peer-load")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "argus"))
    ap.add_argument("--port", type=int, default=17101)
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds between the end of the load and the queries, so the maintenance "
                         "pass that seals the last heads is over (a dashboard's steady state)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    data = ensure_dataset(args.work, args.series, args.minutes)
    with open(os.path.join(data, "manifest.json")) as f:
        manifest = json.load(f)
    series = [json.loads(line) for line in open(os.path.join(data, "series.jsonl"))]
    values = array.array("d")
    with open(os.path.join(data, "values.f64"), "rb") as f:
        values.frombytes(f.read())
    points = manifest["points_per_series"]
    step_ms = manifest["step_s"] * 1000
    start_ms = manifest["start_s"] * 1000

    proc = subprocess.Popen([args.bin, "server", "--http-addr", "127.0.0.1:%d" % args.port,
                             "--grpc-addr", "127.0.0.1:0", "--data-dir", os.path.join(args.work, "server"),
                             "--step", "60s", "--retention", "6h", "--graph-max-lines", "10000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, ARGUS_LOG="warn"))
    try:
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=300)
                conn.request("GET", "/healthz")
                if conn.getresponse().read() and True:
                    break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        rss_idle = rss_bytes(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.time()
        sent = 0
        for lo in range(0, len(series), args.batch):
            chunk = []
            for i in range(lo, min(lo + args.batch, len(series))):
                s = series[i]
                tags = dict(s["tags"])
                tags["atlas.dstype"] = "counter" if s["kind"] == "counter" else "gauge"
                row = values[i * points:(i + 1) * points]
                chunk.append((tags, row))
            # one payload per request; each metric carries its series' tags
            metrics = []
            for tags, row in chunk:
                for j, v in enumerate(row):
                    metrics.append({"tags": tags, "timestamp": start_ms + j * step_ms, "value": v})
            body = json.dumps({"metrics": metrics}).encode()
            conn.request("POST", "/api/v1/backfill", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            txt = r.read()
            if r.status != 200:
                raise SystemExit("backfill failed: %d %s" % (r.status, txt[:500]))
            sent += len(metrics)
        load_s = time.time() - t0
        load_cpu = cpu_seconds(proc.pid) - cpu0
        time.sleep(2)
        rss_after = rss_bytes(proc.pid)
        time.sleep(max(0.0, args.settle - 2))
        rss_before_queries = rss_bytes(proc.pid)

        def get(path):
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()

        storage = {}
        for kind, q in KINDS.items():
            st, body = get("/api/v1/debug/storage?q=" + urllib.parse.quote(q))
            storage[kind] = json.loads(body) if st == 200 else {"error": body.decode()[:200]}
        st, body = get("/api/v1/debug/storage")
        storage["all"] = json.loads(body) if st == 200 else {"error": body.decode()[:200]}

        end_ms = start_ms + (points - 1) * step_ms
        timings = {}
        for qid, q in QUERIES:
            path = "/api/v1/graph?" + urllib.parse.urlencode(
                {"q": q, "s": start_ms, "e": end_ms, "step": "60s", "format": "json"})
            st, body = get(path)
            if st != 200:
                timings[qid] = {"error": body.decode()[:300]}
                continue
            j = json.loads(body)
            total = sum(float(v) for row in j["values"] for v in row if float(v) == float(v))
            ts = []
            for _ in range(args.repeats):
                a = time.perf_counter()
                get(path)
                ts.append((time.perf_counter() - a) * 1000)
            timings[qid] = {"p50_ms": round(statistics.median(ts), 2), "min_ms": round(min(ts), 2), "lines": len(j["legend"]),
                            "sum": total}
        st, body = get("/metrics")
        own = {line.split("{")[1].split("}")[0].split('"')[1]: int(line.split()[-1])
               for line in body.decode().splitlines() if line.startswith("argus_memory_bytes{")}
        time.sleep(12)  # one maintenance pass later
        rss_settled = rss_bytes(proc.pid)
        report = {
            "dataset": {"series": len(series), "points": points, "samples_sent": sent},
            "load": {"seconds": round(load_s, 2), "server_cpu_s": round(load_cpu, 2),
                     "samples_per_cpu_s": round(sent / load_cpu) if load_cpu else None},
            "rss": {"idle_bytes": rss_idle, "after_bytes": rss_after,
                    "bytes_per_series": round((rss_after - rss_idle) / len(series), 1),
                    "before_queries_bytes_per_series": round((rss_before_queries - rss_idle) / len(series), 1),
                    "settled_bytes": rss_settled,
                    "settled_bytes_per_series": round((rss_settled - rss_idle) / len(series), 1)},
            "store_accounting": {"bytes": own, "bytes_per_series": round(sum(own.values()) / len(series), 1)},
            "storage": storage,
            "queries": timings,
        }
        print(json.dumps(report, indent=1))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
