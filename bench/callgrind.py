#!/usr/bin/env python3
"""Counts the server's user-space instructions per message under callgrind: far steadier
than throughput on a shared machine (the count does not depend on what else runs).

    cargo build --release -p easynet-bench
    python3 bench/callgrind.py [--driver mio|tokio] [--rows REGEX] [--impls REGEX] [--rounds 3] [--syscalls]

Environment: BENCH_BIN (the binaries' directory, default $CARGO_TARGET_DIR/release), BENCH_PORT
(default 9250).

For each workload and server, the server runs under `valgrind --tool=callgrind` twice, with
a fixed load from `loadgen --requests N` (one connection by default, so that every message takes the same path and the counts repeat; N requests): once with N1 and
once with N2 requests per connection. Instructions per message = (Ir(N2) - Ir(N1)) /
(messages(N2) - messages(N1)), so start-up, the TLS handshakes, connection set-up and
shutdown cancel out. The loop's waits (`epoll_wait` calls) are counted under valgrind too: a
wait costs about 1 500 instructions on tokio, and whether the server finds the next request
without waiting depends on timing, which valgrind changes. `--syscalls` also counts system calls per message the same way, from
separate runs without valgrind (`perf stat` on the syscall tracepoints; strace would slow the
server so much that its reads never find the socket empty).
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("BENCH_BIN", os.path.join(TARGET, "release"))
TLS_DIR = os.path.join(TARGET, "bench-tls")
PORT = int(os.environ.get("BENCH_PORT", "9250"))

# (workload, transport, size, msgs/req, easynet server, baseline servers)
ROWS = [
    ("tcp lines", "tcp", 1024, 1, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines", "tcp", 1024, 5, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines", "tcp", 10240, 1, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines", "tcp", 10240, 5, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines", "tcp", 65536, 1, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines", "tcp", 65536, 5, "easynet-mio-lines", ["mio-lines-string", "mio-lines"]),
    ("tcp lines as ByteString", "tcp", 1024, 5, "easynet-mio-bytestring", ["mio-lines"]),
    ("tcp lines as ByteString", "tcp", 10240, 5, "easynet-mio-bytestring", ["mio-lines"]),
    ("tcp raw bytes", "tcp", 1024, 1, "easynet-mio-raw", ["mio-raw"]),
    ("tcp raw bytes", "tcp", 1024, 5, "easynet-mio-raw", ["mio-raw"]),
    ("tcp raw bytes", "tcp", 65536, 1, "easynet-mio-raw", ["mio-raw"]),
    ("tls lines", "tls", 1024, 1, "easynet-mio-tls", ["mio-rustls-string", "mio-rustls", "tokio-rustls"]),
    ("tls lines", "tls", 1024, 5, "easynet-mio-tls", ["mio-rustls-string", "mio-rustls", "tokio-rustls"]),
    ("tls lines", "tls", 65536, 1, "easynet-mio-tls", ["mio-rustls-string", "mio-rustls", "tokio-rustls"]),
    ("tls lines as ByteString", "tls", 1024, 5, "easynet-mio-tls-bytestring", ["mio-rustls"]),
    ("tls lines as ByteString", "tls", 10240, 5, "easynet-mio-tls-bytestring", ["mio-rustls"]),
    ("tls lines as ByteString", "tls", 65536, 1, "easynet-mio-tls-bytestring", ["mio-rustls"]),
    ("tls lines as ByteString", "tls", 65536, 5, "easynet-mio-tls-bytestring", ["mio-rustls"]),
    ("udp", "udp", 1024, 1, "easynet-mio-udp", ["mio-udp", "mio-udp-mmsg"]),
    ("udp", "udp", 1024, 5, "easynet-mio-udp", ["mio-udp", "mio-udp-mmsg"]),
]


# The tokio driver's rows (the core's changes reach it too).
ROWS_TOKIO = [
    ("tcp lines", "tcp", 1024, 1, "easynet-tokio-lines", ["tokio-lines"]),
    ("tcp lines", "tcp", 1024, 5, "easynet-tokio-lines", ["tokio-lines"]),
    ("tcp lines", "tcp", 65536, 1, "easynet-tokio-lines", ["tokio-lines"]),
    ("tcp raw bytes", "tcp", 1024, 1, "easynet-tokio-raw", ["tokio-raw"]),
    ("tcp raw bytes", "tcp", 65536, 1, "easynet-tokio-raw", ["tokio-raw"]),
    ("tls lines", "tls", 1024, 5, "easynet-tokio-tls", ["tokio-rustls"]),
    ("tls lines", "tls", 65536, 1, "easynet-tokio-tls", ["tokio-rustls"]),
    ("udp", "udp", 1024, 1, "easynet-tokio-udp", ["tokio-udp"]),
    ("udp", "udp", 1024, 5, "easynet-tokio-udp", ["tokio-udp"]),
    ("udp async handler", "udp", 1024, 1, "easynet-tokio-udp-async", ["tokio-udp"]),
    ("udp async handler", "udp", 1024, 5, "easynet-tokio-udp-async", ["tokio-udp"]),
]


def requests_for(size):
    """(N1, N2) requests per connection: enough messages that the difference dominates."""
    if size >= 65536:
        return 100, 300
    if size >= 10240:
        return 300, 900
    return 1000, 3000


def start(prefix, impl):
    proc = subprocess.Popen(
        prefix + [os.path.join(BIN, "bench-server"), impl, "--port", str(PORT), "--tls-dir", TLS_DIR],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise RuntimeError(f"{impl} did not start: {line!r}")
    return proc


def load(transport, size, pipeline, requests, conns):
    out = subprocess.run(
        [os.path.join(BIN, "loadgen"), "--addr", f"127.0.0.1:{PORT}", "--transport", transport,
         "--size", str(size), "--pipeline", str(pipeline), "--conns", str(conns),
         "--requests", str(requests), "--tls-dir", TLS_DIR],
        capture_output=True, text=True, timeout=1800, check=True,
    ).stdout
    r = {k: float(v) for k, v in (kv.split("=") for kv in out.split())}
    if r["errors"]:
        raise RuntimeError(f"load errors: {out}")
    return r["msgs"]


def stop(proc):
    # Under strace the server is strace's child: signal it, not strace (which would detach).
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if os.path.basename(proc.args[0]) == "strace" and children:
        os.kill(int(children[0]), signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def callgrind_ir(impl, transport, size, pipeline, requests, conns):
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cg.out")
        proc = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], impl)
        try:
            msgs = load(transport, size, pipeline, requests, conns)
        finally:
            stop(proc)
        keep = os.environ.get("CALLGRIND_KEEP")  # a directory to keep the output files in
        if keep:
            for name in os.listdir(d):
                shutil.copy(os.path.join(d, name), os.path.join(keep, f"{impl}-{size}-{pipeline}-{name}"))
        total = waits = 0
        for name in os.listdir(d):  # one file per thread with --separate-threads; one here
            total = max(total, read_total(os.path.join(d, name)))
            waits += count_calls(os.path.join(d, name), "epoll_wait")
        return (total, waits), msgs


def read_total(path):
    with open(path) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return 0


def count_calls(path, function):
    """Calls of `function` in a callgrind output file (its `cfn=` / `calls=` lines)."""
    names, callee, calls = {}, None, 0
    with open(path) as f:
        for line in f:
            if line.startswith(("fn=", "cfn=")):
                key, _, rest = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
                if m:
                    if m.group(2):
                        names[m.group(1)] = m.group(2)
                    name = names.get(m.group(1), "")
                else:
                    name = rest
                if key == "cfn":
                    callee = name
            elif line.startswith("calls=") and callee is not None:
                if callee == function:
                    calls += int(line[6:].split()[0])
                callee = None
    return calls


SYSCALLS = ["recvfrom", "sendto", "recvmsg", "recvmmsg", "sendmmsg", "writev", "readv", "epoll_wait", "read", "write"]


def perf_syscalls(impl, transport, size, pipeline, requests, conns):
    """System calls the server makes under the load (perf's syscall tracepoints)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "perf.out")
        proc = start([], impl)
        events = ["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{c}" for c in SYSCALLS]
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-o", out, "-e", ",".join(events),
                                 "-p", str(proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            import time
            time.sleep(0.3)  # perf attached
            msgs = load(transport, size, pipeline, requests, conns)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=30)
            stop(proc)
        calls = {}
        with open(out) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) >= 3 and parts[0].isdigit():
                    name = parts[2].split(":")[-1].replace("sys_enter_", "")
                    calls["total" if name == "sys_enter" else name] = int(parts[0])
        return calls, msgs


