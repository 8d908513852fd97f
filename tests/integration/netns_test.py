#!/usr/bin/env python3
"""Full-device tunnelling in network namespaces made by the test (issue 9, "Companion and UDP").

usage: netns_test.py PATH/TO/alknet [test-name-substring ...]

Three namespaces joined by two veth pairs, private 10.x addresses only inside them:

    cli (10.R.1.2) ──veth── srv (10.R.1.1 | 10.R.2.1) ──veth── tgt (10.R.2.2)

- tgt: the targets: an HTTP server, a TCP echo, a "read to EOF, then answer" server (half-close),
  a UDP echo, and dnsmasq (--no-resolv, one host record `target.test`).
- srv: `alknet serve`. IP forwarding is off (the namespace default), so tgt is reachable from cli
  only through the tunnel. Its resolv.conf (/etc/netns/<srv>/resolv.conf) names dnsmasq, so the
  server resolves `target.test` itself.
- cli: `alknet connect` with its SOCKS5 port on 127.0.0.1, redsocks, and iptables nat OUTPUT
  REDIRECT of all TCP (except loopback and the alknet server: tun2proxy's --bypass) into
  redsocks, which speaks SOCKS5 to alknet. The test's own sockets and curl run in cli too
  (the main thread joins it with setns(2)).

Checks: curl to the target byte-exact through the transparent redirect; DNS over a TCP
connection to dnsmasq through the redirect; UDP ASSOCIATE round-trips DNS queries (IP and
DOMAINNAME destinations) and a 2 MB UDP echo byte-exact with sequence numbers (no loss
allowed: the sender keeps a bounded window in flight, so no socket buffer on the path can
overflow, and every relay hop is flow-controlled by the SSH channel window); half-close through
SOCKS; 200 concurrent SOCKS sessions.

Exit status: non-zero if a test failed; 77 (meson's "skipped") when not root or `ip netns` is
not available. Namespaces, /etc/netns/<srv> and every process are removed even on failure.
"""

import ctypes
import hashlib
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from harness import TestFailure, check, keygen, recv_exact, run, run_test, wait_until

ALKNET = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ''
ONLY = sys.argv[2:]

TAG = os.getpid() % 100000
NS_CLI, NS_SRV, NS_TGT = f'alkt-cli-{TAG}', f'alkt-srv-{TAG}', f'alkt-tgt-{TAG}'
R = 100 + TAG % 150                       # 10.R.x.y: private, chosen per run
CLI_IP, SRV_IP, SRV_IP2, TGT_IP = f'10.{R}.1.2', f'10.{R}.1.1', f'10.{R}.2.1', f'10.{R}.2.2'
SRV_PORT, SOCKS_PORT, REDSOCKS_PORT = 2222, 1080, 12345
HTTP_PORT, ECHO_PORT, EOF_PORT, UDP_ECHO_PORT = 8080, 7007, 7009, 7007
TARGET_NAME = 'target.test'
CLONE_NEWNET = 0x40000000

WORK = None
PROCS = []

# The target services, run inside tgt as one python process.
TARGETS = r'''
import hashlib, http.server, os, socket, socketserver, sys, threading
ip, root = sys.argv[1], sys.argv[2]
class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
class T(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            b = self.request.recv(65536)
            if not b: return
            self.request.sendall(b)
class ToEof(socketserver.BaseRequestHandler):
    def handle(self):
        h, n = hashlib.sha256(), 0
        while True:
            b = self.request.recv(65536)
            if not b: break
            h.update(b); n += len(b)
        self.request.sendall(f'{n} {h.hexdigest()}\n'.encode())
def udp_echo():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ip, int(sys.argv[4])))
    while True:
        d, a = s.recvfrom(65536)
        s.sendto(d, a)
h = http.server.ThreadingHTTPServer((ip, int(sys.argv[3])), lambda *a, **k: Quiet(*a, directory=root, **k))
for srv in (h, T((ip, int(sys.argv[4])), Echo), T((ip, int(sys.argv[5])), ToEof)):
    threading.Thread(target=srv.serve_forever, daemon=True).start()
threading.Thread(target=udp_echo, daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
'''


def sh(*cmd):
    r = run(list(cmd))
    if r.returncode != 0:
        raise TestFailure(f'{" ".join(cmd)}: {r.stderr.decode(errors="replace").strip()}')


def in_ns(ns, *cmd):
    return ['ip', 'netns', 'exec', ns, *cmd]


