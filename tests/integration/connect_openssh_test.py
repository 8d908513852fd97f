#!/usr/bin/env python3
"""alknet connect against a stock OpenSSH sshd (issue 3).

usage: connect_openssh_test.py PATH/TO/alknet [test-name-substring ...]

Everything runs on 127.0.0.1: sshd (Debian openssh-server) with generated Ed25519 keys, a
python HTTP server with random files, small TCP echo/half-close servers, and alknet connect
in front of them. Each test prints PASS/FAIL; the exit status is non-zero if any failed,
77 (meson's "skipped") when sshd, curl or root are missing.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

from harness import (DEST_PORTS, LOOP, USED_PORTS, AlknetLog, HttpServer, Stoppable, TcpListener, TestFailure,
                     after_eof_handler, check, curl, destination_leaks, fd_count, finish, free_port, keygen,
                     parallel_curls, port_open, random_files, recv_all, recv_exact, run, run_tests, sha,
                     socks5_request, wait_until)

ALKNET = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ''
ONLY = sys.argv[2:]
SSHD = '/usr/sbin/sshd'
UNRESOLVABLE = 'alk-no-such-host.invalid'

WORK = None          # temp dir for the whole run
LOGS = []            # every alknet log file, checked for leaked destinations at the end
DEST_NAMES = {UNRESOLVABLE}  # 'localhost' is also a bind address in log lines; its ports are checked instead


# ---------------------------------------------------------------------------------------
# small helpers

def fingerprint(pub):
    out = run(['ssh-keygen', '-lf', pub], check=True).stdout.decode()
    return out.split()[1]


def descendants(pid):
    """pid and every process below it (sshd forks per connection and setsid()s the child)."""
    kids = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(')') + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def kill_tree(proc):
    if proc is None:
        return
    for p in descendants(proc.pid):
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


# ---------------------------------------------------------------------------------------
# peers

class Sshd(Stoppable):
    def __init__(self, name, user_pub, port=None):
        self.dir = os.path.join(WORK, 'sshd-' + name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.proc = None
        self.generation = 0
        self.auth_keys = os.path.join(self.dir, 'authorized_keys')
        shutil.copy(user_pub, self.auth_keys)
        self.new_host_key()

    def new_host_key(self):
        self.generation += 1
        self.host_key = os.path.join(self.dir, f'host_ed25519_{self.generation}')
        keygen(self.host_key)
        self.host_fp = fingerprint(self.host_key + '.pub')
        with open(self.host_key + '.pub') as f:
            self.host_pub_b64 = f.read().split()[1]

    def start(self):
        os.makedirs('/run/sshd', exist_ok=True)
        conf = os.path.join(self.dir, 'sshd_config')
        with open(conf, 'w') as f:
            f.write(f"""Port {self.port}
ListenAddress {LOOP}
HostKey {self.host_key}
AuthorizedKeysFile {self.auth_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowTcpForwarding yes
GatewayPorts no
PidFile none
LogLevel VERBOSE
""")
        self.log = os.path.join(self.dir, f'sshd-{self.generation}.log')
        self.proc = subprocess.Popen([SSHD, '-D', '-f', conf, '-E', self.log], stdin=subprocess.DEVNULL)
        ok = wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, 10)
        if self.proc.poll() is not None or not ok:
            raise TestFailure(f'sshd did not start: {open(self.log).read()[-2000:] if os.path.exists(self.log) else ""}')

    def stop(self):
        kill_tree(self.proc)
        self.proc = None

    def __enter__(self):
        """Starts it; leaving the with block stops it."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self


class Alknet(AlknetLog):
    def __init__(self, name, sshd, identity, extra=(), known_hosts=None, socks_port=None, wait=True, host_key=None):
        self.name = name
        self.socks = socks_port or free_port()
        self.log_path = os.path.join(WORK, f'alknet-{name}.log')
        LOGS.append(self.log_path)
        self.known_hosts = known_hosts or os.path.join(WORK, f'kh-{name}')
        args = [ALKNET, 'connect', '--server', f'{LOOP}:{sshd.port}', '--identity', identity, '--user', 'root',
                '--known-hosts', self.known_hosts, '--socks5', f'{LOOP}:{self.socks}', *extra]
        if host_key:
            args += ['--host-key', host_key]
        self.logf = open(self.log_path, 'wb')
        env = dict(os.environ)
        if os.environ.get('ALKNET_PRELOAD'):  # debugging aid, e.g. an allocation-tracing shim
            env['LD_PRELOAD'] = os.environ['ALKNET_PRELOAD']
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=env)
        if wait:
            self.wait_log('connected transport=', 15)


