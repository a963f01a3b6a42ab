"""Drives PyPI's netflix-spectator-py, unchanged, the way a service does: every meter type,
written to wherever `location` says (`udp`, the clients' default 127.0.0.1:1234, or
`unix:///path`). Run by tests/tests/spectator_e2e.rs, which reads every value back through
Argus's graph API. Arguments: location, a tag value that tells the runs apart, and whether
to buffer (`buffered`: every line in one datagram at close, as `buffer_size` does; else one
datagram per call, the client's default). Prints a JSON document of what it wrote that
the test cannot know in advance (the age gauge's epoch, the percentile timer's values).
"""

import json
import sys
import time
from ctypes import c_uint64

from spectator import Config, Registry

location, via, mode = sys.argv[1], sys.argv[2], sys.argv[3]
config = Config(location=location, buffer_size=60000 if mode == "buffered" else 0)
r = Registry(config)
tags = {"via": via}

counter = r.counter("sp.requests", {**tags, "status": "200"})
for _ in range(3):
    counter.increment()
counter.increment(2.5)

queue = r.gauge("sp.queue", tags, ttl_seconds=120)
queue.set(7)
queue.set(9)

peak = r.max_gauge("sp.conn.max", tags)
for v in (5, 99, 42):
    peak.set(v)

since = int(time.time()) - 100
r.age_gauge("sp.since", tags).set(since)

latency = r.timer("sp.latency", tags)
latency.record(0.1)
latency.record(0.3)

size = r.distribution_summary("sp.size", tags)
size.record(100)
size.record(300)

sent = r.monotonic_counter("sp.bytes", tags)
for v in (1000, 1600, 1750):
    sent.set(v)

packets = r.monotonic_counter_uint("sp.packets", tags)
packets.set(c_uint64(10))
packets.set(c_uint64(35))

users = r.distinct_count_sketch("sp.users", tags)
for u in ("alice", "bob", "alice"):
    users.record(u)

# The percentile timer: 1 ms to 1 s in 1 ms steps, and a percentile distribution summary.
plat = r.pct_timer("sp.plat", tags)
values = [i / 1000 for i in range(1, 1001)]
for v in values:
    plat.record(v)
psize = r.pct_distribution_summary("sp.psize", tags)
for v in range(1, 101):
    psize.record(v * 10)

r.close()
print(json.dumps({"since": since, "plat": values}))