def spawn(name, cmd):
    log = open(os.path.join(WORK, f'{name}.log'), 'ab')
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    p.name, p.log_path = name, log.name
    PROCS.append(p)
    return p


def log_of(p):
    with open(p.log_path, 'rb') as f:
        return f.read().decode(errors='replace')


def wait_log(p, needle, timeout):
    ok = wait_until(lambda: needle in log_of(p) or p.poll() is not None, timeout)
    if not ok or needle not in log_of(p):
        raise TestFailure(f'{p.name} log lacks {needle!r} (rc={p.poll()}):\n{log_of(p)[-2000:]}')


def enter_netns(ns):
    """Moves this thread (and threads/processes it starts later) into ns."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f'/run/netns/{ns}', os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise TestFailure(f'setns {ns}: {os.strerror(ctypes.get_errno())}')
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# SOCKS5 and DNS by hand

def socks_greet(s):
    s.sendall(b'\x05\x01\x00')
    check(recv_exact(s, 2) == b'\x05\x00', 'SOCKS5 method not accepted')


def socks_reply(s):
    head = recv_exact(s, 4)
    check(head[:2] == b'\x05\x00', f'SOCKS5 reply {head!r}')
    if head[3] == 1:
        addr = socket.inet_ntop(socket.AF_INET, recv_exact(s, 4))
    elif head[3] == 4:
        addr = socket.inet_ntop(socket.AF_INET6, recv_exact(s, 16))
    else:
        addr = recv_exact(s, recv_exact(s, 1)[0]).decode()
    return addr, struct.unpack('!H', recv_exact(s, 2))[0]


def socks_connect(host, port, timeout=20):
    s = socket.create_connection(('127.0.0.1', SOCKS_PORT), timeout=timeout)
    socks_greet(s)
    s.sendall(b'\x05\x01\x00\x01' + socket.inet_aton(host) + struct.pack('!H', port))
    socks_reply(s)
    return s


def udp_header(host, port):
    try:
        return b'\x00\x00\x00\x01' + socket.inet_aton(host) + struct.pack('!H', port)
    except OSError:
        return b'\x00\x00\x00\x03' + bytes([len(host)]) + host.encode() + struct.pack('!H', port)


class UdpAssociation:
    def __init__(self, timeout=10):
        self.ctl = socket.create_connection(('127.0.0.1', SOCKS_PORT), timeout=timeout)
        socks_greet(self.ctl)
        self.ctl.sendall(b'\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00')
        self.relay = socks_reply(self.ctl)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.udp.bind(('127.0.0.1', 0))
        self.udp.settimeout(timeout)

    def send(self, host, port, payload):
        self.udp.sendto(udp_header(host, port) + payload, self.relay)

    def recv(self):
        """(source ip, source port, payload) of the next datagram from the relay."""
        d, _ = self.udp.recvfrom(70000)
        check(d[:3] == b'\x00\x00\x00' and d[3] == 1, f'bad UDP reply header {d[:10]!r}')
        return socket.inet_ntoa(d[4:8]), struct.unpack('!H', d[8:10])[0], d[10:]

    def close(self):
        self.udp.close()
        self.ctl.close()


def dns_query(name, qid):
    return struct.pack('!HHHHHH', qid, 0x0100, 1, 0, 0, 0) + b''.join(
        bytes([len(p)]) + p.encode() for p in name.split('.')) + b'\x00' + struct.pack('!HH', 1, 1)


def dns_a_answer(msg, qid):
    """The first A record's address in a DNS response (compressed names as dnsmasq writes them)."""
    rid, flags, qd, an = struct.unpack('!HHHH', msg[:8])
    check(rid == qid, f'DNS id {rid} != {qid}')
    check(flags & 0x000F == 0 and an >= 1, f'DNS rcode {flags & 15}, {an} answers')
    i = 12
    for _ in range(qd):
        while msg[i]:
            i += msg[i] + 1
        i += 5
    for _ in range(an):
        i += 2 if msg[i] & 0xC0 == 0xC0 else len(msg[i:].split(b'\x00', 1)[0]) + 1
        rtype, _cls, _ttl, rdlen = struct.unpack('!HHIH', msg[i:i + 10])
        i += 10
        if rtype == 1:
            return socket.inet_ntoa(msg[i:i + 4])
        i += rdlen
    raise TestFailure('no A record in the answer')


# ---------------------------------------------------------------------------------------
# the world

class World:
    pass


W = World()


