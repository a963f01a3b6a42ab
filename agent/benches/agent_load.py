#!/usr/bin/env python3
"""The agent's own cost while it works: resident memory and CPU of a real `argus-agent`
shipping this host's metrics and receiving StatsD or SpectatorD lines at a steady rate,
streaming to a real `argus server`. Also checks that every counter increment reached the
server.

    cargo build --release -p argus-ingest --bin argus -p argus-agent --bin argus-agent
    python3 agent/benches/agent_load.py [--rate 1000] [--seconds 60] [--step 10s]
    python3 agent/benches/agent_load.py --input spectatord --rate 100000 [--lines-per-datagram 1]

StatsD packets are one line each, spread over 60 metric names (counters, timers, gauges,
sampled counters). SpectatorD lines go over 1,000 meters with four tags each (counters,
gauges with a TTL, timers, percentile timers), a line per datagram as Spectator clients
send by default (or several). Both are sent in small bursts every 10 ms. CPU is the agent's
utime + stime over the measured window divided by its length; RSS is sampled every second.
Prints one JSON document.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(cmd, wanted):
    """Starts a process and reads its stdout until each wanted prefix was seen."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = {}
    deadline = time.time() + 30
    while len(found) < len(wanted) and time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        for w in wanted:
            if line.startswith(w):
                found[w] = line[len(w):].strip()
    if len(found) < len(wanted):
        proc.kill()
        sys.exit(f"{cmd[0]} did not report {wanted}")
    return proc, [found[w] for w in wanted]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", choices=["statsd", "spectatord"], default="statsd")
    ap.add_argument("--rate", type=int, default=1000,
                    help="StatsD packets or SpectatorD lines per second")
    ap.add_argument("--lines-per-datagram", type=int, default=1, help="SpectatorD lines per datagram")
    ap.add_argument("--seconds", type=int, default=60, help="measured window")
    ap.add_argument("--step", default="10s", help="the server's and agent's step")
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args()
    release = os.path.join(ROOT, "target", "release")

    server, (http, grpc) = start(
        [os.path.join(release, "argus"), "server", "--ephemeral", "--http-addr", "127.0.0.1:0",
         "--grpc-addr", "127.0.0.1:0", "--step", args.step],
        ["argus: HTTP API listening on http://", "argus: gRPC listening on "])
    agent, (intake, statsd, spectatord) = start(
        [os.path.join(release, "argus-agent"), "--server", "http://" + grpc,
         "--http-addr", "127.0.0.1:0", "--statsd-addr", "127.0.0.1:0", "--spectatord-addr",
         "127.0.0.1:0", "--spectatord-socket", "none", "--step", args.step,
         "--app", "agentbench"],
        ["argus-agent: HTTP intake listening on http://", "argus-agent: StatsD listening on ",
         "argus-agent: SpectatorD listening on "])
    host, port = (statsd if args.input == "statsd" else spectatord).rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rng = random.Random(7)
    lines = ([f"bench.requests{i}:1|c" for i in range(20)]
             + [f"bench.latency{i}:%d|ms" for i in range(20)]
             + [f"bench.queue{i}:%d|g" for i in range(10)]
             + [f"bench.sampled{i}:1|c|@0.5" for i in range(10)])
    counted = 0  # increments of bench.requests*, as the server should see them

    # SpectatorD: datagrams made in advance (the sender must keep up with 100,000 lines/s),
    # each carrying `--lines-per-datagram` lines; counter lines count one increment each.
    meters = []
    for m in range(1000):
        tags = f"nf.process=api,status={[200, 404, 500][m % 3]},method={['GET', 'POST'][m % 2]},path=/api/v{m % 40}"
        kind = m % 10
        if kind < 4:
            meters.append((f"c:bench.requests{m},{tags}:1", 1))
        elif kind < 6:
            meters.append((f"g,60:bench.queue{m},{tags}:{rng.randrange(1000)}", 0))
        elif kind < 9:
            meters.append((f"t:bench.latency{m},{tags}:0.{rng.randrange(1, 999):03d}", 0))
        else:
            meters.append((f"T:bench.platency{m},{tags}:0.{rng.randrange(1, 999):03d}", 0))
    datagrams = []
    for _ in range(20_000):
        picked = [meters[rng.randrange(len(meters))] for _ in range(args.lines_per_datagram)]
        datagrams.append(("\n".join(p[0] for p in picked).encode(), sum(p[1] for p in picked)))

    def send_spectatord_for(seconds):
        nonlocal counted
        per_burst = max(1, args.rate // 100 // args.lines_per_datagram)
        end = time.time() + seconds
        next_t = time.time()
        lines = 0
        i = 0
        target = (host, int(port))
        while time.time() < end:
            for _ in range(per_burst):
                data, increments = datagrams[i]
                i = (i + 1) % len(datagrams)
                sock.sendto(data, target)
                counted += increments
                lines += args.lines_per_datagram
            next_t += 0.01
            time.sleep(max(0.0, next_t - time.time()))
        return lines

    def send_for(seconds):
        if args.input == "spectatord":
            return send_spectatord_for(seconds)
        nonlocal counted
        burst = max(1, args.rate // 100)
        end = time.time() + seconds
        next_t = time.time()
        sent = 0
        while time.time() < end:
            for _ in range(burst):
                line = lines[rng.randrange(len(lines))]
                if "%d" in line:
                    line = line % rng.randrange(1, 500)
                elif line.startswith("bench.requests"):
                    counted += 1
                sock.sendto(line.encode(), (host, int(port)))
                sent += 1
            next_t += 0.01
            time.sleep(max(0.0, next_t - time.time()))
        return sent

    send_for(args.warmup)
    cpu0, t0 = cpu_seconds(agent.pid), time.time()
    rss = []
    sent = 0
    for _ in range(args.seconds):
        sent += send_for(1)
        rss.append(rss_kib(agent.pid))
    cpu1, t1 = cpu_seconds(agent.pid), time.time()
    # Let the last step flush, then ask the server for everything bench.requests counted.
    step_s = float(args.step.rstrip("s"))
    time.sleep(step_s * 2 + 2)
    q = "name,bench.requests,:re,:sum,:per-step"
    url = (f"http://{http}/api/v1/graph?q={urllib.parse.quote(q)}&s=e-30m&e=now%2B1m"
           f"&format=stats.json")
    stats = json.load(urllib.request.urlopen(url))["stats"][0]
    health = json.load(urllib.request.urlopen(f"http://{intake}/v1/health"))
    agent.terminate()
    server.terminate()
    out = {
        "input": args.input,
        "rate_per_s": args.rate,
        "lines_per_datagram": args.lines_per_datagram if args.input == "spectatord" else 1,
        "seconds": round(t1 - t0, 2),
        "packets_sent_measured": sent,
        "agent_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "agent_rss_mib_max": round(max(rss) / 1024, 2),
        "agent_rss_mib_last": round(rss[-1] / 1024, 2),
        "requests_counted_by_sender": counted,
        "requests_total_at_server": stats.get("total"),
        "agent_health": health,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
