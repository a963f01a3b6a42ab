#!/usr/bin/env python3
"""What NATS JetStream alone costs to log the peer benchmark's 3.6 M samples, with no Argus:
the floor under any cluster encoding of them.

Starts three NATS servers as Argus's cluster runs them (`sync_interval: always`, R3 file
streams), two consumers (each message delivered twice, as to two replicas), then publishes
MESSAGES messages of (3.6 M × BYTES_PER_SAMPLE / MESSAGES) bytes, WINDOW at a time (each
window's acknowledgements awaited before the next, as a gateway awaits a request's), and
prints the CPU the three servers used.

    python3 -m venv /tmp/floor && /tmp/floor/bin/pip install nats-py
    /tmp/floor/bin/python scripts/nats_floor.py --nats-server PATH \\
        --messages 1800 --streams 1 --window 1 --bytes-per-sample 26

NATS's CPU follows replication rounds (what reaches a stream's leader together), not
messages or bytes: the same messages paced out cost several times what a burst costs.
"""
import argparse
import asyncio
import os
import shutil
import subprocess
import time

import nats
from nats.js.api import StorageType, StreamConfig

SAMPLES = 3_600_000
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_servers(binary, workdir, base_port):
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    routes = ", ".join(f"nats://127.0.0.1:{base_port + 100 + j}" for j in range(3))
    procs = []
    for i in range(3):
        conf = os.path.join(workdir, f"n{i}.conf")
        with open(conf, "w") as f:
            f.write(f"server_name: n{i}\nlisten: 127.0.0.1:{base_port + i}\n"
                    f"jetstream {{ store_dir: \"{workdir}/n{i}\", sync_interval: always }}\n"
                    f"cluster {{ name: floor, listen: 127.0.0.1:{base_port + 100 + i}, "
                    f"routes: [{routes}] }}\n")
        log = open(os.path.join(workdir, f"n{i}.log"), "w")
        procs.append(subprocess.Popen([binary, "-c", conf], stdout=log, stderr=subprocess.STDOUT))
    return procs


async def measure(a):
    procs = start_servers(a.nats_server, a.workdir, a.base_port)
    urls = [f"nats://127.0.0.1:{a.base_port + i}" for i in range(3)]
    try:
        publisher = await nats.connect(servers=[urls[0]])
        js = publisher.jetstream()
        for k in range(a.streams):
            last = None
            for _ in range(100):
                try:
                    await js.add_stream(StreamConfig(
                        name=f"FLOOR_{k}", subjects=[f"floor.{k}.*"], num_replicas=3,
                        storage=StorageType.FILE))
                    break
                except Exception as e:  # the JetStream cluster is still electing
                    last = e
                    await asyncio.sleep(0.3)
            else:
                raise RuntimeError(f"stream FLOOR_{k} could not be created: {last!r}")
        received = [0, 0]
        done = asyncio.Event()
        readers = []
        for i, url in enumerate(urls[1:]):
            reader = await nats.connect(servers=[url])
            readers.append(reader)

            async def on_message(_msg, i=i):
                received[i] += 1
                if sum(received) == 2 * a.messages:
                    done.set()
            for k in range(a.streams):
                await reader.jetstream().subscribe(f"floor.{k}.*", cb=on_message,
                                                   ordered_consumer=True)
        await asyncio.sleep(1)
        size = SAMPLES * a.bytes_per_sample // a.messages
        payload = os.urandom(size)
        pids = [p.pid for p in procs]
        before = sum(cpu_s(p) for p in pids)
        started = time.time()
        window = []
        for m in range(a.messages):
            partition = m % a.partitions
            subject = f"floor.{partition % a.streams}.{partition}"
            window.append(asyncio.ensure_future(
                js.publish(subject, payload, headers={"Nats-Msg-Id": f"m{m}"})))
            if len(window) >= a.window:
                await asyncio.gather(*window)
                window = []
                if a.pause_ms:
                    await asyncio.sleep(a.pause_ms / 1000)
        await asyncio.gather(*window)
        await asyncio.wait_for(done.wait(), 300)
        wall = time.time() - started
        used = sum(cpu_s(p) for p in pids) - before
        for c in [publisher, *readers]:
            await c.close()
        print(f"{a.messages} messages of {size} B ({a.bytes_per_sample} B/sample) over "
              f"{a.streams} streams, {a.window} at a time, {a.pause_ms} ms between: "
              f"NATS {used:.2f} CPU-s in {wall:.1f} s; {SAMPLES / used:,.0f} samples per "
              f"NATS CPU-s", flush=True)
    finally:
        for p in procs:
            p.kill()
        shutil.rmtree(a.workdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nats-server", required=True)
    ap.add_argument("--messages", type=int, default=1800)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=1, help="subjects, spread over the streams")
    ap.add_argument("--window", type=int, default=1, help="publishes in flight together")
    ap.add_argument("--pause-ms", type=float, default=0, help="pause after each window")
    ap.add_argument("--bytes-per-sample", type=int, default=26)
    ap.add_argument("--workdir", default="/tmp/nats-floor")
    ap.add_argument("--base-port", type=int, default=14500)
    asyncio.run(measure(ap.parse_args()))


if __name__ == "__main__":
    main()