class TcpServer(TcpListener):
    """Threaded TCP server running handler(sock) per connection (30 s socket timeout); a destination."""

    def __init__(self, handler):
        def with_timeout(s):
            s.settimeout(30)
            handler(s)
        super().__init__(with_timeout)
        while self.port in USED_PORTS:  # a port alknet listened on before: its logs name it
            self.close()
            super().__init__(with_timeout)
        DEST_PORTS.add(self.port)


def echo_handler(s):
    while True:
        b = s.recv(65536)
        if not b:
            s.shutdown(socket.SHUT_WR)
            return
        s.sendall(b)


class ReverseHalfClose:
    """Server sends first and shuts its write side, then keeps reading what the client sends."""

    def __init__(self):
        self.received = []
        self.done = threading.Event()

        def handler(s):
            s.sendall(b'server-first\n')
            s.shutdown(socket.SHUT_WR)
            self.received.append(recv_all(s))
            self.done.set()
        self.server = TcpServer(handler)


# ---------------------------------------------------------------------------------------
# SOCKS clients

def closed_port():
    """A loopback port nobody listens on."""
    p = free_port()
    DEST_PORTS.add(p)
    return p


# ---------------------------------------------------------------------------------------
# shared fixture: one sshd, one http server, echo servers and a main alknet with forwards

E = SimpleNamespace()  # the shared fixture, filled in by setup()


def setup():
    E.user_key = keygen(os.path.join(WORK, 'id_ed25519'))
    E.www = os.path.join(WORK, 'www')
    E.files = random_files(E.www, (('big.bin', 5 << 20), ('small.bin', 200 << 10)))
    E.http = HttpServer(E.www)
    E.echo = TcpServer(echo_handler)
    E.after_eof = TcpServer(after_eof_handler)
    E.rev = ReverseHalfClose()
    E.sshd = Sshd('main', E.user_key + '.pub')
    E.sshd.start()
    E.lport = free_port()
    E.rport = free_port()
    E.rport_eof = free_port()
    E.lport_eof = free_port()
    E.main = Alknet('main', E.sshd, E.user_key, extra=[
        '--forward', f'{E.lport}:127.0.0.1:{E.echo.port}',
        '--forward', f'{LOOP}:{E.lport_eof}:127.0.0.1:{E.after_eof.port}',
        '--remote-forward', f'{E.rport}:127.0.0.1:{E.echo.port}',
        '--remote-forward', f'{E.rport_eof}:127.0.0.1:{E.after_eof.port}'])


def teardown():
    for name in ('main',):
        a = getattr(E, name, None)
        if a:
            a.stop()
    for name in ('sshd',):
        s = getattr(E, name, None)
        if s:
            s.stop()
    for name in ('http', 'echo', 'after_eof'):
        s = getattr(E, name, None)
        if s:
            s.stop()
    if getattr(E, 'rev', None):
        E.rev.server.stop()


def url(host, name, port=None):
    return f'http://{host}:{port or E.http.port}/{name}'


# ---------------------------------------------------------------------------------------
# tests (issue 3's list)

def test_curl_download_localhost_and_ip():
    for host in ('localhost', LOOP):
        out = os.path.join(WORK, f'dl-{host}')
        r = curl(E.main.socks, url(host, 'big.bin'), out)
        check(r.returncode == 0, f'curl via {host} rc={r.returncode} {r.stderr.decode()[-300:]}')
        check(sha(out) == E.files['big.bin'], f'file via {host} differs')


def test_parallel_32_downloads():
    parallel_curls(E.main.socks, [(os.path.join(WORK, f'par-{i}'), url('localhost' if i % 2 else LOOP, 'big.bin'))
                                  for i in range(32)], E.files['big.bin'], max_time=100)


