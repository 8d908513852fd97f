#!/usr/bin/env python3
"""Soak: minutes of mixed traffic through alknet, sampling RSS and fd counts (issue 8).

usage: bench/soak.py PATH/TO/alknet [SECONDS]     (default 600; not part of the test run)

Two client/server pairs on 127.0.0.1 (the fixture of tests/integration/faults_test.py):
  main:  alknet connect (SOCKS, -L, -R) <-> alknet serve tcp, never restarted. It carries bulk
         transfers (8 MiB echoes through -L), short SOCKS requests, -R requests, garbage on every
         port, and a fresh `alknet connect` that connects, tunnels once and exits every 15 s.
  churn: alknet connect <-> alknet serve tcp, the server SIGKILLed and restarted every 30 s while
         short requests run (the client's reconnect path, over and over).
Every 5 s it samples VmRSS and /proc/PID/fd of main-client, main-server and churn-client. The
first 60 s are warm-up (allocator arenas, buffer pools); drift compares the mean of the first
minute after warm-up with the mean of the last minute. Passes when RSS drift < 10% and the fd
counts are flat: the last minute never above the warm-up minute's maximum, nor the settled count
after traffic stops.
"""

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'integration'))
import faults_test as F  # noqa: E402
from harness import LOOP, TestFailure, free_port  # noqa: E402

SAMPLE_EVERY = 5
WARMUP = 60


class Loop(threading.Thread):
    """Runs fn() until stopped; counts ok/failed."""

    def __init__(self, name, fn, pause=0.0):
        super().__init__(daemon=True)
        self.name_, self.fn, self.pause = name, fn, pause
        self.ok = self.failed = 0
        self.stopping = False
        self.start()

    def run(self):
        while not self.stopping:
            try:
                if self.fn():
                    self.ok += 1
                else:
                    self.failed += 1
            except (OSError, TestFailure):
                self.failed += 1
            if self.pause:
                time.sleep(self.pause)


def bulk():
    with socket.create_connection((LOOP, F.E.lport), timeout=30) as s:
        s.settimeout(30)
        return F.echo_roundtrip(s, 8 << 20)


def short(socks_port):
    def fn():
        rep, s, _ = F.socks_connect(socks_port, F.E.echo.port, timeout=5)
        if not s:
            time.sleep(0.2)
            return False
        with s:
            s.settimeout(5)
            return F.echo_roundtrip(s, 2000)
    return fn


def remote():
    return F.forward_works(F.E.rport)


def garbage(rng):
    def fn():
        port = rng.choice([F.E.cli.socks, F.E.lport, F.E.srv.port, F.E.tls.port])
        F.blast_tcp(port, [rng.randbytes(rng.randrange(600)) for _ in range(50)], workers=2)
        return True
    return fn


def fresh_client():
    c = F.Client(f'fresh-{random.randrange(1 << 30)}', F.E.srv)
    try:
        rep, s, _ = F.socks_connect(c.socks, F.E.echo.port)
        ok = bool(s) and F.echo_roundtrip(s, 1000)
        if s:
            s.close()
        return ok
    finally:
        c.stop()
        os.unlink(c.log_path)
        time.sleep(15)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    duration = int(sys.argv[2]) if len(sys.argv) > 2 else 600
    F.raise_nofile()
    F.WORK = tempfile.mkdtemp(prefix='alknet-soak-')
    F.setup()
    churn_srv = F.Server('churn-srv', 'tcp')
    churn_cli = F.Client('churn-cli', churn_srv)
    procs = {'main-client': F.E.cli, 'main-server': F.E.srv, 'churn-client': churn_cli}
    rng = random.Random(1)

    def kill_loop():
        time.sleep(30)
        churn_srv.restart()
        return True

    loops = [Loop('bulk', bulk), Loop('short', short(F.E.cli.socks)), Loop('remote', remote, 0.05),
             Loop('garbage', garbage(rng), 0.5), Loop('fresh-client', fresh_client),
             Loop('churn-short', short(churn_cli.socks), 0.05), Loop('churn-kill', kill_loop)]
    samples = []  # (t, {name: (rss, fds)})
    t0 = time.monotonic()
    print(f'{"t":>5} ' + ' '.join(f'{n + " RSS KiB":>22} {"fds":>4}' for n in procs), flush=True)
    try:
        while time.monotonic() - t0 < duration:
            time.sleep(SAMPLE_EVERY)
            t = time.monotonic() - t0
            row = {n: (p.rss(), p.fds()) for n, p in procs.items()}
            samples.append((t, row))
            print(f'{t:5.0f} ' + ' '.join(f'{r:>22} {f:>4}' for r, f in row.values()), flush=True)
            for n, p in procs.items():
                if not p.alive():
                    raise TestFailure(f'{n} died:\n{p.log()[-2000:]}')
    finally:
        for lp in loops:
            lp.stopping = True
        for lp in loops:
            lp.join(60)
    # Quiet again: fds must settle to what they were at the end of warm-up.
    time.sleep(5)
    end = {n: (p.rss(), p.fds()) for n, p in procs.items()}
    failed = []
    print('\ntraffic: ' + ', '.join(f'{lp.name_} {lp.ok} ok/{lp.failed} failed' for lp in loops))
    warm = [r for t, r in samples if WARMUP <= t < WARMUP + 60]
    last = [r for t, r in samples if t >= samples[-1][0] - 60]
    for n in procs:
        r_warm = statistics.mean(r[n][0] for r in warm)
        r_last = statistics.mean(r[n][0] for r in last)
        drift = (r_last - r_warm) / r_warm * 100
        fds_all = [r[n][1] for _, r in samples]
        # fds move with traffic and with the churn client's connected/disconnected state (3 fds
        # per session), so "flat" means: the last minute never goes above what the warm-up minute
        # reached, and once traffic stops the count is within that range.
        warm_max = max(r[n][1] for r in warm)
        last_max = max(r[n][1] for r in last)
        print(f'{n}: RSS {r_warm:.0f} -> {r_last:.0f} KiB (drift {drift:+.1f}%), max {max(r[n][0] for _, r in samples)} KiB; '
              f'fds during traffic {min(fds_all)}-{max(fds_all)}, warm-up max {warm_max}, last-minute max {last_max}, '
              f'settled at end {end[n][1]}')
        if drift >= 10:
            failed.append(f'{n} RSS drift {drift:+.1f}%')
        if last_max > warm_max or end[n][1] > warm_max:
            failed.append(f'{n} fds grew: warm-up max {warm_max}, last minute max {last_max}, end {end[n][1]}')
    churn_srv.stop()
    churn_cli.stop()
    F.teardown()
    print('soak: ' + ('PASS' if not failed else 'FAIL ' + '; '.join(failed)) + f' (logs in {F.WORK})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
