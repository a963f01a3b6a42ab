#!/usr/bin/env python3
"""The peer benchmark's Argus adapter, run against a three-node cluster on NATS JetStream.

Starts `scripts/local-cluster` (three NATS servers with `sync_interval: always`, three Argus
nodes with every role) on ports of its own, then goes through the very phases of
`../shared/bench/peers/bench.py`: the same remote-write bytes, the same settle rule, the same
visibility check and the same six Stack Language questions. What differs is what a cluster
is made of:
- the loader's connections go round-robin to the three gateways;
- CPU is the sum over all six processes (Argus and NATS), RSS likewise, with the Argus and
  NATS shares recorded apart;
- the questions go to one node, which fans them out to the store nodes and merges.

Usage: cluster_bench.py --data DIR --workdir DIR --out FILE [--repeats N] [--conns N]
"""
import argparse
import itertools
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.environ.get("PEERS_DIR", os.path.join(REPO, "..", "shared", "bench", "peers"))
sys.path.insert(0, PEERS)
import bench  # noqa: E402  (the peer benchmark's phases and probes)

NODES = 3
NATS_PORTS = [int(p) for p in os.environ.get("BENCH_NATS_PORTS", "14222 14223 14224").split()]
ROUTE_PORTS = [int(p) for p in os.environ.get("BENCH_ROUTE_PORTS", "16222 16223 16224").split()]
HTTP_PORTS = [int(p) for p in os.environ.get("BENCH_HTTP_PORTS", "17201 17202 17203").split()]
GRPC_PORTS = [int(p) for p in os.environ.get("BENCH_GRPC_PORTS", "17211 17212 17213").split()]

# The cluster's partition count (Argus's default).
PARTITIONS = int(os.environ.get("PARTITIONS", "64"))

# A pid standing for the whole cluster in bench.proc_cpu_s.
CLUSTER_PID = -1


class ClusterProcess:
    """What bench.load reads of a started server: its pid, and poll() while it runs."""
    pid = CLUSTER_PID

    def poll(self):
        return None


class ArgusCluster(bench.Argus):
    name = "argus_cluster"

    def __init__(self, workdir):
        super().__init__(workdir)
        self.datadir = os.path.join(workdir, "argus-cluster")
        self.spread_over_gateways = False
        self._gateways = itertools.cycle(HTTP_PORTS)

    # During ingest every new connection goes to the next gateway; queries go to node0.
    @property
    def port(self):
        if self.spread_over_gateways:
            return next(self._gateways)
        return HTTP_PORTS[0]

    def env(self):
        env = dict(os.environ)
        env.update({
            "ARGUS_CLUSTER_DIR": self.datadir,
            "NATS_PORTS": " ".join(map(str, NATS_PORTS)),
            "ROUTE_PORTS": " ".join(map(str, ROUTE_PORTS)),
            "HTTP_PORTS": " ".join(map(str, HTTP_PORTS)),
            "GRPC_PORTS": " ".join(map(str, GRPC_PORTS)),
            "ARGUS_FLAGS": "--step 60s --retention 6h --partitions %d" % PARTITIONS,
        })
        return env

    def local_cluster(self, command):
        subprocess.run([os.path.join(REPO, "scripts", "local-cluster"), command],
                       env=self.env(), check=True, cwd=REPO)

    def start(self):
        self.local_cluster("clean")
        self.local_cluster("start")
        self.proc = ClusterProcess()

    def stop(self):
        self.local_cluster("clean")

    def pids(self, kind):
        out = []
        for i in range(NODES):
            with open(os.path.join(self.datadir, "%s%d.pid" % (kind, i))) as f:
                out.append(int(f.read()))
        return out

    def status(self):
        """RSS of every process summed (the keys report.py reads), and the shares apart."""
        total = {}
        shares = {}
        for kind in ("argus", "nats"):
            share = {}
            for pid in self.pids(kind):
                for k, v in bench.proc_status(pid).items():
                    share[k] = share.get(k, 0) + v
                    total[k] = total.get(k, 0) + v
            shares[kind] = share
        total["by_kind"] = shares
        return total

    def cpu_s(self):
        return {kind: sum(ORIGINAL_PROC_CPU_S(p) for p in self.pids(kind))
                for kind in ("argus", "nats")}


ORIGINAL_PROC_CPU_S = bench.proc_cpu_s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--conns", type=int, default=3, help="loader connections, round-robin")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    with open(os.path.join(a.data, "manifest.json")) as f:
        manifest = json.load(f)
    os.makedirs(a.workdir, exist_ok=True)
    ad = ArgusCluster(a.workdir)
    # bench.load and its settle loop read the server's CPU by pid; the cluster's is the sum.
    bench.proc_cpu_s = lambda pid: (sum(ad.cpu_s().values()) if pid == CLUSTER_PID
                                    else ORIGINAL_PROC_CPU_S(pid))
    res = {"system": ad.name, "manifest": {k: manifest[k] for k in (
        "series", "minutes", "step_s", "samples", "requests", "batch_series", "batch_points")},
           "conns": a.conns, "nodes": NODES, "replicas": 2, "partitions": PARTITIONS}
    try:
        ad.start()
        time.sleep(2)
        res["idle"] = ad.status()
        cpu0 = ad.cpu_s()
        ad.spread_over_gateways = True
        res["ingest"] = bench.load(ad, a.data, manifest, a.conns)
        ad.spread_over_gateways = False
        cpu1 = ad.cpu_s()
        res["ingest"]["cpu_s_by_kind"] = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
        res["visible"] = bench.wait_visible(ad, manifest)
        res["after_ingest"] = ad.status()
        res["disk_bytes"] = bench.dir_bytes(ad.datadir)
        res["queries"] = bench.run_queries(ad, manifest, a.repeats)
        res["after_queries"] = ad.status()
        st, body = bench.hreq(HTTP_PORTS[0], "GET", "/api/v1/cluster")
        res["cluster"] = json.loads(body) if st == 200 else {"error": st}
        res["disk_bytes_end"] = bench.dir_bytes(ad.datadir)
    finally:
        ad.stop()
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res["ingest"]))


if __name__ == "__main__":
    main()