def build():
    sh('ip', 'netns', 'add', NS_CLI)
    sh('ip', 'netns', 'add', NS_SRV)
    sh('ip', 'netns', 'add', NS_TGT)
    for ns in (NS_CLI, NS_SRV, NS_TGT):
        sh(*in_ns(ns, 'ip', 'link', 'set', 'lo', 'up'))
    sh('ip', 'link', 'add', f'alkc{TAG}', 'netns', NS_CLI, 'type', 'veth', 'peer', 'name', f'alks{TAG}', 'netns', NS_SRV)
    sh('ip', 'link', 'add', f'alkt{TAG}', 'netns', NS_TGT, 'type', 'veth', 'peer', 'name', f'alku{TAG}', 'netns', NS_SRV)
    for ns, dev, ip in ((NS_CLI, f'alkc{TAG}', CLI_IP), (NS_SRV, f'alks{TAG}', SRV_IP),
                        (NS_SRV, f'alku{TAG}', SRV_IP2), (NS_TGT, f'alkt{TAG}', TGT_IP)):
        sh(*in_ns(ns, 'ip', 'addr', 'add', f'{ip}/24', 'dev', dev))
        sh(*in_ns(ns, 'ip', 'link', 'set', dev, 'up'))
    # cli routes everything to srv (like a default gateway); srv does not forward.
    sh(*in_ns(NS_CLI, 'ip', 'route', 'add', 'default', 'via', SRV_IP))
    sh(*in_ns(NS_SRV, 'sysctl', '-qw', 'net.ipv4.ip_forward=0'))

    W.www = os.path.join(WORK, 'www')
    os.makedirs(W.www)
    W.blob = os.urandom(3 << 20)
    with open(os.path.join(W.www, 'blob.bin'), 'wb') as f:
        f.write(W.blob)
    W.targets = spawn('targets', in_ns(NS_TGT, sys.executable, '-c', TARGETS, TGT_IP, W.www, str(HTTP_PORT),
                                       str(ECHO_PORT), str(EOF_PORT)))
    W.dnsmasq = spawn('dnsmasq', in_ns(NS_TGT, 'dnsmasq', '--keep-in-foreground', '--no-resolv', '--no-hosts',
                                       '--conf-file=/dev/null', f'--listen-address={TGT_IP}', '--bind-interfaces',
                                       '--user=root', '--pid-file=', '--log-facility=-',
                                       f'--host-record={TARGET_NAME},{TGT_IP}'))
    # `ip netns exec` bind-mounts /etc/netns/NAME/* over /etc: the server's resolver is dnsmasq.
    W.etc = f'/etc/netns/{NS_SRV}'
    os.makedirs(W.etc, exist_ok=True)
    with open(os.path.join(W.etc, 'resolv.conf'), 'w') as f:
        f.write(f'nameserver {TGT_IP}\noptions timeout:2 attempts:2\n')

    host_key = keygen(os.path.join(WORK, 'host_ed25519'))
    W.user_key = user_key = keygen(os.path.join(WORK, 'id_ed25519'))
    auth = os.path.join(WORK, 'authorized_keys')
    shutil.copy(user_key + '.pub', auth)
    W.serve_args = [ALKNET, 'serve', '--key', host_key, '--authorized-keys', auth, '--listen', f'{SRV_IP}:{SRV_PORT}']
    W.serve = spawn('serve', in_ns(NS_SRV, *W.serve_args))
    wait_log(W.serve, 'listening on', 10)
    W.connect = spawn('connect', in_ns(NS_CLI, ALKNET, 'connect', '--server', f'{SRV_IP}:{SRV_PORT}', '--identity',
                                       user_key, '--known-hosts', os.path.join(WORK, 'known_hosts'),
                                       '--socks5', f'127.0.0.1:{SOCKS_PORT}'))
    wait_log(W.connect, 'connected transport=', 15)
    wait_log(W.targets, 'ready', 10)
    dns_up = lambda: run(in_ns(NS_TGT, sys.executable, '-c', f'import socket; socket.create_connection(("{TGT_IP}", 53), 1)'),
                         timeout=10).returncode == 0  # noqa: E731
    check(wait_until(dns_up, 10, step=0.2), 'dnsmasq does not listen')

    conf = os.path.join(WORK, 'redsocks.conf')
    with open(conf, 'w') as f:
        f.write('base { log_debug = off; log_info = off; daemon = off; redirector = iptables; }\n'
                f'redsocks {{ local_ip = 127.0.0.1; local_port = {REDSOCKS_PORT}; ip = 127.0.0.1; '
                f'port = {SOCKS_PORT}; type = socks5; }}\n')
    W.redsocks = spawn('redsocks', in_ns(NS_CLI, 'redsocks', '-c', conf))

    enter_netns(NS_CLI)
    # Before the redirect: the target is not reachable from cli by itself.
    try:
        socket.create_connection((TGT_IP, HTTP_PORT), timeout=1.5).close()
        raise TestFailure('the target is reachable from cli without the tunnel')
    except OSError:
        pass
    for rule in (['-N', 'ALKNET'], ['-A', 'ALKNET', '-d', '127.0.0.0/8', '-j', 'RETURN'],
                 ['-A', 'ALKNET', '-d', SRV_IP, '-p', 'tcp', '--dport', str(SRV_PORT), '-j', 'RETURN'],  # --bypass
                 ['-A', 'ALKNET', '-p', 'tcp', '-j', 'REDIRECT', '--to-ports', str(REDSOCKS_PORT)],
                 ['-A', 'OUTPUT', '-p', 'tcp', '-j', 'ALKNET']):
        sh('iptables', '-w', '-t', 'nat', *rule)
    check(wait_until(lambda: port_open('127.0.0.1', REDSOCKS_PORT), 10), 'redsocks does not listen')


