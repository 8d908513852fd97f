"""Helpers shared by the integration test scripts (connect_openssh_test.py, transports_test.py, faults_test.py, ...).

The scripts are run as `python3 path/to/script.py BINARY`, so this directory is on sys.path and
they import from here with `from harness import ...`.
"""

import hashlib
import http.server
import os
import random
import re
import signal
import shutil
import socket
import struct
import subprocess
import threading
import time
import traceback

LOOP = '127.0.0.1'
DEST_PORTS = set()   # destination ports the tests used; shared with the scripts (mutated, never rebound)
# Ports free_port() handed out (alknet's listeners, which its logs name): a destination never
# gets one of them, and free_port() never hands out a destination's, or a log naming its own
# port would look like a leaked destination once the kernel reuses the number.
USED_PORTS = set()


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
        if p in DEST_PORTS:
            continue
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        try:
            with socket.socket(type=other) as s:
                s.bind((LOOP, p))
            USED_PORTS.add(p)
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


def port_open(port, host=LOOP):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# fixtures

def make_keys(work, e):
    """Ed25519 host and user keys, an authorized_keys with the user key, and a self-signed P-256
    certificate for localhost/127.0.0.1; sets e.host_key, e.user_key, e.auth_keys, e.cert, e.key."""
    e.host_key = keygen(os.path.join(work, 'host_ed25519'))
    e.user_key = keygen(os.path.join(work, 'id_ed25519'))
    e.auth_keys = os.path.join(work, 'authorized_keys')
    shutil.copy(e.user_key + '.pub', e.auth_keys)
    e.cert, e.key = os.path.join(work, 'cert.pem'), os.path.join(work, 'key.pem')
    run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
         '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '2',
         '-keyout', e.key, '-out', e.cert], check=True)


def random_files(www, sizes):
    """Creates the directory www with a file of random bytes per (name, size); returns {name: sha256}."""
    os.makedirs(www)
    files = {}
    for name, size in sizes:
        p = os.path.join(www, name)
        with open(p, 'wb') as f:
            f.write(os.urandom(size))
        files[name] = sha(p)
    return files


# ---------------------------------------------------------------------------------------
# peers

