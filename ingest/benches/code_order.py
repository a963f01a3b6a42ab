#!/usr/bin/env python3
"""Writes `ingest/code-order.txt`: the functions of the server that run, in the order the
linker should lay them out, so that the code a server runs lies in a few contiguous pages.

Code pages are resident memory. In a release build laid out in the compiler's order, the
1,600 functions that start the server and serve the peer benchmark's load are spread over
the whole 16 MB of text, and the kernel maps 64 KiB around every page a server faults in:
6.4 MB of text were resident at idle, 9.1 MB after the load and the six questions.

    cargo build --release -p argus-ingest --bin argus
    python3 ingest/benches/code_order.py [--series 20000] [--grpc-load target/release/examples/grpc_load]

It runs the release binary under `valgrind --tool=callgrind` twice: once from start until it
answers `/healthz` (the functions of an idle server, laid out first), then under
`memory_breakdown.py` (the peer benchmark's remote-write load and its six questions) and,
when `--grpc-load` names the example, the agent stream. The functions that ran only there
follow, most instructions first. `ingest/build.rs` hands the file to the linker (lld's
`--symbol-ordering-file`) for release builds; a function missing from it (new code, a
renamed symbol) keeps the compiler's place, so a stale file costs pages, never correctness.
Generic functions instantiated in `argus-ingest` are named after that crate's build
metadata, so a change to its dependencies renames them: run this again then.

    python3 ingest/benches/code_order.py --check target/release/argus

says how many of the listed functions a build holds and over how many bytes they lie.
"""
import argparse
import collections
import http.client
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def wrapper(work, name, binary):
    """A script that runs `binary` under callgrind, each process writing its own profile."""
    path = os.path.join(work, name + ".sh")
    out = os.path.join(work, name + ".%p.callgrind")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --dump-instr=no "
                f"--compress-strings=no --compress-pos=no --callgrind-out-file={out} "
                f"{binary} \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def functions(profile, binary):
    """Instructions per function of `binary` in a callgrind profile (self cost plus the
    cost of calls made, which only orders the list)."""
    cost = collections.Counter()
    obj = None
    current = None
    for line in open(profile, errors="replace"):
        if line.startswith("ob="):
            obj = line[3:].strip()
        elif line.startswith("fn="):
            # Callgrind marks recursion levels as `name'2`.
            current = line[3:].strip().split("'")[0] if obj == binary else None
            if current:
                cost[current] += 0
        elif current and line[:1].isdigit():
            parts = line.split()
            if len(parts) >= 2:
                cost[current] += int(parts[1])
    return cost


def profiles(work, name, binary):
    total = collections.Counter()
    for f in os.listdir(work):
        if f.startswith(name + ".") and f.endswith(".callgrind"):
            total.update(functions(os.path.join(work, f), binary))
    return total


def idle_run(run, work):
    """Starts the server under callgrind, waits for `/healthz`, stops it."""
    data = os.path.join(work, "idle-data")
    port = 17291
    server = subprocess.Popen(
        [run, "server", "--http-addr", f"127.0.0.1:{port}", "--grpc-addr", "127.0.0.1:0",
         "--data-dir", data, "--step", "60s", "--retention", "6h"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server under callgrind did not answer /healthz in 300 s")
    finally:
        server.terminate()
        server.wait(timeout=300)


def check(binary, order_file):
    listed = [line.strip() for line in open(order_file) if line.strip()]
    placed = {}
    nm = subprocess.run(["nm", "--defined-only", "--print-size", binary],
                        check=True, capture_output=True, text=True).stdout
    for line in nm.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2] in "tTwW":
            placed[parts[3]] = (int(parts[0], 16), int(parts[1], 16))
    found = [placed[name] for name in listed if name in placed]
    if not found:
        raise SystemExit(f"{binary} holds none of the {len(listed)} functions listed")
    low = min(at for at, _ in found)
    high = max(at + size for at, size in found)
    print(f"{len(found)} of {len(listed)} listed functions found, "
          f"{sum(size for _, size in found)} bytes of code lying within {high - low} bytes")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "argus"))
    ap.add_argument("--series", type=int, default=20000)
    ap.add_argument("--grpc-load", help="the release `grpc_load` example, to add the agent stream")
    ap.add_argument("--out", default=os.path.join(ROOT, "ingest", "code-order.txt"))
    ap.add_argument("--check", metavar="BIN", help="report how BIN lays out the listed functions")
    a = ap.parse_args()
    if a.check:
        check(a.check, a.out)
        return
    binary = os.path.realpath(a.bin)
    symbols = set(subprocess.run(["nm", "--defined-only", "--format=just-symbols", binary],
                                 check=True, capture_output=True, text=True).stdout.split())
    with tempfile.TemporaryDirectory(prefix="argus-code-order-") as work:
        idle_run(wrapper(work, "idle", binary), work)
        busy = wrapper(work, "busy", binary)
        subprocess.run([sys.executable, os.path.join(HERE, "memory_breakdown.py"), "--bin", busy,
                        "--series", str(a.series), "--port", "17292"],
                       check=True, stdout=subprocess.DEVNULL)
        if a.grpc_load:
            subprocess.run([a.grpc_load, "--server-bin", busy, "--series", str(a.series),
                            "--steps", "30"], check=True, stdout=subprocess.DEVNULL)
        idle = profiles(work, "idle", binary)
        busy_cost = profiles(work, "busy", binary)
    first = [f for f, _ in idle.most_common() if f in symbols]
    then = [f for f, _ in busy_cost.most_common() if f in symbols and f not in idle]
    with open(a.out, "w") as f:
        f.writelines(name + "\n" for name in first + then)
    print(f"{a.out}: {len(first)} functions of an idle server, then {len(then)} of the load",
          file=sys.stderr)


if __name__ == "__main__":
    main()