def port_open(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def teardown():
    for p in PROCS:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in PROCS:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    for ns in (NS_CLI, NS_SRV, NS_TGT):
        run(['ip', 'netns', 'del', ns])
    shutil.rmtree(f'/etc/netns/{NS_SRV}', ignore_errors=True)


# ---------------------------------------------------------------------------------------
# tests

def test_curl_through_transparent_redirect():
    out = os.path.join(WORK, 'got.bin')
    r = run(['curl', '-sS', '--max-time', '60', '-o', out, f'http://{TGT_IP}:{HTTP_PORT}/blob.bin'], timeout=90)
    check(r.returncode == 0, f'curl: {r.stderr.decode(errors="replace")}')
    with open(out, 'rb') as f:
        check(f.read() == W.blob, 'downloaded bytes differ')


def test_dns_over_tcp_through_redirect():
    # tun2proxy --dns over-tcp: a plain TCP connection to the resolver, caught by the redirect.
    for qid in (0x1234, 0x4321):
        s = socket.create_connection((TGT_IP, 53), timeout=10)
        q = dns_query(TARGET_NAME, qid)
        s.sendall(struct.pack('!H', len(q)) + q)
        n = struct.unpack('!H', recv_exact(s, 2))[0]
        check(dns_a_answer(recv_exact(s, n), qid) == TGT_IP, 'wrong address')
        s.close()


def test_udp_associate_dns():
    a = UdpAssociation()
    try:
        check(a.relay[0] == '127.0.0.1' and a.relay[1] != 0, f'relay address {a.relay}')
        for i in range(20):
            a.send(TGT_IP, 53, dns_query(TARGET_NAME, 100 + i))
            ip, port, msg = a.recv()
            check((ip, port) == (TGT_IP, 53), f'reply from {ip}:{port}')
            check(dns_a_answer(msg, 100 + i) == TGT_IP, 'wrong address')
        # DOMAINNAME destination: the server resolves target.test (through dnsmasq) itself.
        a.send(TARGET_NAME, 53, dns_query(TARGET_NAME, 999))
        ip, port, msg = a.recv()
        check((ip, port) == (TGT_IP, 53) and dns_a_answer(msg, 999) == TGT_IP, 'domain destination')
    finally:
        a.close()


def test_udp_bulk_echo_byte_exact():
    a = UdpAssociation()
    total, size, window = 2 << 20, 1200, 32
    count = (total + size - 1) // size
    rnd = random.Random(7)
    payloads = [struct.pack('!I', i) + rnd.randbytes(size - 4) for i in range(count)]
    got = {}
    try:
        sent = 0
        t0 = time.monotonic()
        while len(got) < count:
            while sent < count and sent - len(got) < window:
                a.send(TGT_IP, UDP_ECHO_PORT, payloads[sent])
                sent += 1
            try:
                ip, port, d = a.recv()
            except socket.timeout:
                raise TestFailure(f'lost datagrams: {sent - len(got)} of {sent} sent not echoed')
            check((ip, port) == (TGT_IP, UDP_ECHO_PORT), f'echo from {ip}:{port}')
            seq = struct.unpack('!I', d[:4])[0]
            check(seq < count and d == payloads[seq], f'datagram {seq} differs')
            check(seq not in got, f'datagram {seq} twice')
            got[seq] = True
        dt = time.monotonic() - t0
        print(f'  udp echo: {count} datagrams, {total / dt / 1e6:.1f} MB/s each way', flush=True)
        # A fragment (FRAG != 0) is dropped and the association goes on; a datagram near the
        # IPv4 maximum crosses whole.
        a.udp.sendto(b'\x00\x00\x01' + udp_header(TGT_IP, UDP_ECHO_PORT)[3:] + b'fragment', a.relay)
        big = rnd.randbytes(65000)
        a.send(TGT_IP, UDP_ECHO_PORT, big)
        check(a.recv()[2] == big, 'a 65000-byte datagram did not come back whole')
    finally:
        a.close()


def test_udp_association_ends_with_control():
    a = UdpAssociation()
    a.send(TGT_IP, UDP_ECHO_PORT, b'one')
    check(a.recv()[2] == b'one', 'no echo')
    a.ctl.close()
    # The relay socket goes away with the control connection: later datagrams get no answer.
    time.sleep(0.5)
    a.udp.settimeout(1.5)
    a.send(TGT_IP, UDP_ECHO_PORT, b'two')
    try:
        a.recv()
        raise TestFailure('the association outlived its control connection')
    except OSError:
        pass
    a.udp.close()


def test_half_close_through_socks():
    data = os.urandom(700_000)
    s = socks_connect(TGT_IP, EOF_PORT)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)   # nc -N: the target answers only after our EOF
    reply = b''
    while not reply.endswith(b'\n'):
        b = s.recv(4096)
        check(b, 'closed before the answer')
        reply += b
    check(s.recv(10) == b'', 'no EOF after the answer')
    s.close()
    check(reply.decode().split() == [str(len(data)), hashlib.sha256(data).hexdigest()], f'answer {reply!r}')