def test_socks_reply_codes():
    rep, s, dt = socks5_request(E.main.socks, host=LOOP, port=closed_port())
    check(rep == 5, f'refused target: REP {rep}, want 5')
    check(dt < 2, f'refused target took {dt:.2f}s')
    rep, s, dt = socks5_request(E.main.socks, host=UNRESOLVABLE, port=80)
    check(rep == 4, f'unresolvable name: REP {rep}, want 4 ({dt:.2f}s)')
    rep, s, dt = socks5_request(E.main.socks, cmd=2, host=LOOP, port=E.echo.port)
    check(rep == 7, f'BIND: REP {rep}, want 7')
    rep, s, dt = socks5_request(E.main.socks, cmd=3, host='0.0.0.0', port=0)
    check(rep == 7, f'UDP ASSOCIATE: REP {rep}, want 7')
    # The session survives the failures: a normal CONNECT still works.
    rep, s, dt = socks5_request(E.main.socks, host=LOOP, port=E.echo.port)
    check(rep == 0, f'CONNECT after failures: REP {rep}')
    s.sendall(b'ping')
    check(recv_exact(s, 4) == b'ping', 'echo after failures')
    s.close()


def test_socks4a_connect():
    with socket.create_connection((LOOP, E.main.socks), timeout=10) as s:
        s.settimeout(10)
        s.sendall(b'\x04\x01' + struct.pack('>H', E.http.port) + b'\x00\x00\x00\x01' + b'user\x00' + b'localhost\x00')
        rep = recv_exact(s, 8)
        check(rep[0] == 0 and rep[1] == 0x5A, f'SOCKS4a reply {rep.hex()}')
        s.sendall(b'GET /small.bin HTTP/1.0\r\nHost: x\r\n\r\n')
        head, _, body = recv_all(s).partition(b'\r\n\r\n')
        check(head.startswith(b'HTTP/1.0 200'), f'SOCKS4a http status {head[:40]!r}')
        check(hashlib.sha256(body).hexdigest() == E.files['small.bin'], 'SOCKS4a body differs')


def echo_roundtrip(port, what):
    with socket.create_connection((LOOP, port), timeout=10) as s:
        s.settimeout(20)
        s.sendall(b'hello\n')
        check(recv_exact(s, 6) == b'hello\n', f'{what}: small echo')
        blob = os.urandom(2 << 20)
        t = threading.Thread(target=s.sendall, args=(blob,), daemon=True)
        t.start()
        got = recv_exact(s, len(blob))
        t.join(10)
        check(got == blob, f'{what}: 2 MiB echo differs')
        s.shutdown(socket.SHUT_WR)
        check(s.recv(10) == b'', f'{what}: no EOF after echo server closed')


def test_local_forward():
    echo_roundtrip(E.lport, '-L')


def test_remote_forward():
    ok = wait_until(lambda: port_open(E.rport), 10)
    check(ok, f'-R port {E.rport} never opened on the sshd side')
    echo_roundtrip(E.rport, '-R')


def half_close_probe(s, what):
    payload = os.urandom(300000)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    data = recv_all(s)
    want = f'got {len(payload)} {hashlib.sha256(payload).hexdigest()}\n'.encode()
    check(data == want, f'{what}: reply after half-close {data[:80]!r}')


def test_half_close():
    # client -> server FIN, then the reply still arrives: SOCKS, -L and -R.
    rep, s, _ = socks5_request(E.main.socks, host='localhost', port=E.after_eof.port)
    check(rep == 0, f'SOCKS CONNECT REP {rep}')
    with s:
        s.settimeout(20)
        half_close_probe(s, 'socks')
    with socket.create_connection((LOOP, E.lport_eof), timeout=10) as s:
        s.settimeout(20)
        half_close_probe(s, '-L')
    check(wait_until(lambda: port_open(E.rport_eof), 10), '-R half-close port never opened')
    with socket.create_connection((LOOP, E.rport_eof), timeout=10) as s:
        s.settimeout(20)
        half_close_probe(s, '-R')
    # server -> client FIN first, then the client can still send.
    E.rev.done.clear()
    rep, s, _ = socks5_request(E.main.socks, host=LOOP, port=E.rev.server.port)
    check(rep == 0, f'SOCKS CONNECT REP {rep}')
    with s:
        s.settimeout(20)
        data = recv_all(s, 100)
        check(data == b'server-first\n', f'server-first data {data!r}')
        s.sendall(b'client-after-eof')
        s.shutdown(socket.SHUT_WR)
        check(E.rev.done.wait(10), 'server never saw our EOF after its own')
        check(E.rev.received[-1] == b'client-after-eof', f'server got {E.rev.received[-1]!r}')


