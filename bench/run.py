#!/usr/bin/env python3
"""Runs easynet (both drivers) and the hand-written baselines in one run, alternating, on the
same settings, and prints the BENCHMARKS.md table with the ratio easynet / baseline.

    cargo build --release -p easynet-bench && python3 bench/run.py [--seconds 2] [--rounds 2] [--quick] [--rows REGEX] [--no-idle]

Every server is single-threaded; the load generator is a single-threaded tokio client on the
same machine. The mio baselines (`mio-lines`, `mio-raw`, `mio-rustls`, `mio-udp`) are the
strengthened hand-written loops of `bench/src/bin/bench-server/mio_baseline.rs`; easynet's mio
TLS row is compared with both the mio + rustls loop and tokio-rustls. With `taskset` available (util-linux) the server is pinned to CPU 0 and the load
generator to CPU 1, which makes runs repeatable to a few percent. Each row runs easynet and its baseline `rounds` times each, alternating
(A B A B ...), and reports the median of each.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
BIN = os.path.join(TARGET, "release")
TLS_DIR = os.path.join(TARGET, "bench-tls")
PORT = 9150
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu, argv):
    return (["taskset", "-c", str(cpu)] if PIN else []) + argv


def start(impl):
    proc = subprocess.Popen(
        pinned(0, [os.path.join(BIN, "bench-server"), impl, "--port", str(PORT), "--tls-dir", TLS_DIR]),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = proc.stdout.readline()
    if not line.startswith("listening on"):
        proc.kill()
        raise RuntimeError(f"{impl} did not start: {line!r}")
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse(out):
    return {k: float(v) for k, v in (kv.split("=") for kv in out.split())}


def cpu_seconds(pid):
    """User + system CPU time the process has used (from /proc; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def load(impl, transport, size, pipeline, conns, seconds):
    proc = start(impl)
    try:
        before = cpu_seconds(proc.pid)
        out = subprocess.run(
            pinned(1, [os.path.join(BIN, "loadgen"), "--addr", f"127.0.0.1:{PORT}", "--transport", transport,
                       "--size", str(size), "--pipeline", str(pipeline), "--conns", str(conns),
                       "--seconds", str(seconds), "--tls-dir", TLS_DIR]),
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout
        cpu = cpu_seconds(proc.pid) - before
    finally:
        stop(proc)
    r = parse(out)
    # Server CPU per message: far steadier than throughput on a shared 2-core machine.
    msgs = r["msgs_per_s"] * seconds
    r["cpu_us_per_msg"] = cpu * 1e6 / msgs if msgs else float("nan")
    return r


def idle(impl, conns):
    proc = start(impl)
    try:
        out = subprocess.run(
            [os.path.join(BIN, "loadgen"), "idle", "--addr", f"127.0.0.1:{PORT}", "--conns", str(conns),
             "--pid", str(proc.pid)],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
    finally:
        stop(proc)
    return parse(out)


def summarize(runs):
    med = lambda k: statistics.median(r[k] for r in runs)
    return {k: med(k) for k in runs[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="1 KiB rows only")
    ap.add_argument("--rows", metavar="REGEX", help="only rows whose 'workload size msgs/req' matches, e.g. 'raw|udp'")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connection memory table")
    a = ap.parse_args()
    subprocess.run([os.path.join(BIN, "bench-server"), "gen-cert", TLS_DIR], check=True)

    sizes = [1024] if a.quick else [1024, 10 * 1024, 64 * 1024]
    # 64 KiB exceeds a UDP datagram; 10 KiB x 5 x 8 peers overflows the default 208 KiB
    # socket buffers of both servers (the kernel drops), so it is run unpipelined only.
    udp_rows = [(1024, 1), (1024, 5)] + ([] if a.quick else [(10 * 1024, 1)])
    pairs = []
    for size in sizes:
        for p in (1, 5):
            pairs.append(("tcp lines, tokio", "easynet-tokio-lines", "tokio-lines", "Framed<LinesCodec>", "tcp", size, p))
            pairs.append(("tcp lines, mio", "easynet-mio-lines", "mio-lines", "hand-written mio", "tcp", size, p))
            pairs.append(("tcp raw bytes, tokio", "easynet-tokio-raw", "tokio-raw", "raw tokio echo", "tcp", size, p))
            pairs.append(("tcp raw bytes, mio", "easynet-mio-raw", "mio-raw", "hand-written mio", "tcp", size, p))
            pairs.append(("tls lines, tokio", "easynet-tokio-tls", "tokio-rustls", "tokio-rustls + LinesCodec", "tls", size, p))
            pairs.append(("tls lines, mio", "easynet-mio-tls", "mio-rustls", "hand-written mio + rustls", "tls", size, p))
            pairs.append(("tls lines, mio", "easynet-mio-tls", "tokio-rustls", "tokio-rustls + LinesCodec", "tls", size, p))
    for size, p in udp_rows:
        pairs.append(("udp, tokio", "easynet-tokio-udp", "tokio-udp", "raw tokio UDP", "udp", size, p))
        pairs.append(("udp, mio", "easynet-mio-udp", "mio-udp", "raw mio UDP", "udp", size, p))

    print(f"| workload | size | msgs/req | easynet msgs/s | baseline | baseline msgs/s | ratio | server CPU µs/msg easynet / baseline | easynet MiB/s | p50/p99/max µs (easynet) | p50/p99/max µs (baseline) | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    if a.rows:
        pairs = [r for r in pairs if re.search(a.rows, f"{r[0]} {r[5] // 1024} KiB {r[6]}")]
    for (name, ours, theirs, label, transport, size, p) in pairs:
        results = {}
        for _ in range(a.rounds):
            for impl in (ours, theirs):
                results.setdefault(impl, []).append(load(impl, transport, size, p, a.conns, a.seconds))
        o, t = summarize(results[ours]), summarize(results[theirs])
        ratio = o["msgs_per_s"] / t["msgs_per_s"] if t["msgs_per_s"] else float("nan")
        errors = sum(r["errors"] for r in results[ours] + results[theirs])
        print(f"| {name} | {size // 1024} KiB | {p} | {o['msgs_per_s']:.0f} | {label} | {t['msgs_per_s']:.0f} | **{ratio:.2f}** | "
              f"{o['cpu_us_per_msg']:.2f} / {t['cpu_us_per_msg']:.2f} | {o['mib_per_s']:.1f} | {o['p50_us']:.0f}/{o['p99_us']:.0f}/{o['max_us']:.0f} | "
              f"{t['p50_us']:.0f}/{t['p99_us']:.0f}/{t['max_us']:.0f} | {errors:.0f} |", flush=True)

    if a.no_idle:
        return 0
    print()
    print("| idle connections | server | KiB per connection | RSS before → after (KiB) |")
    print("|---|---|---|---|")
    for conns in (1000, 10000):
        for impl in ("easynet-tokio-lines", "tokio-lines", "easynet-mio-lines", "mio-lines"):
            r = idle(impl, conns)
            print(f"| {conns} | {impl} | {r['kib_per_conn']:.2f} | {r['rss_before_kib']:.0f} → {r['rss_after_kib']:.0f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