def test_200_concurrent_socks_sessions():
    n = 200
    barrier = threading.Barrier(n, timeout=60)
    ok, errors = [0], []
    lock = threading.Lock()

    def one(i):
        try:
            s = socks_connect(TGT_IP, ECHO_PORT, timeout=60)
            barrier.wait()   # all 200 open at once
            msg = f'session {i} '.encode() * 50
            s.sendall(msg)
            check(recv_exact(s, len(msg)) == msg, f'session {i} echo differs')
            s.close()
            with lock:
                ok[0] += 1
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f'{i}: {e}')
            barrier.abort()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(90)
    check(ok[0] == n, f'{ok[0]}/{n} sessions succeeded; first errors: {errors[:3]}')


def test_udp_policy_and_session_loss():
    """The server restarts with --permit-open TGT:53: the live association's control connection
    is closed when the session dies; after the reconnect UDP to the resolver passes while the
    echo port and a link-local address are dropped, exactly as TCP CONNECTs are refused."""
    a = UdpAssociation()
    a.send(TGT_IP, UDP_ECHO_PORT, b'before')
    check(a.recv()[2] == b'before', 'no echo before the restart')
    connected = log_of(W.connect).count('connected transport=')
    W.serve.send_signal(signal.SIGTERM)
    W.serve.wait(timeout=10)
    a.ctl.settimeout(10)
    try:
        check(a.ctl.recv(1) == b'', 'data on the control connection')
    except socket.timeout:
        raise TestFailure('the control connection outlived the session')
    a.close()
    W.serve = spawn('serve-permit', in_ns(NS_SRV, *W.serve_args, '--permit-open', f'{TGT_IP}:53'))
    wait_log(W.serve, 'listening on', 10)
    check(wait_until(lambda: log_of(W.connect).count('connected transport=') > connected, 20), 'no reconnect')
    a = UdpAssociation()
    try:
        for dst in ((TGT_IP, UDP_ECHO_PORT), ('169.254.169.254', 53)):
            a.send(dst[0], dst[1], dns_query(TARGET_NAME, 7))
        a.send(TGT_IP, 53, dns_query(TARGET_NAME, 8))
        ip, port, msg = a.recv()   # the first datagram back is the allowed one
        check((ip, port) == (TGT_IP, 53) and dns_a_answer(msg, 8) == TGT_IP, f'reply from {ip}:{port}')
        a.udp.settimeout(1)
        try:
            extra = a.recv()
            raise TestFailure(f'a refused destination answered: {extra[:2]}')
        except socket.timeout:
            pass
    finally:
        a.close()
    s = socket.create_connection(('127.0.0.1', SOCKS_PORT), timeout=10)
    socks_greet(s)
    s.sendall(b'\x05\x01\x00\x01' + socket.inet_aton(TGT_IP) + struct.pack('!H', ECHO_PORT))
    check(recv_exact(s, 2) == b'\x05\x02', 'TCP to a port outside --permit-open was not refused with REP 2')
    s.close()