def socks_works(port, timeout=20):
    out = os.path.join(WORK, f'probe-{port}')
    r = curl(port, url('localhost', 'small.bin'), out, timeout=timeout)
    return r.returncode == 0 and sha(out) == E.files['small.bin']


def test_known_hosts_tofu_and_changed_key():
    kh = os.path.join(WORK, 'kh-tofu', 'known_hosts')  # a directory that does not exist yet
    with Sshd('kh', E.user_key + '.pub') as sshd, Alknet('kh1', sshd, E.user_key, known_hosts=kh) as a:
        check(os.path.exists(kh), 'known_hosts not written on first use')
        text = open(kh).read()
        check(sshd.host_pub_b64 in text and f'[{LOOP}]:{sshd.port}' in text, f'known_hosts content: {text!r}')
        check(socks_works(a.socks), 'TOFU session does not carry traffic')
        check(a.stop() == 0, 'first client did not exit 0')
        # Same address, new host key: refused loudly, and SOCKS gets no tunnel.
        sshd.stop()
        sshd.new_host_key()
        sshd.start()
        with Alknet('kh2', sshd, E.user_key, known_hosts=kh, wait=False) as b:
            b.wait_log('HAS CHANGED', 10)
            check('connected transport=' not in b.log(), 'client connected despite a changed host key')
            rep, s, dt = socks5_request(b.socks, host='localhost', port=E.http.port)
            check(rep != 0 and s is None, f'SOCKS through a refused session: REP {rep}')
            check(dt < 2, f'SOCKS failure took {dt:.2f}s')
            check(open(kh).read() == text, 'known_hosts was modified after a key change')


def test_host_key_pin():
    with Sshd('pin', E.user_key + '.pub') as sshd:
        wrong = 'SHA256:' + 'A' * 43
        with Alknet('pin-wrong', sshd, E.user_key, host_key=wrong, wait=False) as a:
            a.wait_log('mismatch', 10)
            check('connected transport=' not in a.log(), 'connected despite a wrong pin')
            rep, s, dt = socks5_request(a.socks, host='localhost', port=E.http.port)
            check(rep != 0 and dt < 2, f'SOCKS through a wrong pin: REP {rep} in {dt:.2f}s')
            with Alknet('pin-right', sshd, E.user_key, host_key=sshd.host_fp) as b:
                check(socks_works(b.socks), 'pinned session does not carry traffic')
                check(sshd.host_fp in b.log(), 'connected line lacks the host key fingerprint')


def test_reconnect_after_sshd_restart():
    with Sshd('restart', E.user_key + '.pub') as sshd, Alknet('restart', sshd, E.user_key) as a:
        check(socks_works(a.socks), 'first session does not carry traffic')
        sshd.stop()
        a.wait_log('disconnected', 10)
        # While down: prompt failure, never a hang.
        for host in ('localhost', LOOP):
            rep, s, dt = socks5_request(a.socks, host=host, port=E.http.port)
            check(rep != 0, f'SOCKS while disconnected: REP {rep}')
            check(dt < 2, f'SOCKS failure while disconnected took {dt:.2f}s')
        time.sleep(1.5)  # let at least one retry fail against the dead port
        sshd.start()
        t0 = time.monotonic()
        retries = re.findall(r'retry_in=(\d+)s', a.log())
        budget = (int(retries[-1]) if retries else 1) + 1
        a.wait_log('connected transport=', budget + 1, count=2)
        dt = time.monotonic() - t0
        check(dt <= budget + 0.5, f'reconnected after {dt:.1f}s, backoff allowed {budget}s')
        check(socks_works(a.socks), 'session after reconnect does not carry traffic')


def test_reconnect_reregisters_remote_forward():
    rport = free_port()
    with Sshd('restart-r', E.user_key + '.pub') as sshd, \
            Alknet('restart-r', sshd, E.user_key, extra=['--remote-forward', f'{rport}:127.0.0.1:{E.echo.port}']) as a:
        check(wait_until(lambda: port_open(rport), 10), '-R port never opened')
        sshd.stop()
        a.wait_log('disconnected', 10)
        sshd.start()
        a.wait_log('connected transport=', 5, count=2)
        check(wait_until(lambda: port_open(rport), 10), '-R port not registered again after reconnect')
        echo_roundtrip(rport, '-R after reconnect')