class Stoppable:
    """A with block stops it (self.stop()) on the way out."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class AlknetLog(Stoppable):
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
        for _ in range(50):
            self.srv = http.server.ThreadingHTTPServer((host, 0), handler)
            self.port = self.srv.server_address[1]
            if self.port not in USED_PORTS:
                break
            self.srv.server_close()
        DEST_PORTS.add(self.port)
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


class TcpListener(Stoppable):
    """A threaded TCP server on 127.0.0.1 (a free port): accepts in a daemon thread and runs
    handler(conn) per connection in a daemon thread of its own, closing conn when it returns
    (an OSError from the handler ends that connection quietly). .port, .accepted (a count);
    close() (also stop(), and leaving a with block) stops accepting and shuts every live
    connection down: its handler sees EOF or an error and returns, and its thread closes it."""

    def __init__(self, handler, backlog=128):
        self.handler = handler
        self.accepted = 0
        self.live = set()
        self.closed = False
        self.lock = threading.Lock()
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((LOOP, 0))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.closed:
                    c.close()
                    return
                self.accepted += 1
                self.live.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            self.handler(c)
        except OSError:
            pass
        finally:
            with self.lock:
                self.live.discard(c)
            c.close()

    def close(self):
        with self.lock:
            self.closed = True
            live = list(self.live)
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self.lsock.close()
        for c in live:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self):
        self.close()


# ---------------------------------------------------------------------------------------
# SOCKS / curl

def recv_exact(s, n):
    out = b''
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise TestFailure(f'connection closed after {len(out)} of {n} bytes')
        out += b
    return out


def recv_all(s, chunk=65536):
    """Everything s delivers until EOF."""
    data = b''
    while True:
        b = s.recv(chunk)
        if not b:
            return data
        data += b


def after_eof_handler(s):
    """Reads to EOF, then answers with the byte count and sha256 (a half-close probe, an
    upload's check); a TcpListener handler."""
    data = recv_all(s)
    s.sendall(f'got {len(data)} {hashlib.sha256(data).hexdigest()}\n'.encode())
    s.shutdown(socket.SHUT_WR)


def socks5_request(socks_port, cmd=1, host=LOOP, port=80, timeout=10, pipelined=False, debug=False):
    """One SOCKS5 request without authentication (CONNECT by default) for an IPv4 address or a
    name: returns (rep, sock or None, elapsed); rep -1 = the connection failed or closed without a
    reply (debug: print why). Raises OSError when nothing listens on socks_port. pipelined: the
    greeting and the request go out in one write, before the method reply."""
    t0 = time.monotonic()
    s = socket.create_connection((LOOP, socks_port), timeout=timeout)
    s.settimeout(timeout)
    try:
        addr = b'\x01' + socket.inet_pton(socket.AF_INET, host)
    except OSError:
        addr = b'\x03' + bytes([len(host)]) + host.encode()
    request = b'\x05' + bytes([cmd]) + b'\x00' + addr + struct.pack('>H', port)
    try:
        s.sendall(b'\x05\x01\x00' + (request if pipelined else b''))
        if recv_exact(s, 2) != b'\x05\x00':
            raise TestFailure('bad method reply')
        if not pipelined:
            s.sendall(request)
        head = recv_exact(s, 4)
        rest = {1: 4, 4: 16}.get(head[3])
        recv_exact(s, (recv_exact(s, 1)[0] if rest is None else rest) + 2)
        rep = head[1]
    except (OSError, TestFailure) as e:
        if debug:
            print(f'socks5_request: {e!r}', flush=True)
        rep = -1
    if rep != 0:
        s.close()
        return rep, None, time.monotonic() - t0
    return 0, s, time.monotonic() - t0


def curl_args(socks_port, url, out, extra=(), max_time=55):
    return ['curl', '-sS', '--fail', '--max-time', str(max_time), '--socks5-hostname', f'{LOOP}:{socks_port}',
            '-o', out, *extra, url]


def curl(socks_port, url, out, extra=(), timeout=60):
    """curl through the SOCKS5 port into out; the CompletedProcess (curl gives up 5 s before timeout)."""
    return subprocess.run(curl_args(socks_port, url, out, extra, timeout - 5), capture_output=True, timeout=timeout)


def parallel_curls(socks_port, jobs, want_sha, max_time):
    """Runs one curl per (out, url) of jobs at once; checks that each exits 0 within max_time and
    that its file's sha256 is want_sha; removes the files."""
    procs = [(out, subprocess.Popen(curl_args(socks_port, u, out, max_time=max_time), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)) for out, u in jobs]
    bad = []
    for out, p in procs:
        try:
            _, err = p.communicate(timeout=max_time + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            bad.append(f'{os.path.basename(out)}: timeout')
            continue
        if p.returncode != 0:
            bad.append(f'{os.path.basename(out)}: rc={p.returncode} {err.decode()[-200:]}')
        elif sha(out) != want_sha:
            bad.append(f'{os.path.basename(out)}: content differs')
        if os.path.exists(out):
            os.unlink(out)
    check(not bad, '; '.join(bad))


def destination_leaks(log_paths, names=()):
    """Sorted 'log: what' for each of names, and each port of DEST_PORTS, that a log file names."""
    leaks = set()
    for path in log_paths:
        if not os.path.exists(path):
            continue
        with open(path, errors='replace') as f:
            text = f.read()
        leaks.update(f'{os.path.basename(path)}: {name}' for name in names if name in text)
        leaks.update(f'{os.path.basename(path)}: port {p}' for p in DEST_PORTS
                     if re.search(rf'(?<!\d){p}(?!\d)', text))
    return sorted(leaks)


# ---------------------------------------------------------------------------------------
# runner

def run_tests(setup, teardown, tests, only, failed, watch=lambda: (), always=(), after=None):
    """A script's run: setup(); each test whose name (test_ stripped) contains one of the strings
    in only (every test when only is empty, those in always regardless); after() if given;
    teardown() in any case. After each test every AlknetLog of watch() must still run: one that
    exited is a failure, '<name>-alive', and ends the run. An exception out of setup or after is
    a failure named 'setup'. Failures are appended to failed."""
    try:
        setup()
        for t in tests:
            name = t.__name__[5:]
            if only and not any(o in name for o in only) and t not in always:
                continue
            run_test(t, name, failed)
            dead = [p for p in watch() if p.proc.poll() is not None]
            for p in dead:
                print(f'FAIL alknet[{p.name}] exited rc={p.proc.returncode}:\n{p.log()[-3000:]}', flush=True)
                failed.append(f'{p.name}-alive')
            if dead:
                break
        if after:
            after()
    except Exception as e:  # noqa: BLE001 - a failed setup fails the run
        print(f'FAIL setup: {type(e).__name__}: {e}', flush=True)
        traceback.print_exc()
        failed.append('setup')
    finally:
        teardown()


def finish(work, failed):
    """Removes the work directory (kept, and named, when a test failed and ALKNET_KEEP is set),
    prints the summary line and returns the exit status."""
    if failed and os.environ.get('ALKNET_KEEP'):
        print(f'kept {work}')
    else:
        shutil.rmtree(work, ignore_errors=True)
    print(f'{len(failed)} failed' if failed else 'all passed')
    return 1 if failed else 0


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
