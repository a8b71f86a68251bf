#!/usr/bin/env python3
"""Runs easynet (both drivers) and the hand-written baselines in one run, alternating, on the
same settings, and prints the BENCHMARKS.md table with the ratio easynet / baseline.

    cargo build --release -p easynet-bench && python3 bench/run.py [--seconds 2] [--rounds 2] [--quick] [--rows REGEX] [--no-idle]
    python3 bench/run.py --control --no-idle [--rows REGEX] [--rounds 5]   # A/A: the noise floor
    python3 bench/run.py --scaling [--seconds 2] [--rounds 3]      # 1 vs 2 workers, mio and tokio
    python3 bench/run.py --idle-only --idle-conns 1000,10000,100000 --sources 4 [--idle-shards S]

Every server is single-threaded; the load generator is a single-threaded tokio client on the
same machine. The mio baselines (`mio-lines`, `mio-raw`, `mio-rustls`, `mio-udp`, `mio-udp-mmsg`) are the
strengthened hand-written loops of `bench/src/bin/bench-server/mio_baseline.rs`; easynet's mio
TLS row is compared with both the mio + rustls loop and tokio-rustls. Rows are like for like:
easynet's `String` line rows against the loops that hand a `String` per line to a handler too
(`mio-lines-string`, `mio-rustls-string`; tokio-util's `LinesCodec` makes `String`s as well),
its `ByteString` rows against the loops that make none. With `taskset` available (util-linux) the server is pinned to CPU 0 and the load
generator to CPU 1. Each row runs `rounds` rounds of easynet and its baseline back to back
(A B, B A, A B, ...) and reports the median of each (msgs/s, CPU), and the ratio as the median
of the rounds' own ratios with their range: the machine's speed drifts (kernel time per message
by up to 2x from one minute to the next), and two runs of one round share its state.
"CPU ratio" is the same median for server CPU per message (below 1.0: easynet uses less).
`--control` runs, instead, each mio baseline against itself (A/A), paired the same way: how
far from 1.0 a row's ratio lands by noise alone.

Idle connections beyond what one process may open (`ulimit -Hn`) are spread over S servers of
the same kind, each on its own port (PORT + k) with its own `loadgen idle`, all held at once;
the memory per connection is the sum of the servers' RSS growth over all the connections.
"""

import argparse
import os
import resource
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
BIN = os.environ.get("BENCH_BIN", os.path.join(TARGET, "release"))
TLS_DIR = os.path.join(TARGET, "bench-tls")
PORT = int(os.environ.get("BENCH_PORT", "9150"))
IDLE_PER_PROCESS = 16000  # connections per server (and load generator) when they are sharded
IDLE_TIMEOUT = 600  # seconds for one idle measurement, sharded or not
PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cpu, argv):
    return (["taskset", "-c", str(cpu)] if PIN and cpu is not None else []) + argv


def more_files():
    """Children may open as many files as the hard limit allows (idle-connection runs)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start(impl, workers=None, cpu=0, port=PORT):
    extra = ["--workers", str(workers)] if workers else []
    proc = subprocess.Popen(
        pinned(cpu, [os.path.join(BIN, "bench-server"), impl, "--port", str(port), "--tls-dir", TLS_DIR] + extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=more_files,
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


def cpu_times(pid):
    """(user, system) CPU seconds the process has used (from /proc; 0 where there is none)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except OSError:
        return 0.0, 0.0


def load(impl, transport, size, pipeline, conns, seconds, workers=None, threads=1):
    # With several server workers nothing is pinned: they need both CPUs.
    proc = start(impl, workers, cpu=None if workers else 0)
    try:
        before = cpu_times(proc.pid)
        out = subprocess.run(
            pinned(None if workers else 1,
                   [os.path.join(BIN, "loadgen"), "--addr", f"127.0.0.1:{PORT}", "--transport", transport,
                    "--size", str(size), "--pipeline", str(pipeline), "--conns", str(conns),
                    "--seconds", str(seconds), "--tls-dir", TLS_DIR, "--threads", str(threads)]),
            capture_output=True, text=True, timeout=seconds + 60, check=True,
        ).stdout
        after = cpu_times(proc.pid)
    finally:
        stop(proc)
    r = parse(out)
    # Server CPU per message: far steadier than throughput on a shared 2-core machine. Split
    # into user (the server's own code) and system (the kernel's socket work, which the
    # server's choice of system calls moves).
    msgs = r["msgs_per_s"] * seconds
    per_msg = lambda s: s * 1e6 / msgs if msgs else float("nan")
    r["user_us_per_msg"] = per_msg(after[0] - before[0])
    r["sys_us_per_msg"] = per_msg(after[1] - before[1])
    r["cpu_us_per_msg"] = r["user_us_per_msg"] + r["sys_us_per_msg"]
    return r