def slow_download(out, result):
    r = curl(E.main.socks, url(LOOP, 'big.bin'), out, extra=['--limit-rate', '1500K'], timeout=60)
    result.append((r.returncode, r.stderr.decode()[-200:]))


def test_garbage_does_not_disturb_and_fds_return():
    pid = E.main.proc.pid
    time.sleep(0.5)
    baseline = fd_count(pid)
    out = os.path.join(WORK, 'garbage-dl')
    result = []
    t = threading.Thread(target=slow_download, args=(out, result), daemon=True)
    t.start()
    time.sleep(0.5)
    stalled = []
    for i in range(30):
        # random bytes, closed
        try:
            with socket.create_connection((LOOP, E.main.socks), timeout=5) as s:
                s.sendall(os.urandom(1 + i * 37))
        except OSError:
            pass
        # immediate close
        try:
            socket.create_connection((LOOP, E.main.socks), timeout=5).close()
        except OSError:
            pass
        # half a greeting / half a request, then stall
        s = socket.create_connection((LOOP, E.main.socks), timeout=5)
        s.sendall([b'\x05', b'\x05\x02\x00', b'\x05\x01\x00\x05\x01\x00\x03\x20abc', b'\x04\x01\x00'][i % 4])
        stalled.append(s)
        # an RST mid-handshake
        s2 = socket.create_connection((LOOP, E.main.socks), timeout=5)
        s2.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        s2.sendall(b'\x05\x01')
        s2.close()
    # Half of the stalled ones we drop ourselves, the rest must hit alknet's handshake deadline.
    for s in stalled[::2]:
        s.close()
    t.join(60)
    check(result and result[0][0] == 0, f'download during garbage failed: {result}')
    check(sha(out) == E.files['big.bin'], 'download during garbage differs')
    ok = wait_until(lambda: fd_count(pid) <= baseline, 15, step=0.2)
    n = fd_count(pid)
    for s in stalled[1::2]:
        s.close()
    check(ok, f'fds did not return to baseline: {n} > {baseline}')
    # the stalled peers left open were closed by alknet (EOF, not a hang)
    check(socks_works(E.main.socks), 'SOCKS broken after garbage')


def test_sigterm_idle_and_active():
    sshd = E.sshd
    for active in (False, True):
        a = Alknet('sigterm-' + ('active' if active else 'idle'), sshd, E.user_key)
        s = None
        try:
            if active:
                rep, s, _ = socks5_request(a.socks, host=LOOP, port=E.echo.port)
                check(rep == 0, f'CONNECT REP {rep}')
                s.sendall(b'x')
                check(recv_exact(s, 1) == b'x', 'echo before SIGTERM')
            t0 = time.monotonic()
            a.proc.send_signal(signal.SIGTERM)
            try:
                rc = a.proc.wait(timeout=3.5)
            except subprocess.TimeoutExpired:
                rc = None
            dt = time.monotonic() - t0
            check(rc == 0, f'SIGTERM ({"active" if active else "idle"}): rc={rc} after {dt:.1f}s')
            check(dt < 3, f'SIGTERM ({"active" if active else "idle"}) took {dt:.1f}s')
        finally:
            if s:
                s.close()
            a.stop()


def expect_cli_error(args, what):
    t0 = time.monotonic()
    r = run([ALKNET, *args], timeout=10)
    dt = time.monotonic() - t0
    err = r.stderr.decode()
    check(r.returncode != 0, f'{what}: exit 0')
    check(err.startswith('error: '), f'{what}: stderr {err[:200]!r}')
    check(dt < 2, f'{what}: took {dt:.2f}s')


