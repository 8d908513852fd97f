"""Helpers shared by the integration test scripts (connect_openssh_test.py, transports_test.py).

The scripts are run as `python3 path/to/script.py BINARY`, so this directory is on sys.path and
they import from here with `from harness import ...`.
"""

import hashlib
import http.server
import os
import random
import signal
import socket
import subprocess
import threading
import time
import traceback

LOOP = '127.0.0.1'
DEST_PORTS = set()   # destination ports the tests used; shared with the scripts (mutated, never rebound)


class TestFailure(Exception):
    pass


def check(cond, why):
    if not cond:
        raise TestFailure(why)


# ---------------------------------------------------------------------------------------
# small helpers

def free_stable_port(kind=socket.SOCK_STREAM):
    """A free port below the kernel's ephemeral range, for a server that a test kills and
    restarts on the same port: an ephemeral one can be taken by any new socket on the machine
    in the gap between the two."""
    lo = 32768
    try:
        lo = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rnd = random.Random()
    for _ in range(200):
        p = rnd.randrange(max(1024, lo - 12000), lo)
        try:
            for k in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(type=k) as s:
                    s.bind((LOOP, p))
            return p
        except OSError:
            continue
    return free_port(kind)


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port free for both TCP and UDP (quic listens on UDP, tls on TCP)."""
    for _ in range(50):
        with socket.socket(type=kind) as s:
            s.bind((LOOP, 0))
            p = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(type=other) as s:
                s.bind((LOOP, p))
            return p
        except OSError:
            continue
    raise TestFailure('no free port')


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)


def keygen(path, *extra):
    run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'alknet-test', '-f', path, *extra], check=True)
    return path


def fd_count(pid):
    try:
        return len(os.listdir(f'/proc/{pid}/fd'))
    except OSError:
        return -1


def sha(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for b in iter(lambda: f.read(1 << 20), b''):
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# peers

class AlknetLog:
    """Log reading and stopping for an alknet process: needs self.name, self.proc, self.log_path
    and self.logf (the open log file the process writes to)."""

    def stop(self, timeout=5):
        """SIGTERM, SIGKILL if it has not exited after timeout s; closes the log; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.logf.close()
        return self.proc.returncode

    def log(self):
        with open(self.log_path, 'rb') as f:
            return f.read().decode(errors='replace')

    def wait_log(self, needle, timeout, count=1):
        ok = wait_until(lambda: self.log().count(needle) >= count or self.proc.poll() is not None, timeout)
        if not ok or self.log().count(needle) < count:
            raise TestFailure(f'alknet[{self.name}] log lacks {needle!r} x{count} after {timeout}s; '
                              f'rc={self.proc.poll()} log:\n{self.log()[-3000:]}')


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class HttpServer:
    def __init__(self, root, host=LOOP):
        handler = lambda *a, **kw: QuietHandler(*a, directory=root, **kw)  # noqa: E731
        http.server.ThreadingHTTPServer.daemon_threads = True
        self.srv = http.server.ThreadingHTTPServer((host, 0), handler)
        self.port = self.srv.server_address[1]
        DEST_PORTS.add(self.port)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


# ---------------------------------------------------------------------------------------
# SOCKS

def recv_exact(s, n):
    out = b''
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise TestFailure(f'connection closed after {len(out)} of {n} bytes')
        out += b
    return out


# ---------------------------------------------------------------------------------------
# runner

def run_test(t, name, failed):
    """Runs one test function, prints PASS/FAIL, appends name to failed on failure."""
    t0 = time.monotonic()
    try:
        t()
        print(f'PASS {name} ({time.monotonic() - t0:.1f}s)', flush=True)
    except TestFailure as e:
        failed.append(name)
        print(f'FAIL {name}: {e}', flush=True)
    except Exception as e:  # noqa: BLE001 - a crashed test is a failed test
        failed.append(name)
        print(f'FAIL {name}: {type(e).__name__}: {e}', flush=True)
        traceback.print_exc()
