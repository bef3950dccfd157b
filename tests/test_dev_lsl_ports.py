"""A driver whose outlet lands outside LSL's port range says so and becomes findable once ports free up.

The cause of "not ready after 60 s: force plate" on a shared machine: when other LSL programs hold
every port of the configured range (liblsl resolvers take four each, outlets two), liblsl gives a
new outlet a random discovery port, which resolvers asking known peers (machine scope, no
multicast on loopback) do not query. Reproduced in a child process with its own, tiny port range
(so other tests on this machine are not disturbed), with real liblsl outlets and resolvers.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

from labsuite.lslconfig import PortRange, port_range

CHILD = r"""
import json, sys, threading, time
import pylsl
from labsuite.drivers.base import DriverRunner
from labsuite.drivers.sim.lab import SimCamera, SimLabSettings
from labsuite.lslconfig import outlet_service_port, port_range

ports = port_range()
uid = sys.argv[1]
blockers, spare = [], None
for i in range(50):  # take every port of the range
    o = pylsl.StreamOutlet(pylsl.StreamInfo(f"blocker{i}", "Blocker", 1, 0, pylsl.cf_int32, f"{uid}-b{i}"))
    if not ports.contains(outlet_service_port(o)):
        break
    blockers.append(o)
events = []
settings = SimLabSettings(lab_id=uid)
runner = DriverRunner(SimCamera(settings), outlet_retry_s=0.5,
                      on_event=lambda kind, text: events.append((time.monotonic(), kind, text)))
thread = threading.Thread(target=runner.run, daemon=True)
thread.start()
sid = settings.source_id("camera")
time.sleep(1.0)
misplaced_port = outlet_service_port(runner.outlets[0])
freed_at = time.monotonic()
del blockers[0]  # another program closes an outlet: a port of the range is free again
deadline = time.monotonic() + 10
while runner.misplaced and time.monotonic() < deadline:
    time.sleep(0.05)  # no resolver meanwhile: resolvers take ports of the range too
t_replaced = time.monotonic()
new_port = outlet_service_port(runner.outlets[0])
found = pylsl.resolve_byprop("source_id", sid, 1, 5.0)
samples = 0
if found:
    inlet = pylsl.StreamInlet(found[0])
    inlet.open_stream(timeout=10)
    end = time.monotonic() + 2
    while time.monotonic() < end:
        chunk, _ = inlet.pull_chunk(timeout=0.2)
        samples += len(chunk)
runner.stop()
thread.join(10)
print(json.dumps({"range": str(ports), "blockers": len(blockers) + 1, "misplaced_port": misplaced_port,
                  "new_port": new_port, "replaced_after_s": t_replaced - freed_at,
                  "found": len(found), "samples": samples,
                  "events": [[t - freed_at, k, x] for t, k, x in events]}))
"""


def test_an_outlet_outside_the_port_range_is_reported_and_recreated(tmp_path, uid):
    base = random.randrange(20000, 29000, 16)  # far from the range everything else here uses
    cfg = tmp_path / "lsl_small.cfg"
    cfg.write_text("[multicast]\nResolveScope = machine\n[lab]\nKnownPeers = {127.0.0.1}\n"
                   f"[log]\nlevel = -2\n[ports]\nBasePort = {base}\nPortRange = 4\n")
    env = dict(os.environ, LSLAPICFG=str(cfg))
    proc = subprocess.run([sys.executable, "-c", CHILD, uid], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["range"] == f"{base}-{base + 3} ({cfg})"
    kinds = [k for _, k, _ in result["events"]]
    # The range was full: the outlet landed outside it, and the driver said so, naming the stream,
    # the range and the configuration file.
    assert not base <= result["misplaced_port"] < base + 4
    first = next(x for _, k, x in result["events"] if k == "lsl_port_outside_range")
    assert f"got discovery port {result['misplaced_port']}, outside the LSL port range " \
           f"{base}-{base + 3} ({cfg})" in first
    assert "labsuite-sim-" in first and "camera" in first
    # Re-created inside the range within a retry period of a port coming free; found; streaming.
    assert kinds[-1] == "lsl_port_in_range"
    assert base <= result["new_port"] < base + 4
    assert result["replaced_after_s"] < 1.5
    assert result["found"] == 1
    assert result["samples"] > 100  # the 100 Hz frame counter


READER_CHILD = r"""
import json, os, sys, time
import pylsl
from labsuite.lslconfig import port_range
from labsuite.streams.acquisition import StreamQuery, StreamReader

def range_ports():
    # UDP ports of LSL's range held by this process (/proc/net/udp* rows whose inode is our socket)
    ours = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            ours.add(link[8:-1])
    held = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        for row in open(table).read().splitlines()[1:]:
            cols = row.split()
            port, inode = int(cols[1].rsplit(":", 1)[1], 16), cols[9]
            if inode in ours and port_range().contains(port):
                held.append(port)
    return sorted(held)

uid = sys.argv[1]
readers = [StreamReader(StreamQuery(source_id=uid)).start() for _ in range(5)]
time.sleep(1.0)
searching = range_ports()  # nothing to find yet
outlet = pylsl.StreamOutlet(pylsl.StreamInfo("r", "Test", 1, 100, pylsl.cf_float32, uid))
assert all(r.wait_connected(30) for r in readers)
time.sleep(0.5)
connected = range_ports()
info = outlet.get_info()
own = sorted({info.as_xml().split("<v4service_port>")[1].split("<")[0],
              info.as_xml().split("<v6service_port>")[1].split("<")[0]})
for r in readers:
    r.stop()
print(json.dumps({"outlet": [int(p) for p in own], "searching": searching, "connected": connected}))
"""


def test_connected_readers_leave_the_port_range_to_outlets(tmp_path, uid):
    """A StreamReader holds a resolver (four ports of the range) only while it searches."""
    base = random.randrange(20000, 29000, 16)
    cfg = tmp_path / "lsl_wide.cfg"
    cfg.write_text("[multicast]\nResolveScope = machine\n[lab]\nKnownPeers = {127.0.0.1}\n"
                   f"[log]\nlevel = -2\n[ports]\nBasePort = {base}\nPortRange = 64\n")
    proc = subprocess.run([sys.executable, "-c", READER_CHILD, uid], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, LSLAPICFG=str(cfg)))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ports = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(ports["searching"]) == 5 * 4  # five searching readers: four ports each
    assert ports["connected"] == sorted(ports["outlet"])  # only the outlet's (IPv4 and IPv6)


def test_port_range_reads_the_configuration_in_use(tmp_path, monkeypatch):
    cfg = tmp_path / "lsl.cfg"
    cfg.write_text("[ports]\nBasePort = 17000 ; a comment\nPortRange = 64\n")
    monkeypatch.setenv("LSLAPICFG", str(cfg))
    assert port_range() == PortRange(str(cfg), 17000, 64)
    cfg.write_text("[multicast]\nResolveScope = machine\n")
    assert port_range() == PortRange(str(cfg), 16572, 32)  # liblsl's defaults
