#!/usr/bin/env python3
"""The cluster's costs as ratios to the systems measured in the same run (issue 13's
outcome 8): ingest samples per CPU-second of every Argus and NATS process together, query p50
of the six questions on three nodes against one, and memory per series per replica."""
import json
import sys

MiB = 1024 * 1024


def main(paths):
    runs = {r["system"]: r for r in (json.load(open(p)) for p in paths)}
    cluster = runs.get("argus_cluster")
    single = runs.get("argus")
    if not cluster:
        return
    series = cluster["manifest"]["series"]
    replicas = cluster.get("replicas", 2)
    ing = cluster["ingest"]
    by_kind = ing.get("cpu_s_by_kind", {})
    print("| cost | cluster (3 Argus + 3 NATS) | single Argus | VictoriaMetrics | cluster / single | cluster / VM |")
    print("|---|---|---|---|---|---|")

    def per_cpu(r):
        return r["ingest"]["samples_per_cpu_s"] if r else None

    def ratio(a, b, fmt="%.2f"):
        return fmt % (a / b) if a and b else "-"

    c, s, v = per_cpu(cluster), per_cpu(single), per_cpu(runs.get("victoriametrics"))
    print("| ingest samples per CPU-s (all processes) | {:,} (Argus {} CPU-s, NATS {} CPU-s) | {} | {} | {} | {} |".format(
        c, by_kind.get("argus", "?"), by_kind.get("nats", "?"),
        "{:,}".format(s) if s else "-", "{:,}".format(v) if v else "-", ratio(c, s), ratio(c, v)))
    print("| ingest samples/s (wall) | {:,} | {} | {} | {} | {} |".format(
        ing["ingest_samples_per_s"],
        "{:,}".format(single["ingest"]["ingest_samples_per_s"]) if single else "-",
        "{:,}".format(runs["victoriametrics"]["ingest"]["ingest_samples_per_s"]) if "victoriametrics" in runs else "-",
        ratio(ing["ingest_samples_per_s"], single and single["ingest"]["ingest_samples_per_s"]),
        ratio(ing["ingest_samples_per_s"], "victoriametrics" in runs and runs["victoriametrics"]["ingest"]["ingest_samples_per_s"])))
    argus_growth = (cluster["after_ingest"]["by_kind"]["argus"]["VmRSS"]
                    - cluster["idle"]["by_kind"]["argus"]["VmRSS"])
    nats_rss = cluster["after_ingest"]["by_kind"]["nats"]["VmRSS"]
    per_replica = argus_growth / (series * replicas)
    single_per_series = ((single["after_ingest"]["VmRSS"] - single["idle"]["VmRSS"]) / series
                         if single else None)
    vm = runs.get("victoriametrics")
    vm_per_series = (vm["after_ingest"]["VmRSS"] - vm["idle"]["VmRSS"]) / series if vm else None
    print("| Argus RSS growth per series per replica (B) | %.0f (NATS RSS %.0f MiB besides) | %s | %s | %s | %s |" % (
        per_replica, nats_rss / MiB,
        "%.0f" % single_per_series if single_per_series else "-",
        "%.0f" % vm_per_series if vm_per_series else "-",
        ratio(per_replica, single_per_series), ratio(per_replica, vm_per_series)))
    print()
    print("| query | cluster p50 ms | single p50 ms | cluster / single | same result (series, sum) |")
    print("|---|---|---|---|---|")
    for q, x in cluster["queries"].items():
        y = (single or {}).get("queries", {}).get(q, {})
        if "p50_ms" not in x:
            print("| %s | %s | - | - | - |" % (q, x.get("error", "-")[:60]))
            continue
        same = ("yes" if y and (x["result_series"], x["result_sum"]) == (y.get("result_series"), y.get("result_sum"))
                else "no: %s vs %s" % ((x["result_series"], x["result_sum"]),
                                       (y.get("result_series"), y.get("result_sum"))))
        print("| %s | %.1f | %s | %s | %s |" % (
            q, x["p50_ms"], "%.1f" % y["p50_ms"] if "p50_ms" in y else "-",
            ratio(x["p50_ms"], y.get("p50_ms")), same))


if __name__ == "__main__":
    main(sys.argv[1:])