def idle(impl, conns, sources=1):
    proc = start(impl)
    try:
        out = subprocess.run(
            [os.path.join(BIN, "loadgen"), "idle", "--addr", f"127.0.0.1:{PORT}", "--conns", str(conns),
             "--pid", str(proc.pid), "--sources", str(sources)],
            capture_output=True, text=True, timeout=IDLE_TIMEOUT, check=True, preexec_fn=more_files,
        ).stdout
    finally:
        stop(proc)
    return held(parse(out), conns)


def held(r, conns):
    """The load generator held every connection and the server had a socket open for each."""
    if r["conns"] != conns or r["server_sockets"] < conns:
        raise RuntimeError(f"{r['conns']:.0f} connections held, {r['server_sockets']:.0f} server sockets")
    return r


def idle_shards(conns, forced):
    """Servers for `conns` idle connections: one while a process may open them all, else
    enough that each server and its load generator stays well under the open-file hard limit."""
    if forced:
        return forced
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or conns + 100 <= hard:
        return 1
    return -(-conns // min(IDLE_PER_PROCESS, hard - 100))


def idle_sharded(impl, conns, shards, sources):
    """`conns` idle connections over `shards` servers on PORT, PORT + 1, ..., each with its own
    load generator; all are connected before any measures, so all are held at once."""
    sizes = [conns // shards + (k < conns % shards) for k in range(shards)]
    procs = []
    watchdog = threading.Timer(IDLE_TIMEOUT, lambda: [p.kill() for p in procs])
    watchdog.daemon = True
    watchdog.start()
    failed = lambda k, err: RuntimeError(f"loadgen {k}: " + (
        f"killed after {IDLE_TIMEOUT} s" if watchdog.finished.is_set() else err.strip() or "no output"))
    try:
        servers = []
        for k in range(shards):
            servers.append(start(impl, port=PORT + k))
            procs.append(servers[-1])
        gens = []
        for k, (n, server) in enumerate(zip(sizes, servers)):
            gens.append(subprocess.Popen(
                [os.path.join(BIN, "loadgen"), "idle", "--addr", f"127.0.0.1:{PORT + k}", "--conns", str(n),
                 "--pid", str(server.pid), "--sources", str(sources), "--hold"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=more_files))
            procs.append(gens[-1])
        for k, g in enumerate(gens):
            if not g.stdout.readline().startswith("connected="):
                g.kill()
                raise failed(k, g.stderr.read())
        for g in gens:  # every connection is open: each load generator now measures its server
            g.stdin.write("\n")
            g.stdin.flush()
        runs = []
        for k, (g, n) in enumerate(zip(gens, sizes)):
            out, err = g.communicate()
            if g.returncode:
                raise failed(k, err)
            runs.append(held(parse(out), n))
    finally:
        watchdog.cancel()
        for p in procs[shards:]:
            p.kill()
            p.wait()
        for p in procs[:shards]:
            stop(p)
    total = {k: sum(r[k] for r in runs) for k in ("rss_before_kib", "rss_after_kib", "conns", "server_sockets")}
    total["kib_per_conn"] = (total["rss_after_kib"] - total["rss_before_kib"]) / conns
    return total


def alternating(rounds, first, second, run):
    """`rounds` rounds of `run(first)` and `run(second)` back to back, which one goes first
    alternating (A B, B A, ...): a round's two runs share the machine's state of the moment
    (this shared 2-core machine drifts by up to 2x in kernel time from one minute to the
    next), so the round's own ratio cancels it. Returns the runs of each, round by round."""
    runs = ([], [])  # by position: `first` and `second` may be the same server (a control row)
    for k in range(rounds):
        for side in ((0, 1) if k % 2 == 0 else (1, 0)):
            runs[side].append(run((first, second)[side]))
    return runs


def paired(a, b, key):
    """Median, lowest and highest of the rounds' ratios a / b for `key` (easynet / baseline,
    or 2 workers / 1), from runs listed round by round; each round's two ran back to back."""
    ratios = [x[key] / y[key] if y[key] else float("nan") for x, y in zip(a, b)]
    return statistics.median(ratios), min(ratios), max(ratios)


def controls(pairs):
    """A/A rows: each mio baseline of `pairs` against itself, once per setting. The spread of
    their ratios around 1.0 is what noise alone gives a row, measured the same way."""
    seen, rows = set(), []
    for (name, _, theirs, label, transport, size, p) in pairs:
        if ", mio" in name and (theirs, size, p) not in seen:
            seen.add((theirs, size, p))
            rows.append((f"control: {theirs} against itself", theirs, theirs, label, transport, size, p))
    return rows


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
    ap.add_argument("--idle-only", action="store_true", help="only the idle-connection memory table")
    ap.add_argument("--idle-conns", default="1000,10000", help="idle table sizes, comma-separated")
    ap.add_argument("--sources", type=int, default=1,
                    help="idle: connect from 127.0.0.1..K (more connections than one address has ports)")
    ap.add_argument("--idle-shards", type=int, default=0, metavar="S",
                    help="idle: S server processes (and load generators) per size; 0: as many as the open-file limit needs")
    ap.add_argument("--scaling", action="store_true", help="only the 1 vs 2 worker table (mio workers, tokio multi-thread)")
    ap.add_argument("--control", action="store_true",
                    help="only control rows: each mio baseline of the selected rows against itself, paired the same way")
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: every `finally` stops its servers
    subprocess.run([os.path.join(BIN, "bench-server"), "gen-cert", TLS_DIR], check=True)
    if a.scaling:
        return scaling(a)
    if a.idle_only:
        return idle_table(a)

    sizes = [1024] if a.quick else [1024, 10 * 1024, 64 * 1024]
    # 64 KiB exceeds a UDP datagram; 10 KiB x 5 x 8 peers overflows the default 208 KiB
    # socket buffers of both servers (the kernel drops), so it is run unpipelined only.
    udp_rows = [(1024, 1), (1024, 5)] + ([] if a.quick else [(10 * 1024, 1)])
    pairs = []
    for size in sizes:
        for p in (1, 5):
            pairs.append(("tcp lines, tokio", "easynet-tokio-lines", "tokio-lines", "Framed<LinesCodec>", "tcp", size, p))
            # Lines as `String`: each line copied into its own `String`, on both sides.
            pairs.append(("tcp lines, mio", "easynet-mio-lines", "mio-lines-string", "hand-written mio, String per line", "tcp", size, p))
            # The same echo with lines as `ByteString` (no copy, like the hand-written loop).
            pairs.append(("tcp lines as ByteString, tokio", "easynet-tokio-bytestring", "tokio-lines", "Framed<LinesCodec>", "tcp", size, p))
            pairs.append(("tcp lines as ByteString, mio", "easynet-mio-bytestring", "mio-lines", "hand-written mio", "tcp", size, p))
            pairs.append(("tcp raw bytes, tokio", "easynet-tokio-raw", "tokio-raw", "raw tokio echo", "tcp", size, p))
            pairs.append(("tcp raw bytes, mio", "easynet-mio-raw", "mio-raw", "hand-written mio", "tcp", size, p))
            pairs.append(("tls lines, tokio", "easynet-tokio-tls", "tokio-rustls", "tokio-rustls + LinesCodec", "tls", size, p))
            pairs.append(("tls lines, mio", "easynet-mio-tls", "mio-rustls-string", "hand-written mio + rustls, String per line", "tls", size, p))
            pairs.append(("tls lines, mio", "easynet-mio-tls", "tokio-rustls", "tokio-rustls + LinesCodec", "tls", size, p))
            # Like-for-like with the mio + rustls loop, which makes no `String` either.
            pairs.append(("tls lines as ByteString, mio", "easynet-mio-tls-bytestring", "mio-rustls", "hand-written mio + rustls", "tls", size, p))
    for size, p in udp_rows:
        pairs.append(("udp, tokio", "easynet-tokio-udp", "tokio-udp", "raw tokio UDP", "udp", size, p))
        # The same echo as an async handler: a routine per datagram.
        pairs.append(("udp async handler, tokio", "easynet-tokio-udp-async", "tokio-udp", "raw tokio UDP", "udp", size, p))
        pairs.append(("udp, mio", "easynet-mio-udp", "mio-udp", "raw mio UDP", "udp", size, p))
        # Linux: the loop with batched system calls, as easynet's mio driver reads and sends.
        pairs.append(("udp, mio", "easynet-mio-udp", "mio-udp-mmsg", "mio UDP, recvmmsg + sendmmsg", "udp", size, p))

    if a.control:
        print("Control rows: the first server's columns are under \"easynet\", the second's under \"baseline\".\n")
    print(f"| workload | size | msgs/req | easynet msgs/s | baseline | baseline msgs/s | ratio | rounds' ratios | CPU ratio | server CPU µs/msg easynet / baseline | user + system µs/msg easynet / baseline | easynet MiB/s | p50/p99/max µs (easynet) | p50/p99/max µs (baseline) | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    if a.rows:
        pairs = [r for r in pairs if re.search(a.rows, f"{r[0]} {r[5] // 1024} KiB {r[6]}")]
    if a.control:
        pairs = controls(pairs)
    for (name, ours, theirs, label, transport, size, p) in pairs:
        runs_o, runs_t = alternating(a.rounds, ours, theirs,
                                     lambda impl: load(impl, transport, size, p, a.conns, a.seconds))
        o, t = summarize(runs_o), summarize(runs_t)
        ratio, low, high = paired(runs_o, runs_t, "msgs_per_s")
        cpu_ratio, _, _ = paired(runs_o, runs_t, "cpu_us_per_msg")
        errors = sum(r["errors"] for r in runs_o + runs_t)
        print(f"| {name} | {size // 1024} KiB | {p} | {o['msgs_per_s']:.0f} | {label} | {t['msgs_per_s']:.0f} | **{ratio:.2f}** | "
              f"{low:.2f}–{high:.2f} | {cpu_ratio:.2f} | "
              f"{o['cpu_us_per_msg']:.2f} / {t['cpu_us_per_msg']:.2f} | "
              f"{o['user_us_per_msg']:.2f} + {o['sys_us_per_msg']:.2f} / {t['user_us_per_msg']:.2f} + {t['sys_us_per_msg']:.2f} | {o['mib_per_s']:.1f} | {o['p50_us']:.0f}/{o['p99_us']:.0f}/{o['max_us']:.0f} | "
              f"{t['p50_us']:.0f}/{t['p99_us']:.0f}/{t['max_us']:.0f} | {errors:.0f} |", flush=True)

    if a.no_idle:
        return 0
    print()
    return idle_table(a)


def idle_table(a):
    sizes = [(int(c), idle_shards(int(c), a.idle_shards)) for c in a.idle_conns.split(",")]
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for conns, shards in sizes:
        if shards > 1:
            why = "--idle-shards" if a.idle_shards else f"`ulimit -Hn` is {hard} files per process"
            print(f"{conns} idle connections: {shards} servers × ≤{-(-conns // shards)} connections on ports "
                  f"{PORT}..{PORT + shards - 1}, one `loadgen idle` each, all held at once ({why}); "
                  "KiB per connection = sum of the servers' RSS growth / all connections.\n")
    print("| idle connections | server | KiB per connection | RSS before → after (KiB) | processes × connections | server sockets |")
    print("|---|---|---|---|---|---|")
    for conns, shards in sizes:
        for impl in ("easynet-tokio-lines", "tokio-lines", "easynet-mio-lines", "mio-lines"):
            split = f"{shards} × ≤{-(-conns // shards)}" if shards > 1 else "1"
            try:
                r = idle_sharded(impl, conns, shards, a.sources) if shards > 1 else idle(impl, conns, a.sources)
            except (subprocess.SubprocessError, RuntimeError) as e:
                # Usually the open-file limit (`ulimit -Hn`) of the server or the load generator.
                why = e.stderr if isinstance(e, subprocess.CalledProcessError) else str(e)
                print(f"| {conns} | {impl} | failed: {why.strip()[:120]} | | {split} | |", flush=True)
                continue
            sigma = "Σ " if shards > 1 else ""
            print(f"| {conns} | {impl} | {r['kib_per_conn']:.2f} | {sigma}{r['rss_before_kib']:.0f} → {r['rss_after_kib']:.0f} | "
                  f"{split} | {r['server_sockets']:.0f} |", flush=True)
    return 0


def scaling(a):
    """easynet with 1 and 2 workers: mio `workers(n)`, tokio's multi-thread runtime with n
    worker threads. Nothing pinned (the server may use both CPUs; the load generator runs
    on them too, with as many threads as the server has workers)."""
    conns = max(a.conns, 16)
    print(f"| server | workers | size | msgs/req | msgs/s | 2 workers / 1 (rounds' range) | server CPU µs/msg | p50/p99/max µs | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for impl, transport in (("easynet-mio-lines", "tcp"), ("easynet-tokio-lines", "tcp"),
                            ("easynet-mio-tls", "tls"), ("easynet-tokio-tls", "tls")):
        for size, p in ((1024, 1), (1024, 5)):
            if a.rows and not re.search(a.rows, f"{impl} {size // 1024} KiB {p}"):
                continue
            runs = dict(zip((1, 2), alternating(
                a.rounds, 1, 2, lambda w: load(impl, transport, size, p, conns, a.seconds, w, threads=w))))
            scale, low, high = paired(runs[2], runs[1], "msgs_per_s")
            for workers in (1, 2):
                r = summarize(runs[workers])
                errors = sum(x["errors"] for x in runs[workers])
                gain = f"**{scale:.2f}** ({low:.2f}–{high:.2f})" if workers == 2 else ""
                print(f"| {impl} | {workers} | {size // 1024} KiB | {p} | {r['msgs_per_s']:.0f} | {gain} | {r['cpu_us_per_msg']:.2f} | "
                      f"{r['p50_us']:.0f}/{r['p99_us']:.0f}/{r['max_us']:.0f} | {errors:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