def per_msg(measure, impl, row, conns):
    _, transport, size, pipeline, _, _ = row
    n1, n2 = requests_for(size)
    a, m1 = measure(impl, transport, size, pipeline, n1, conns)
    b, m2 = measure(impl, transport, size, pipeline, n2, conns)
    if isinstance(a, dict):
        diff = {k: (b.get(k, 0) - a.get(k, 0)) / (m2 - m1) for k in set(a) | set(b)}
        return {k: v for k, v in diff.items() if v >= 0.05}
    return tuple((y - x) / (m2 - m1) for x, y in zip(a, b))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", metavar="REGEX", help="rows whose 'workload size msgs/req' matches, e.g. 'tls|udp'")
    ap.add_argument("--impls", metavar="REGEX", help="only servers whose name matches")
    ap.add_argument("--driver", choices=["mio", "tokio"], default="mio", help="which driver's rows")
    ap.add_argument("--conns", type=int, default=1, help="connections (1: every message takes the same path, so counts repeat)")
    ap.add_argument("--rounds", type=int, default=3, help="measurements per server; the median is shown")
    ap.add_argument("--syscalls", action="store_true", help="also count system calls per message (strace)")
    a = ap.parse_args()
    subprocess.run([os.path.join(BIN, "bench-server"), "gen-cert", TLS_DIR], check=True)
    rows = [r for r in (ROWS if a.driver == "mio" else ROWS_TOKIO) if not a.rows or re.search(a.rows, f"{r[0]} {r[2] // 1024} KiB {r[3]}")]
    print("| workload | size | msgs/req | server | instructions/msg, median (min–max) | waits/msg under valgrind" + (" | syscalls/msg" if a.syscalls else "") + " |")
    print("|---|---|---|---|---|---" + ("|---" if a.syscalls else "") + "|")
    for row in rows:
        name, _, size, pipeline, ours, theirs = row
        for impl in [ours] + theirs:
            if a.impls and not re.search(a.impls, impl):
                continue
            runs = sorted(per_msg(callgrind_ir, impl, row, a.conns) for _ in range(a.rounds))
            ir, waits = runs[len(runs) // 2]
            irs = [r[0] for r in runs]
            spread = f" ({irs[0]:.0f}–{irs[-1]:.0f})" if len(irs) > 1 else ""
            cells = [name, f"{size // 1024} KiB", str(pipeline), impl, f"{ir:.0f}{spread}", f"{waits:.2f}"]
            if a.syscalls:
                runs = [per_msg(perf_syscalls, impl, row, a.conns) for _ in range(a.rounds)]
                calls = {k: sorted(r.get(k, 0.0) for r in runs)[len(runs) // 2] for k in runs[0]}
                calls = {k: v for k, v in calls.items() if v >= 0.05}
                total = calls.pop("total", 0.0)
                top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1]))
                cells.append(f"{total:.2f} ({top})")
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