def test_socks5_auth_file():
    """--socks5-auth-file: refused when others may read it; with it, RFC 1929 is required and a
    UDP association works after authenticating."""
    path = os.path.join(WORK, 'socks5-auth')
    with open(path, 'w') as f:
        f.write('tunnel:pa55:word\n')
    os.chmod(path, 0o644)
    args = [ALKNET, 'connect', '--server', f'{SRV_IP}:{SRV_PORT}', '--identity', W.user_key, '--known-hosts',
            os.path.join(WORK, 'known_hosts'), '--socks5', '127.0.0.1:1081', '--socks5-auth-file', path]
    r = run(args, timeout=10)
    check(r.returncode != 0 and b'accessible by other users' in r.stderr, f'0644 file accepted: {r.stderr!r}')
    os.chmod(path, 0o600)
    c = spawn('connect-auth', args)
    try:
        wait_log(c, 'connected transport=', 15)

        def login(user, pw):
            s = socket.create_connection(('127.0.0.1', 1081), timeout=10)
            s.sendall(b'\x05\x01\x02')
            check(recv_exact(s, 2) == b'\x05\x02', 'username/password not required')
            s.sendall(b'\x01' + bytes([len(user)]) + user + bytes([len(pw)]) + pw)
            return s, recv_exact(s, 2)

        s, st = login(b'tunnel', b'wrong')
        check(st[1] != 0, 'wrong password accepted')
        s.close()
        s, st = login(b'tunnel', b'pa55:word')
        check(st == b'\x01\x00', f'right password refused: {st!r}')
        s.sendall(b'\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00')
        relay = socks_reply(s)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(10)
        u.bind(('127.0.0.1', 0))
        u.sendto(udp_header(TGT_IP, UDP_ECHO_PORT) + b'authed', relay)
        check(u.recvfrom(100)[0][10:] == b'authed', 'no echo after authentication')
        u.close()
        s.close()
    finally:
        c.send_signal(signal.SIGTERM)
        c.wait(timeout=10)


def check_processes_and_logs():
    for p in (W.serve, W.connect):
        check(p.poll() is None, f'{p.name} died:\n{log_of(p)[-2000:]}')
    # Never log destinations (SPEC): neither side names the target.
    for p in (W.serve, W.connect):
        check(TGT_IP not in log_of(p) and TARGET_NAME not in log_of(p), f'{p.name} logged a destination')


TESTS = [test_curl_through_transparent_redirect, test_dns_over_tcp_through_redirect, test_udp_associate_dns,
         test_udp_bulk_echo_byte_exact, test_udp_association_ends_with_control, test_half_close_through_socks,
         test_200_concurrent_socks_sessions, test_socks5_auth_file, test_udp_policy_and_session_loss]


def main():
    global WORK
    if os.geteuid() != 0 or not shutil.which('ip') or run(['ip', 'netns', 'list']).returncode != 0:
        print('SKIP: needs root and ip netns')
        return 77
    for tool in ('redsocks', 'dnsmasq', 'iptables', 'curl', 'ssh-keygen'):
        if not shutil.which(tool):
            print(f'FAIL: {tool} is missing (scripts/install-deps.sh installs it)')
            return 1
    WORK = tempfile.mkdtemp(prefix='alknet-netns-')
    failed = []
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        t0 = time.monotonic()
        build()
        print(f'namespaces up ({time.monotonic() - t0:.1f}s)', flush=True)
        for t in TESTS:
            if ONLY and not any(o in t.__name__ for o in ONLY):
                continue
            run_test(t, t.__name__, failed)
        run_test(check_processes_and_logs, 'check_processes_and_logs', failed)
    except TestFailure as e:
        failed.append('setup')
        print(f'FAIL setup: {e}', flush=True)
    finally:
        teardown()
    if failed:
        for p in PROCS:
            print(f'--- {p.name} log (tail)\n{log_of(p)[-1500:]}')
        shutil.rmtree(WORK, ignore_errors=True)
        print(f'FAILED: {", ".join(failed)}')
        return 1
    shutil.rmtree(WORK, ignore_errors=True)
    print('all passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
