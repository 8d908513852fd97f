#!/usr/bin/env python3
"""alknet vs OpenSSH, side by side, on loopback.

    python3 bench/run.py [--quick] [--out bench/out]

Builds a release alknet, starts every server and client it needs on 127.0.0.1 (alknet serve +
connect per transport, one OpenSSH sshd per OpenSSH client so per-session CPU and memory can be
attributed, `ssh -N -D -L` with aes128-gcm and chacha20-poly1305, and `alknet connect` against
sshd too), runs the paths interleaved, repeats, and prints medians with the ratio alknet ÷ OpenSSH.
Writes OUT/result.json and OUT/chart.png. A benchmark, not a test: nothing here asserts a time.

Only the Python standard library, plus bench/loadgen.cpp (compiled here with g++): it is the
HTTP responder and the client of the connect+GET latency rows, so those time the tunnels and not
Python. The other traffic helpers (bulk source/sink, idle server) run as separate processes of
this same file (`--helper ...`) so the measuring client never shares a GIL with them.
"""
import argparse
import concurrent.futures
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build-release")
ALKNET = os.path.join(BUILD, "src", "cli", "alknet")
LOADGEN_SRC = os.path.join(ROOT, "bench", "loadgen.cpp")
LOADGEN = os.path.join(BUILD, "bench_loadgen")
HZ = os.sysconf("SC_CLK_TCK")
LOCAL = "127.0.0.1"


# ───────────────────────────── helpers (child processes) ─────────────────────────────

def helper_bulk(port):
    """Bulk source/sink. Client sends 'D'|'U' + u64 length. D: we send length bytes and close.
    U: we read length bytes and answer one byte, so the client's clock stops when we have it all."""
    lsock = socket.create_server((LOCAL, port), backlog=128)
    chunk = memoryview(os.urandom(1 << 20))

    def serve(c):
        with c:
            hdr = b""
            while len(hdr) < 9:
                b = c.recv(9 - len(hdr))
                if not b:
                    return
                hdr += b
            kind, n = hdr[:1], struct.unpack("!Q", hdr[1:])[0]
            if kind == b"D":
                while n > 0:
                    k = c.send(chunk[: min(n, len(chunk))])
                    n -= k
                c.shutdown(socket.SHUT_WR)
                c.recv(1)
            else:
                buf = bytearray(1 << 20)
                while n > 0:
                    k = c.recv_into(buf)
                    if not k:
                        return
                    n -= k
                c.sendall(b"k")

    while True:
        c, _ = lsock.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def helper_idle(port):
    """Accepts and holds connections without reading or writing, until the peer closes."""
    sel = selectors.DefaultSelector()
    lsock = socket.create_server((LOCAL, port), backlog=4096)
    sel.register(lsock, selectors.EVENT_READ, None)
    while True:
        for key, _ in sel.select():
            if key.data is None:
                c, _ = lsock.accept()
                sel.register(c, selectors.EVENT_READ, 1)
            else:
                try:
                    b = key.fileobj.recv(4096)
                except OSError:
                    b = b""
                if not b:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()


# ───────────────────────────── measuring client side ─────────────────────────────

