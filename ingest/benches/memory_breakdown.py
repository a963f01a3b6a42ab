#!/usr/bin/env python3
"""Where each resident byte per series goes, on the peer benchmark's load: the same dataset
and remote-write requests as ../shared/bench/peers (gen.py), POSTed to a real release
`argus server` started as the harness starts it (--data-dir, --step 60s, --retention 6h).

    cargo build --release -p argus-ingest --bin argus
    python3 ingest/benches/memory_breakdown.py [--series 20000] [--minutes 180]

Prints one JSON document: RSS above idle (anonymous and file-backed) per series after the
load settles and after the six questions, beside the store's own accounting by part
(`argus_memory_bytes{part}` on /metrics) and the allocator's view (in use, free in the
heap), each per series.
"""
import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, "..", "shared", "bench", "peers")
sys.path.insert(0, PEERS)
# The harness's own six questions as its Argus adapter asks them: remote write spells the
# names and keys the Prometheus way (`sys_cpu_utilization`, `nf_app`).
from queries import ASL  # noqa: E402


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[k] = int(v.split()[0]) * 1024
    return out


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metrics(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    parts = {}
    for line in text.splitlines():
        if line.startswith("argus_memory_bytes{part=") or line.startswith("argus_allocator_bytes{"):
            key, value = line.rsplit(" ", 1)
            parts[key] = float(value)
    return parts


def wait_quiet(pid, at_most=60):
    """Until the server's CPU has been idle for a second (its maintenance pass is over)."""
    t0 = time.time()
    last = cpu_seconds(pid)
    while time.time() - t0 < at_most:
        time.sleep(1)
        now = cpu_seconds(pid)
        if now - last < 0.02:
            return
        last = now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--minutes", type=int, default=180)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "argus"))
    ap.add_argument("--port", type=int, default=17201)
    ap.add_argument("--hold", type=float, default=0,
                    help="keep the loaded server up this many seconds at the end (to profile it)")
    a = ap.parse_args()
    # A held run is ended with SIGTERM (SIGINT is ignored in the background): exit through
    # the `finally` below, which stops the server and removes the scratch directory.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    py = os.path.join(PEERS, ".venv", "bin", "python")
    if not os.path.exists(py):
        subprocess.check_call([sys.executable, "-m", "venv", os.path.join(PEERS, ".venv")])
        subprocess.check_call([os.path.join(PEERS, ".venv", "bin", "pip"), "install", "-q",
                               "-r", os.path.join(PEERS, "requirements.txt")])
    work = tempfile.mkdtemp(prefix="argus-memory-")
    data = os.path.join(work, "ds")
    subprocess.check_call([py, os.path.join(PEERS, "gen.py"), "--series", str(a.series),
                           "--minutes", str(a.minutes), "--step", "60", "--out", data],
                          stdout=subprocess.DEVNULL)
    with open(os.path.join(data, "rw.idx")) as f:
        idx = json.load(f)
    with open(os.path.join(data, "manifest.json")) as f:
        manifest = json.load(f)
    server = subprocess.Popen(
        [a.bin, "server", "--http-addr", f"127.0.0.1:{a.port}", "--grpc-addr", "127.0.0.1:0",
         "--data-dir", os.path.join(work, "data"), "--step", "60s", "--retention", "6h",
         "--graph-max-lines", "5000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(3000):
            try:
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        wait_quiet(server.pid)
        idle = proc_status(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        with open(os.path.join(data, "rw.bin"), "rb") as f:
            body = f.read()
        cpu_before_load = cpu_seconds(server.pid)
        for off, length, _samples, _slot in idx:
            conn.request("POST", "/api/v1/write", body=body[off:off + length], headers={
                "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                "X-Prometheus-Remote-Write-Version": "0.1.0"})
            r = conn.getresponse()
            r.read()
            if r.status not in (200, 204):
                raise SystemExit(f"write refused: {r.status}")
        wait_quiet(server.pid)
        load_cpu_s = cpu_seconds(server.pid) - cpu_before_load
        loaded = proc_status(server.pid)
        loaded_parts = metrics(a.port)
        end = manifest["end_s"]
        start = end - a.minutes * 60
        # Code and read-only data pages each question faults in, in order (file-backed).
        file_pages = {}
        before_file = proc_status(server.pid)["RssFile"]
        for name, q in ASL.items():
            p = urllib.parse.urlencode({"q": q, "s": start * 1000, "e": end * 1000,
                                        "step": "60s", "format": "json"})
            for _ in range(5):
                conn.request("GET", "/api/v1/graph?" + p)
                r = conn.getresponse()
                r.read()
            after_file = proc_status(server.pid)["RssFile"]
            file_pages[name] = round((after_file - before_file) / 2**10)
            before_file = after_file
        wait_quiet(server.pid)
        queried = proc_status(server.pid)
        queried_parts = metrics(a.port)
        if a.hold:
            print(f"holding: server pid {server.pid} on port {a.port}, dataset end {end}; "
                  f"end it early with kill {os.getpid()}",
                  file=sys.stderr, flush=True)
            time.sleep(a.hold)
    finally:
        # A clean stop (a heap profiler wrapping the binary writes its report then).
        server.terminate()
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        subprocess.call(["rm", "-rf", work])
    n = manifest["series"]

    def per_series(after, parts):
        out = {k: round((after[k] - idle[k]) / n, 1) for k in after}
        out["store accounting"] = {k.split('"')[1]: round(v / n, 1) for k, v in parts.items()
                                   if k.startswith("argus_memory_bytes")}
        out["allocator"] = {k.split('"')[1]: round(v / n, 1) for k, v in parts.items()
                            if k.startswith("argus_allocator_bytes")}
        return out

    print(json.dumps({
        "series": n, "points_per_series": manifest["points_per_series"],
        "idle_rss_mib": round(idle["VmRSS"] / 2**20, 1),
        # One connection, so a rough figure: the peer harness measures ingest properly.
        "load_samples_per_cpu_s": round(manifest["samples"] / load_cpu_s),
        "after_ingest_bytes_per_series": per_series(loaded, loaded_parts),
        "after_queries_bytes_per_series": per_series(queried, queried_parts),
        "file_kib_faulted_in_by_each_question": file_pages,
    }, indent=1))


if __name__ == "__main__":
    main()