def test_banner_quiet_and_verbose():
    """Default: a startup banner with the version, then the connected line. --quiet: neither.
    --verbose: failed tunnels are reported with their reason, never their destination."""
    q = v = None
    try:
        check(re.search(r'^alknet connect \S+ server=127\.0\.0\.1:\d+ transport=tcp socks5=127\.0\.0\.1:\d+ '
                        r'forwards=\d+ remote_forwards=\d+$', E.main.log(), re.M),
              'no startup banner: ' + E.main.log()[:300])
        q = Alknet('quiet', E.sshd, E.user_key, extra=['--quiet'], known_hosts=E.main.known_hosts, wait=False)
        check(wait_until(lambda: socks_works(q.socks, timeout=5), 15), 'quiet client does not carry traffic')
        rep, s, dt = socks5_request(q.socks, host=LOOP, port=closed_port())
        check(rep == 5, f'quiet: refused target REP {rep}')
        check(q.log().strip() == '', 'quiet client printed: ' + q.log()[:300])
        v = Alknet('verbose', E.sshd, E.user_key, extra=['-v'], known_hosts=E.main.known_hosts)
        port = closed_port()
        rep, s, dt = socks5_request(v.socks, host=LOOP, port=port)
        check(rep == 5, f'verbose: refused target REP {rep}')
        check(wait_until(lambda: 'tunnel open failed reason=' in v.log(), 5), 'verbose: no tunnel failure line')
        line = [x for x in v.log().splitlines() if 'tunnel open failed' in x][0]
        check(str(port) not in line and LOOP not in line, 'verbose line names the destination: ' + line)
    finally:
        for x in (q, v):
            if x:
                x.stop()


def test_cli_errors():
    kh = os.path.join(WORK, 'kh-cli')
    base = ['connect', '--server', f'{LOOP}:{E.sshd.port}', '--user', 'root', '--known-hosts', kh]
    expect_cli_error([*base, '--socks5', f'{LOOP}:{free_port()}'], 'missing --identity')
    pem = os.path.join(WORK, 'id_pem')
    run(['ssh-keygen', '-q', '-t', 'ecdsa', '-m', 'PEM', '-N', '', '-f', pem], check=True)
    expect_cli_error([*base, '--identity', pem, '--socks5', f'{LOOP}:{free_port()}'], 'PEM key')
    r = run([ALKNET, *base, '--identity', pem, '--socks5', f'{LOOP}:{free_port()}'], timeout=10)
    check('PEM' in r.stderr.decode(), f'PEM key message unclear: {r.stderr.decode()[:200]!r}')
    expect_cli_error([*base, '--identity', os.path.join(WORK, 'no-such-key'), '--socks5', f'{LOOP}:{free_port()}'],
                     'missing key file')
    expect_cli_error([*base, '--identity', WORK, '--socks5', f'{LOOP}:{free_port()}'], 'key path is a directory')
    with socket.socket() as busy:
        busy.bind((LOOP, 0))
        busy.listen(1)
        expect_cli_error([*base, '--identity', E.user_key, '--socks5', f'{LOOP}:{busy.getsockname()[1]}'],
                         '--socks5 port in use')
        expect_cli_error([*base, '--identity', E.user_key, '--socks5', f'{LOOP}:{free_port()}',
                          '--forward', f'{busy.getsockname()[1]}:127.0.0.1:1'], '--forward port in use')
    expect_cli_error([*base, '--identity', E.user_key, '--socks5', f'{LOOP}:{free_port()}', '--bogus'], 'unknown flag')


def test_logs_never_name_destinations():
    leaks = destination_leaks(LOGS, DEST_NAMES)
    check(not leaks, 'destinations in logs: ' + ', '.join(leaks))


TESTS = [
    test_curl_download_localhost_and_ip,
    test_parallel_32_downloads,
    test_socks_reply_codes,
    test_socks4a_connect,
    test_local_forward,
    test_remote_forward,
    test_half_close,
    test_known_hosts_tofu_and_changed_key,
    test_host_key_pin,
    test_reconnect_after_sshd_restart,
    test_reconnect_reregisters_remote_forward,
    test_garbage_does_not_disturb_and_fds_return,
    test_sigterm_idle_and_active,
    test_banner_quiet_and_verbose,
    test_cli_errors,
    test_logs_never_name_destinations,  # last: it reads every log the others wrote
]


def main():
    global WORK
    if not ALKNET or not os.access(ALKNET, os.X_OK):
        print('usage: connect_openssh_test.py PATH/TO/alknet', file=sys.stderr)
        return 2
    if os.geteuid() != 0 or not os.path.exists(SSHD) or not shutil.which('curl') or not shutil.which('ssh-keygen'):
        print('SKIP: needs root, /usr/sbin/sshd, curl and ssh-keygen')
        return 77
    WORK = tempfile.mkdtemp(prefix='alknet-connect-it-')
    failed = []
    run_tests(setup, teardown, TESTS, ONLY, failed, watch=lambda: (E.main,))
    return finish(WORK, failed)


if __name__ == '__main__':
    sys.exit(main())