def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def socks_connect(socks_port, host, port, timeout=30):
    """SOCKS5 CONNECT the way curl does it: greeting, wait, request, wait. Returns the socket."""
    s = socket.create_connection((LOCAL, socks_port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise OSError("SOCKS5 method refused")
        h = host.encode()
        s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + struct.pack("!H", port))
        rep = recv_exact(s, 4)
        if rep[1] != 0:
            raise OSError(f"SOCKS5 reply {rep[1]}")
        atyp = rep[3]
        rest = {1: 4, 4: 16}.get(atyp)
        if rest is None:
            rest = recv_exact(s, 1)[0]
        recv_exact(s, rest + 2)
        return s
    except BaseException:
        s.close()
        raise


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        b = s.recv(n - len(out))
        if not b:
            raise OSError("connection closed early")
        out += b
    return out


def socks_gets(socks_port, http_port, n, rounds=1):
    """Connect + small GET through SOCKS (domain name "localhost", resolved by the far side), by
    `loadgen socks`: rounds x (n started at once). Latencies in ms, or raises RuntimeError."""
    argv = [LOADGEN, "socks", str(socks_port), str(http_port), str(n), str(rounds)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=15 * rounds + 30)
    if r.returncode != 0:
        raise RuntimeError(f"loadgen exited with {r.returncode}: {r.stderr.strip()[-300:]}")
    j = json.loads(r.stdout)
    if j["failed"]:
        raise RuntimeError(f"{j['failed']} of {n * rounds} connect+GETs failed: {r.stderr.strip()[-300:]}")
    return j["lat_ms"]


def socks_bulk(socks_port, bulk_port, kind, nbytes):
    """One bulk transfer through SOCKS. Returns (bytes, seconds)."""
    s = socks_connect(socks_port, LOCAL, bulk_port, timeout=120)
    with s:
        buf = bytearray(1 << 20)
        mv = memoryview(buf)
        t0 = time.perf_counter()
        s.sendall(kind + struct.pack("!Q", nbytes))
        n = 0
        if kind == b"D":
            while True:
                k = s.recv_into(buf)
                if not k:
                    break
                n += k
            s.sendall(b"x")
        else:
            while n < nbytes:
                n += s.send(mv[: min(len(buf), nbytes - n)])
            recv_exact(s, 1)
        return n, time.perf_counter() - t0


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ───────────────────────────── /proc accounting ─────────────────────────────

def proc_tree(pid):
    """pid and all its descendants (sshd forks a monitor and a session process per client)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids):
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
        except (OSError, ValueError):
            pass
    return total


def rss_kib(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


# ───────────────────────────── processes under test ─────────────────────────────

class Procs:
    """Every process we start, so a finally: can stop them all (by pid, never by name)."""

    def __init__(self):
        self.all = []

    def start(self, argv, log_path, **kw):
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        logf.close()
        self.all.append(p)
        return p

    def stop(self, p, grace=3.0):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.all:
            self.all.remove(p)

    def stop_all(self):
        for p in reversed(list(self.all)):
            self.stop(p)


class Path:
    """One client+server pair under test: a SOCKS5 port and one -L forward to iperf3."""

    def __init__(self, name, side, start_fn):
        self.name, self.side, self.start_fn = name, side, start_fn
        self.client = self.server = self.iperf = None
        self.socks = self.lport = None

    def server_pids(self):
        return proc_tree(self.server.pid)

    def client_pids(self):
        return [self.client.pid]


def wait_ready(path, http_port, timeout=15.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        for p in (path.client, path.server):
            if p is not None and p.poll() is not None:
                raise RuntimeError(f"{path.name}: process exited with {p.returncode}")
        try:
            socks_gets(path.socks, http_port, 1)
            return
        except RuntimeError as e:
            last = e
            time.sleep(0.1)
    raise RuntimeError(f"{path.name}: SOCKS path not ready after {timeout}s ({last})")


def tail(path, n=3):
    try:
        with open(path, errors="replace") as f:
            return " | ".join(line.strip() for line in f.readlines()[-n:])
    except OSError:
        return ""


# ───────────────────────────── scenarios ─────────────────────────────

def iperf(lport, seconds, reverse=False, parallel=1):
    argv = ["iperf3", "-c", LOCAL, "-p", str(lport), "-t", str(seconds), "-J", "-O", "1"]
    if reverse:
        argv.append("-R")
    if parallel > 1:
        argv += ["-P", str(parallel)]
    for attempt in range(5):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        j = json.loads(r.stdout)
        if "busy" in j.get("error", ""):  # the previous test is still being torn down
            time.sleep(1)
            continue
        break
    if "error" in j:
        raise RuntimeError("iperf3: " + j["error"])
    end = j["end"]["sum_received"]
    return end["bytes"], end["seconds"]


def measure_cpu(path, fn):
    """Runs fn() -> (bytes, seconds) and adds client/server CPU seconds spent meanwhile."""
    cp, sp = path.client_pids(), path.server_pids()
    c0, s0 = cpu_seconds(cp), cpu_seconds(sp)
    nbytes, secs = fn()
    c1, s1 = cpu_seconds(cp), cpu_seconds(sp)
    return nbytes, secs, c1 - c0, s1 - s0


def run_idle(path, n, idle_port):
    """Open n idle SOCKS tunnels; RSS growth per tunnel in KiB for client and server."""
    time.sleep(0.3)
    cp, sp = path.client_pids(), path.server_pids()
    c0, s0 = rss_kib(cp), rss_kib(sp)
    socks = []
    lock = threading.Lock()

    def one(_):
        s = socks_connect(path.socks, LOCAL, idle_port)
        with lock:
            socks.append(s)

    try:
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            list(ex.map(one, range(n)))
        time.sleep(0.5)
        sp = path.server_pids()
        c1, s1 = rss_kib(cp), rss_kib(sp)
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    return (c1 - c0) / n, (s1 - s0) / n


def scenarios(cfg, ports):
    """(key, label, unit, better, fn(path) -> dict of metric values) in run order."""
    T = cfg["seconds"]

    def bulk_L(reverse):
        def f(p):
            b, s, cc, sc = measure_cpu(p, lambda: iperf(p.lport, T, reverse=reverse))
            gb = b / 1e9
            return {"gbit": b * 8 / s / 1e9, "cpu_client": cc / gb, "cpu_server": sc / gb}
        return f

    def bulk_P8(p):
        b, s = iperf(p.lport, T, parallel=8)
        return {"gbit": b * 8 / s / 1e9}

    def bulk_socks(kind):
        def f(p):
            b, s, cc, sc = measure_cpu(p, lambda: socks_bulk(p.socks, ports["bulk"], kind, cfg["socks_bytes"]))
            gb = b / 1e9
            return {"gbit": b * 8 / s / 1e9, "cpu_client": cc / gb, "cpu_server": sc / gb}
        return f

    def p50_p99(ms):
        return {"p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99)}

    def lat_seq(p):
        return p50_p99(socks_gets(p.socks, ports["http"], 1, cfg["seq"]))

    def lat_conc(p):
        return p50_p99(socks_gets(p.socks, ports["http"], cfg["conc"]))

    def lat_fair(p):
        # Small requests on fresh channels while one -L channel carries a download: a session
        # that lets the bulk channel hog it shows here.
        res = {}

        def bulk():
            try:
                res["bulk"] = iperf(p.lport, T, reverse=True)
            except Exception as e:
                res["error"] = e

        th = threading.Thread(target=bulk)
        th.start()
        time.sleep(1.5)
        xs = []
        t_end = time.time() + max(1.0, T - 2.5)
        while time.time() < t_end and len(xs) < cfg["seq"]:
            xs += socks_gets(p.socks, ports["http"], 1, 10)
        th.join()
        if "error" in res:
            raise RuntimeError(f"the bulk transfer failed, so this was no fairness test: {res['error']}")
        return p50_p99(xs)

    def idle(p):
        c, s = run_idle(p, cfg["idle"], ports["idle"])
        return {"client_kib": c, "server_kib": s}

    return [
        ("idle", f"{cfg['idle']} idle SOCKS tunnels: RSS per tunnel", idle),
        ("L_up", "-L 1 conn upload (iperf3)", bulk_L(False)),
        ("L_down", "-L 1 conn download (iperf3 -R)", bulk_L(True)),
        ("L_p8", "-L 8 parallel upload (iperf3 -P 8)", bulk_P8),
        ("socks_down", f"SOCKS 1 conn download {cfg['socks_bytes'] >> 20} MiB", bulk_socks(b"D")),
        ("socks_up", f"SOCKS 1 conn upload {cfg['socks_bytes'] >> 20} MiB", bulk_socks(b"U")),
        ("lat_seq", f"SOCKS connect+GET, {cfg['seq']} sequential", lat_seq),
        ("lat_conc", f"SOCKS connect+GET, {cfg['conc']} concurrent", lat_conc),
        ("lat_fair", "SOCKS connect+GET during a -L download", lat_fair),
    ]


# metric -> (unit, higher is better)
METRICS = {
    "gbit": ("Gbit/s", True), "cpu_client": ("CPU s/GB client", False), "cpu_server": ("CPU s/GB server", False),
    "p50": ("ms p50", False), "p99": ("ms p99", False),
    "client_kib": ("KiB/tunnel client", False), "server_kib": ("KiB/tunnel server", False),
}


# ───────────────────────────── setup ─────────────────────────────

def sh(argv, **kw):
    return subprocess.run(argv, check=True, **kw)


def build(log):
    if not os.path.isdir(BUILD):
        sh(["meson", "setup", BUILD, "-Dbuildtype=release", "-Dtests=false"], cwd=ROOT, stdout=log, stderr=log)
    sh(["ninja", "-C", BUILD, "src/cli/alknet"], cwd=ROOT, stdout=log, stderr=log)


def build_loadgen():
    """Compiles bench/loadgen.cpp next to alknet. Returns None, or why it failed."""
    os.makedirs(BUILD, exist_ok=True)
    argv = ["g++", "-O2", "-std=c++20", "-o", LOADGEN, LOADGEN_SRC]
    try:
        r = subprocess.run(argv, capture_output=True, text=True)
    except FileNotFoundError:
        return "g++ not found (apt-get install g++)"
    return None if r.returncode == 0 else f"{' '.join(argv)} failed:\n{r.stderr.strip()[-3000:]}"


def make_keys(d):
    for name in ("alk_host", "sshd_host", "user"):
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", os.path.join(d, name)])
    shutil.copy(os.path.join(d, "user.pub"), os.path.join(d, "authorized_keys"))
    sh(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", os.path.join(d, "tls.key"), "-out", os.path.join(d, "tls.crt"), "-days", "2",
        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def sshd_config(d, name, port):
    conf = os.path.join(d, f"sshd_{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""Port {port}
ListenAddress {LOCAL}
HostKey {d}/sshd_host
AuthorizedKeysFile {d}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
MaxStartups 100
LogLevel ERROR
""")
    return conf


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 run, shorter scenarios")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--runs", type=int, help="repeats (default 3, --quick 1)")
    ap.add_argument("--only", help="comma-separated path names to run (e.g. alknet/tcp,ssh/aes128-gcm)")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--helper", nargs=2, metavar=("KIND", "PORT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.helper:
        {"bulk": helper_bulk, "idle": helper_idle}[a.helper[0]](int(a.helper[1]))
        return 0

    cfg = dict(seconds=5, socks_bytes=512 << 20, seq=1000, conc=100, idle=10000, runs=3) if not a.quick else \
        dict(seconds=2, socks_bytes=256 << 20, seq=200, conc=100, idle=10000, runs=1)
    if a.runs:
        cfg["runs"] = a.runs
    os.makedirs(a.out, exist_ok=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit: 10,000s of sockets
    # Each idle tunnel is one descriptor in this process, the client, the server and the idle
    # helper: the row shrinks to what the hard limit allows, and says so in its name.
    if hard != resource.RLIM_INFINITY and cfg["idle"] > hard - 256:
        cfg["idle"] = max(100, hard - 256)
        print(f"note: RLIMIT_NOFILE hard limit {hard}: {cfg['idle']} idle tunnels instead of 10,000", flush=True)
    os.makedirs("/run/sshd", exist_ok=True)

    work = tempfile.mkdtemp(prefix="alknet-bench.")
    procs = Procs()
    log = open(os.path.join(work, "build.log"), "wb")
    try:
        if not a.skip_build:
            print("building release alknet (build-release/) ...", flush=True)
            try:
                build(log)
            except subprocess.CalledProcessError:
                print("build failed:\n" + tail(os.path.join(work, "build.log"), 30), file=sys.stderr)
                return 1
        err = build_loadgen()
        if err:
            print("cannot build the load generator: " + err, file=sys.stderr)
            return 1
        make_keys(work)
        ports = {k: free_port() for k in ("bulk", "http", "idle")}
        for k in ("bulk", "idle"):
            procs.start([sys.executable, os.path.abspath(__file__), "--helper", k, str(ports[k])],
                        os.path.join(work, f"helper_{k}.log"))
        procs.start([LOADGEN, "http", str(ports["http"])], os.path.join(work, "loadgen_http.log"))
        time.sleep(0.3)
        return bench(a, cfg, work, procs, ports)
    finally:
        procs.stop_all()
        log.close()
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)


def path_defs(work, ports):
    """Every client/server pair. Each start function starts fresh processes and returns the Path."""
    fwd = lambda p: f"{LOCAL}:{p.lport}:{LOCAL}:{p.iperf_port}"

    def alknet_pair(transport):
        def start(procs, p):
            port = free_port(socket.SOCK_DGRAM if transport == "quic" else socket.SOCK_STREAM)
            argv = [ALKNET, "serve", "--quiet", "--transport", transport, "--listen", f"{LOCAL}:{port}",
                    "--key", f"{work}/alk_host", "--authorized-keys", f"{work}/authorized_keys"]
            if transport != "tcp":
                argv += ["--tls-cert", f"{work}/tls.crt", "--tls-key", f"{work}/tls.key"]
            slog = f"{work}/serve_{transport}.log"
            p.server = procs.start(argv, slog)
            time.sleep(0.4)
            if p.server.poll() is not None:
                raise SkipPath(f"alknet serve --transport {transport} exited: {tail(slog, 2)}")
            kh = f"{work}/known_hosts_{transport}"
            argv = [ALKNET, "connect", "--quiet", "--transport", transport, "--server", f"{LOCAL}:{port}",
                    "--identity", f"{work}/user", "--known-hosts", kh,
                    "--socks5", f"{LOCAL}:{p.socks}", "--forward", fwd(p)]
            if transport != "tcp":
                argv += ["--tls-ca", f"{work}/tls.crt", "--tls-server-name", "localhost"]
            clog = f"{work}/connect_{transport}.log"
            p.client = procs.start(argv, clog)
            time.sleep(0.3)
            if p.client.poll() is not None:
                raise SkipPath(f"alknet connect --transport {transport} exited: {tail(clog, 2)}")
        return start

    def sshd(procs, p, name):
        port = free_port()
        p.server = procs.start(["/usr/sbin/sshd", "-D", "-e", "-f", sshd_config(work, name, port)],
                               f"{work}/sshd_{name}.log")
        time.sleep(0.3)
        return port

    def alknet_to_sshd(procs, p):
        port = sshd(procs, p, "alk")
        p.client = procs.start([ALKNET, "connect", "--quiet", "--server", f"{LOCAL}:{port}", "--user", "root",
                                "--identity", f"{work}/user", "--known-hosts", f"{work}/known_hosts_sshd",
                                "--socks5", f"{LOCAL}:{p.socks}", "--forward", fwd(p)],
                               f"{work}/connect_sshd.log")

    def openssh(cipher):
        def start(procs, p):
            port = sshd(procs, p, cipher.split("-")[0])
            p.client = procs.start(
                ["ssh", "-F", "/dev/null", "-N", "-c", cipher, "-i", f"{work}/user", "-p", str(port),
                 "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "LogLevel=ERROR", "-D", f"{LOCAL}:{p.socks}", "-L", fwd(p), f"root@{LOCAL}"],
                f"{work}/ssh_{cipher}.log")
        return start

    return [
        Path("alknet/tcp", "alknet", alknet_pair("tcp")),
        Path("alknet/tls", "alknet", alknet_pair("tls")),
        Path("alknet/quic", "alknet", alknet_pair("quic")),
        Path("alknet→sshd", "alknet", alknet_to_sshd),
        Path("ssh/aes128-gcm", "openssh", openssh("aes128-gcm@openssh.com")),
        Path("ssh/chacha20", "openssh", openssh("chacha20-poly1305@openssh.com")),
    ]


class SkipPath(Exception):
    pass


def start_path(procs, p, ports):
    p.socks, p.lport, p.iperf_port = free_port(), free_port(), free_port()
    # One iperf3 server per path: a server still closing the previous path's test answers "busy".
    p.iperf = procs.start(["iperf3", "-s", "-B", LOCAL, "-p", str(p.iperf_port)], os.devnull)
    p.start_fn(procs, p)
    wait_ready(p, ports["http"])


def stop_path(procs, p):
    for proc in (p.client, p.server, p.iperf):
        if proc is not None:
            procs.stop(proc)
    p.client = p.server = p.iperf = None


def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    flags = open("/proc/cpuinfo").read()
    # Every TCP socket of both sides uses it; with bbr the kernel paces each one by timer.
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            tcp_cc = f.read().strip()
    except OSError:
        tcp_cc = "?"
    return {"nproc": os.cpu_count(), "cpu": model, "aes_ni": " aes " in flags, "kernel": platform.release(),
            "tcp_cc": tcp_cc, "loadavg": load, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def bench(a, cfg, work, procs, ports):
    paths = path_defs(work, ports)
    if a.only:
        want = set(a.only.split(","))
        paths = [p for p in paths if p.name in want]
    mach = machine()
    print(f"machine: {mach['nproc']} cpus, {mach['cpu']}, kernel {mach['kernel']}, tcp {mach['tcp_cc']}, "
          f"load {mach['loadavg']}")
    skipped = {}
    # Probe each path once so unavailable transports are dropped (and said why) before the runs.
    for p in list(paths):
        try:
            start_path(procs, p, ports)
        except (SkipPath, RuntimeError) as e:
            skipped[p.name] = str(e)
            print(f"skip {p.name}: {e}", flush=True)
            paths.remove(p)
        finally:
            stop_path(procs, p)
    if not any(p.side == "alknet" for p in paths) or not any(p.side == "openssh" for p in paths):
        print("need at least one alknet and one OpenSSH path", file=sys.stderr)
        return 1

    scen = scenarios(cfg, ports)
    raw = {key: {p.name: [] for p in paths} for key, _, _ in scen}
    loads = []
    t_start = time.time()
    for run in range(cfg["runs"]):
        loads.append(machine()["loadavg"])
        for p in paths:
            start_path(procs, p, ports)
        try:
            for si, (key, label, fn) in enumerate(scen):
                # Interleave: every path does this scenario before the next; the order rotates
                # per run so no side always goes first (warm caches, turbo, neighbours' builds).
                k = (run + si) % len(paths)
                for p in paths[k:] + paths[:k]:
                    print(f"[run {run + 1}/{cfg['runs']} {time.time() - t_start:5.0f}s] {label:<44} {p.name:<15}",
                          end=" ", flush=True)
                    try:
                        v = fn(p)
                    except Exception as e:  # one failed measurement must not lose the rest
                        print(f"FAILED: {e}", flush=True)
                        v = {"error": str(e)}
                    else:
                        print("  ".join(f"{m}={x:.3g}" for m, x in v.items()), flush=True)
                    raw[key][p.name].append(v)
        finally:
            for p in paths:
                stop_path(procs, p)

    return report(a, cfg, mach, loads, skipped, paths, scen, raw)


def median_of(vals, metric):
    xs = [v[metric] for v in vals if metric in v]
    return statistics.median(xs) if xs else None


def report(a, cfg, mach, loads, skipped, paths, scen, raw):
    names = [p.name for p in paths]
    ssh_names = [p.name for p in paths if p.side == "openssh"]
    alk_names = [p.name for p in paths if p.side == "alknet"]
    rows = []
    for key, label, _ in scen:
        metrics = []
        for vals in raw[key].values():
            for v in vals:
                metrics += [m for m in v if m in METRICS and m not in metrics]
        for m in metrics:
            unit, higher = METRICS[m]
            med = {n: median_of(raw[key][n], m) for n in names}
            ssh_vals = [med[n] for n in ssh_names if med[n] is not None]
            best_ssh = (max if higher else min)(ssh_vals) if ssh_vals else None
            ratios = {n: (med[n] / best_ssh if med[n] is not None and best_ssh else None) for n in alk_names}
            rows.append({"scenario": key, "label": label, "metric": m, "unit": unit, "higher_is_better": higher,
                         "median": med, "best_openssh": best_ssh, "ratio_vs_best_openssh": ratios})

    # transport ratios (the tls ÷ tcp and quic ÷ tcp goals)
    transport_ratios = {}
    for r in rows:
        if r["metric"] != "gbit":
            continue
        tcp = r["median"].get("alknet/tcp")
        for t in ("alknet/tls", "alknet/quic"):
            if tcp and r["median"].get(t):
                transport_ratios.setdefault(t + " ÷ tcp", {})[r["scenario"]] = r["median"][t] / tcp

    fmt = lambda x: "—" if x is None else (f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}")
    short = {n: n.replace("alknet", "alk").replace("aes128-gcm", "aes").replace("chacha20", "chacha") for n in names}
    head = f"{'scenario':<40} {'metric':<18}" + "".join(f"{short[n]:>11}" for n in names) + \
        "".join(f"{'÷ssh ' + short[n]:>14}" for n in alk_names)
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['label'][:40]:<40} {r['unit']:<18}" + "".join(f"{fmt(r['median'][n]):>11}" for n in names) +
                     "".join(f"{fmt(r['ratio_vs_best_openssh'][n]):>14}" for n in alk_names))
    table = "\n".join(lines)
    print()
    print(f"medians of {cfg['runs']} run(s); ÷ssh = alknet ÷ best OpenSSH cipher for that row "
          f"(higher is better for Gbit/s, lower for the rest)")
    print(table)
    for k, v in transport_ratios.items():
        print(f"{k}: " + ", ".join(f"{s} {x:.2f}" for s, x in v.items()))
    for n, why in skipped.items():
        print(f"skipped {n}: {why}")

    result = {"machine": mach, "loadavg_per_run": loads, "config": cfg, "quick": a.quick, "paths": names,
              "skipped": skipped, "rows": rows, "transport_ratios": transport_ratios, "raw": raw, "table": table}
    with open(os.path.join(a.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
    print(f"wrote {os.path.join(a.out, 'result.json')}")
    chart(a.out, rows, names)
    return 0


def chart(out, rows, names):
    if not shutil.which("gnuplot"):
        subprocess.run(["apt-get", "install", "-y", "gnuplot-nox"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not shutil.which("gnuplot"):
        print("note: no gnuplot (apt-get install -y gnuplot-nox failed); chart skipped")
        return
    panels = [("Throughput, Gbit/s (higher is better)", [r for r in rows if r["metric"] == "gbit"]),
              ("SOCKS connect + GET, ms (lower is better)", [r for r in rows if r["metric"] in ("p50", "p99")]),
              ("CPU s/GB and KiB/idle tunnel (lower is better)",
               [r for r in rows if r["metric"].startswith("cpu_") or r["metric"].endswith("_kib")])]
    script = ["set terminal pngcairo size 1500,1300 font 'sans,10'", f"set output '{out}/chart.png'",
              "set multiplot layout 3,1", "set style data histograms", "set style histogram clustered gap 1",
              "set style fill solid 0.85 border -1", "set key outside right top", "set grid ytics",
              "set xtics rotate by -20 scale 0 noenhanced", "set key noenhanced", "set datafile missing '?'"]
    for i, (title, rs) in enumerate(panels):
        data = os.path.join(out, f".chart{i}.dat")
        with open(data, "w") as f:
            f.write("label " + " ".join(f'"{n}"' for n in names) + "\n")
            for r in rs:
                lab = f"{r['scenario']} {r['metric']}"
                f.write(f'"{lab}" ' + " ".join("?" if r["median"][n] is None else f"{r['median'][n]:.4g}"
                                               for n in names) + "\n")
        script += [f"set title '{title}' noenhanced", "set logscale y; set yrange [*:*]" if i > 0 else "unset logscale y; set yrange [0:*]",
                   "plot " + ", ".join(f"'{data}' using {j + 2}:xtic(1) title columnhead({j + 2})"
                                       for j in range(len(names)))]
    script.append("unset multiplot")
    r = subprocess.run(["gnuplot"], input="\n".join(script), text=True, capture_output=True)
    for i in range(len(panels)):
        try:
            os.remove(os.path.join(out, f".chart{i}.dat"))
        except OSError:
            pass
    if r.returncode != 0:
        print("note: gnuplot failed, chart skipped: " + r.stderr.strip()[:300])
    else:
        print(f"wrote {out}/chart.png")


if __name__ == "__main__":
    sys.exit(main())
