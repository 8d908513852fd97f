#!/usr/bin/env python3
"""alknet serve against real peers: stock OpenSSH ssh, curl, ssh-keygen keys and certificates.

usage: serve_test.py ALKNET_BINARY   (the binary must accept `serve FLAGS...`)

Every server this test starts listens on a free loopback port and is stopped at the end.
"""
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

BIN = os.path.abspath(sys.argv[1])
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FAILURES = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, **kw)


class Server:
    def __init__(self, tmp, *flags, name="srv"):
        self.port = free_port()
        self.logpath = os.path.join(tmp, f"{name}-{self.port}.log")
        self.logf = open(self.logpath, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "--listen", f"127.0.0.1:{self.port}", *flags],
                                     stdout=subprocess.DEVNULL, stderr=self.logf)
        if not wait_port(self.port):
            self.stop()
            raise RuntimeError("server did not start: " + self.log())

    def log(self):
        self.logf.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=5.0):
        end = time.time() + timeout
        while time.time() < end:
            if re.search(pattern, self.log(), re.M):
                return True
            time.sleep(0.05)
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


class Env:
    def __init__(self, tmp):
        self.tmp = tmp
        k = lambda n: os.path.join(tmp, n)
        self.k = k
        for name in ["host", "user", "wrong1", "wrong2", "wrong3", "wrong4", "certkey", "ca", "otherca"]:
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", k(name)], check=True)
        with open(k("authorized_keys"), "w") as f:
            f.write("# test\n" + open(k("user.pub")).read())
        # Certificates for certkey, one per refusal reason plus a valid one.
        certs = {
            "valid": ["-s", k("ca"), "-n", "alknet", "-V", "-5m:+1h"],
            "expired": ["-s", k("ca"), "-n", "alknet", "-V", "20200101:20200102"],
            "principal": ["-s", k("ca"), "-n", "someoneelse", "-V", "-5m:+1h"],
            "source": ["-s", k("ca"), "-n", "alknet", "-V", "-5m:+1h", "-O", "source-address=10.9.8.0/24"],
            "untrusted": ["-s", k("otherca"), "-n", "alknet", "-V", "-5m:+1h"],
        }
        for name, args in certs.items():
            d = k("cert-" + name)
            os.mkdir(d)
            shutil.copy(k("certkey"), os.path.join(d, "id"))
            shutil.copy(k("certkey.pub"), os.path.join(d, "id.pub"))
            os.chmod(os.path.join(d, "id"), 0o600)
            subprocess.run(["ssh-keygen", "-q", *args, "-I", name, os.path.join(d, "id.pub")], check=True)
        self.certkey_fp = fingerprint(k("certkey.pub"))
        # Something to download through the tunnels.
        self.www = k("www")
        os.mkdir(self.www)
        self.payload = os.urandom(3 * 1024 * 1024 + 17)
        with open(os.path.join(self.www, "blob"), "wb") as f:
            f.write(self.payload)
        self.http_port = free_port()
        self.http = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(self.http_port)],
                                     cwd=self.www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_port(self.http_port), "http.server did not start"

    def ssh(self, port, *args, identity=None, extra=()):
        cmd = ["ssh", "-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
               "-p", str(port), "-l", "alknet"]
        for i in ([identity] if isinstance(identity, str) else (identity or [self.k("user")])):
            cmd += ["-i", i]
        return cmd + list(extra) + ["127.0.0.1", *args]

    def close(self):
        self.http.terminate()
        self.http.wait()


def fingerprint(pub):
    out = run(["ssh-keygen", "-l", "-f", pub], check=True).stdout.decode()
    return out.split()[1]


def curl(socks_port, url, timeout=20):
    r = run(["curl", "-s", "-f", "--max-time", str(timeout), "--socks5-hostname", f"127.0.0.1:{socks_port}", url])
    return r.returncode, r.stdout


def start_ssh_D(env, srv, *extra, identity=None):
    port = free_port()
    p = subprocess.Popen(env.ssh(srv.port, identity=identity, extra=["-N", "-D", f"127.0.0.1:{port}", *extra]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if not wait_port(port):
        p.kill()
        raise RuntimeError("ssh -D did not come up: " + p.stderr.read().decode())
    return p, port


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def check(name, fn, *a):
    t0 = time.time()
    try:
        fn(*a)
        print(f"ok   {name} ({time.time() - t0:.1f}s)", flush=True)
    except Exception:
        FAILURES.append(name)
        print(f"FAIL {name}\n" + traceback.format_exc(), flush=True)


# -- the tests ----------------------------------------------------------------------------------

def t_banner(env, srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        line = s.recv(256)
    assert line.startswith(b"SSH-2.0-alknet_"), line


def t_socks_curl(env, srv):
    p, port = start_ssh_D(env, srv)
    try:
        for host in ["127.0.0.1", "localhost"]:
            rc, body = curl(port, f"http://{host}:{env.http_port}/blob")
            assert rc == 0, f"curl rc={rc}"
            assert hashlib.sha256(body).digest() == hashlib.sha256(env.payload).digest(), "payload differs"
        # Several at once over one session.
        results = []
        threads = [threading.Thread(target=lambda: results.append(curl(port, f"http://localhost:{env.http_port}/blob")))
                   for _ in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert all(rc == 0 and body == env.payload for rc, body in results), "concurrent downloads failed"
        # A closed port: curl fails fast, the session and other channels go on.
        rc, _ = curl(port, f"http://127.0.0.1:{free_port()}/", timeout=5)
        assert rc != 0
        rc, body = curl(port, f"http://127.0.0.1:{env.http_port}/blob")
        assert rc == 0 and body == env.payload
    finally:
        stop(p)


def t_ssh_W(env, srv):
    r = run(env.ssh(srv.port, extra=["-W", f"127.0.0.1:{env.http_port}"]),
            input=b"GET /blob HTTP/1.0\r\n\r\n", timeout=20)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), head[:100]
    assert body == env.payload, f"got {len(body)} bytes"


def t_refused_destinations(env, srv):
    for target in ["169.254.169.254:80", "alknet-control:1", "[fe80::1]:80"]:
        r = run(env.ssh(srv.port, extra=["-W", target]), input=b"", timeout=20)
        assert r.returncode != 0, target
        assert b"administratively prohibited" in r.stderr or b"stdio forwarding failed" in r.stderr, (target, r.stderr)


def t_remote_forward(env, srv):
    rport = free_port()
    p = subprocess.Popen(env.ssh(srv.port, extra=["-N", "-o", "ExitOnForwardFailure=yes",
                                                  "-R", f"{rport}:127.0.0.1:{env.http_port}"]),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_port(rport), "server did not listen for -R"
        r = run(["curl", "-s", "-f", "--max-time", "20", f"http://127.0.0.1:{rport}/blob"])
        assert r.returncode == 0 and r.stdout == env.payload, f"rc={r.returncode} len={len(r.stdout)}"
    finally:
        stop(p)
    # The session ended: the listener goes with it.
    end = time.time() + 5
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", rport), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            break
    else:
        raise AssertionError("-R listener still open after the session ended")
    # Privileged ports are refused.
    r = run(env.ssh(srv.port, extra=["-N", "-o", "ExitOnForwardFailure=yes", "-R", f"80:127.0.0.1:{env.http_port}"]),
            input=b"", timeout=20)
    assert r.returncode != 0 and b"remote port forwarding failed" in r.stderr, r.stderr


def t_wrong_key(env, srv):
    r = run(env.ssh(srv.port, "true", identity=env.k("wrong1")), timeout=20)
    assert r.returncode != 0
    fp = fingerprint(env.k("wrong1.pub"))
    assert srv.wait_log(r"^auth attempt remote_addr=127\.0\.0\.1 user=alknet key_fingerprint=" + re.escape(fp) +
                        r" result=reject$"), srv.log()


def t_certs(env, srv):
    fp = re.escape(env.certkey_fp)
    for name in ["expired", "principal", "source", "untrusted"]:
        before = len(re.findall(r"key_fingerprint=" + fp + " result=reject", srv.log()))
        d = env.k("cert-" + name)
        r = run(env.ssh(srv.port, extra=["-N", "-o", "CertificateFile=" + os.path.join(d, "id-cert.pub"), "-W",
                                         f"127.0.0.1:{env.http_port}"], identity=os.path.join(d, "id")),
                input=b"", timeout=20)
        assert r.returncode != 0, f"{name} certificate was accepted"
        assert b"Permission denied" in r.stderr, (name, r.stderr)
        time.sleep(0.2)
        after = len(re.findall(r"key_fingerprint=" + fp + " result=reject", srv.log()))
        assert after > before, f"no reject line for {name}"
    d = env.k("cert-valid")
    r = run(env.ssh(srv.port, extra=["-o", "CertificateFile=" + os.path.join(d, "id-cert.pub"), "-W",
                                     f"127.0.0.1:{env.http_port}"], identity=os.path.join(d, "id")),
            input=b"GET /blob HTTP/1.0\r\n\r\n", timeout=20)
    assert r.returncode == 0 and r.stdout.endswith(env.payload), r.stderr
    assert srv.wait_log(r"key_fingerprint=" + fp + " result=accept$")


def t_shell_refused_session_lives(env, srv):
    sock = env.k(f"mux-{srv.port}")
    port = free_port()
    master = subprocess.Popen(env.ssh(srv.port, extra=["-M", "-S", sock, "-N", "-D", f"127.0.0.1:{port}"]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert wait_port(port)
        for extra, cmd in [([], ["echo", "hi"]), (["-tt"], []), (["-s"], ["sftp"]), (["-A", "-X"], ["true"])]:
            r = run(env.ssh(srv.port, *cmd, extra=["-S", sock, *extra]), input=b"", timeout=20)
            assert r.returncode != 0 and b"hi" not in r.stdout, (extra, cmd, r)
        assert master.poll() is None, "master died"
        rc, body = curl(port, f"http://127.0.0.1:{env.http_port}/blob")
        assert rc == 0 and body == env.payload
    finally:
        stop(master)


def t_max_auth_attempts(env):
    srv = Server(env.tmp, "--key", env.k("host"), "--authorized-keys", env.k("authorized_keys"),
                 "--max-auth-attempts", "2", name="maxauth")
    try:
        ids = [env.k(f"wrong{i}") for i in range(1, 5)] + [env.k("user")]
        r = run(env.ssh(srv.port, "true", identity=ids), timeout=20)
        assert r.returncode != 0
        assert srv.wait_log(r"connection closed")
        rejects = re.findall(r"result=reject$", srv.log(), re.M)
        assert len(rejects) == 2, srv.log()
        assert "result=accept" not in srv.log()
    finally:
        assert srv.stop() == 0


def t_per_ip_cap(env):
    srv = Server(env.tmp, "--key", env.k("host"), "--authorized-keys", env.k("authorized_keys"),
                 "--max-connections-per-ip", "2", name="perip")
    procs = []
    try:
        for _ in range(2):
            procs.append(start_ssh_D(env, srv)[0])
        r = run(env.ssh(srv.port, extra=["-W", f"127.0.0.1:{env.http_port}"]), input=b"", timeout=20)
        assert r.returncode != 0
        assert "reason=max-connections-per-ip" in srv.log()
        stop(procs.pop())
        assert srv.wait_log(r"connection closed")
        time.sleep(0.2)
        r = run(env.ssh(srv.port, extra=["-W", f"127.0.0.1:{env.http_port}"]),
                input=b"GET /blob HTTP/1.0\r\n\r\n", timeout=20)
        assert r.returncode == 0 and r.stdout.endswith(env.payload), "a freed slot was not reusable"
    finally:
        for p in procs:
            stop(p)
        assert srv.stop() == 0


def t_silent_peer_dropped(env):
    # A peer that never speaks is dropped at the handshake timeout; meanwhile others get served.
    srv = Server(env.tmp, "--key", env.k("host"), "--authorized-keys", env.k("authorized_keys"), name="silent")
    try:
        s = socket.create_connection(("127.0.0.1", srv.port))
        r = run(env.ssh(srv.port, extra=["-W", f"127.0.0.1:{env.http_port}"]),
                input=b"GET /blob HTTP/1.0\r\n\r\n", timeout=20)
        assert r.returncode == 0 and r.stdout.endswith(env.payload)
        s.close()
    finally:
        assert srv.stop() == 0


def t_sigterm_with_tunnels(env):
    srv = Server(env.tmp, "--key", env.k("host"), "--authorized-keys", env.k("authorized_keys"), name="sigterm")
    p, port = start_ssh_D(env, srv)
    try:
        # An idle tunnel held open through the session.
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + env.http_port.to_bytes(2, "big"))
        assert s.recv(10)[:2] == b"\x05\x00"
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rc = srv.proc.wait(3)
        assert rc == 0, rc
        assert time.time() - t0 < 3
        s.close()
    finally:
        stop(p)
        srv.stop()


def t_logs(env, srv):
    log = srv.log()
    for line in log.splitlines():
        if line.startswith("alknet serve listening"):
            continue
        assert re.fullmatch(r"(auth attempt remote_addr=\S+ user=\S+ key_fingerprint=SHA256:[A-Za-z0-9+/]+ "
                            r"result=(accept|reject)|connection opened remote_addr=\S+ transport=tcp|"
                            r"connection closed remote_addr=\S+ duration=[0-9.]+)", line), line
    assert "localhost" not in log and f":{env.http_port}" not in log and str(env.http_port) not in log
    assert "169.254" not in log and "alknet-control" not in log


def t_fail2ban_filter(env, srv):
    conf = open(os.path.join(ROOT, "docs", "fail2ban", "alknet.conf")).read()
    m = re.search(r"^failregex\s*=\s*(.+)$", conf, re.M)
    assert m, "no failregex"
    # fail2ban's <HOST> expands to a host/IP group; a strict IP group is enough here.
    rx = m.group(1).strip().replace("<HOST>", r"(?P<host>[0-9a-fA-F.:]+)")
    rx = rx.replace("^", "^", 1)
    rejects = [l for l in srv.log().splitlines() if "result=reject" in l]
    assert rejects
    for l in rejects:
        mm = re.search(rx, l)
        assert mm and mm.group("host") == "127.0.0.1", l
    for l in srv.log().splitlines():
        if "result=reject" not in l:
            assert not re.search(rx, l), l
    # A user name cannot smuggle another address into the line.
    forged = "auth attempt remote_addr=10.0.0.1 user=x?remote_addr=1.2.3.4 key_fingerprint=SHA256:abc result=reject"
    assert re.search(rx, forged).group("host") == "10.0.0.1"


def t_startup_errors(env):
    port = free_port()
    cases = [
        (["--key", env.k("nonexistent")], "error: "),
        (["--key", env.k("user.pub")], "error: "),
        (["--key", env.k("host"), "--authorized-keys", env.k("nonexistent")], "error: "),
    ]
    pem = env.k("pem")
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-m", "PEM", "-N", "", "-f", pem], check=True)
    cases.append((["--key", pem, "--authorized-keys", env.k("authorized_keys")], "PEM"))
    for flags, want in cases:
        r = run([BIN, "serve", "--listen", f"127.0.0.1:{port}", *flags], timeout=10)
        assert r.returncode != 0 and want.encode() in r.stderr, (flags, r.stderr)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run([BIN, "serve", "--listen", f"127.0.0.1:{busy.getsockname()[1]}", "--key", env.k("host"),
                 "--authorized-keys", env.k("authorized_keys")], timeout=10)
        assert r.returncode == 1 and r.stderr.startswith(b"error: "), r.stderr


def main():
    for tool in ["ssh", "ssh-keygen", "curl"]:
        if not shutil.which(tool):
            print(f"SKIP: {tool} not installed")
            return 77
    tmp = tempfile.mkdtemp(prefix="alknet-serve-")
    env = Env(tmp)
    srv = None
    try:
        srv = Server(tmp, "--key", env.k("host"), "--authorized-keys", env.k("authorized_keys"),
                     "--cert-authority", env.k("ca.pub"), "--max-auth-attempts", "3")
        check("banner", t_banner, env, srv)
        check("socks5 via ssh -D, byte-exact", t_socks_curl, env, srv)
        check("ssh -W", t_ssh_W, env, srv)
        check("refused destinations", t_refused_destinations, env, srv)
        check("ssh -R", t_remote_forward, env, srv)
        check("wrong key rejected", t_wrong_key, env, srv)
        check("certificates", t_certs, env, srv)
        check("shell/pty/subsystem refused, session lives", t_shell_refused_session_lives, env, srv)
        check("logs: exact forms, no destinations", t_logs, env, srv)
        check("fail2ban filter", t_fail2ban_filter, env, srv)
        check("max auth attempts", t_max_auth_attempts, env)
        check("per-ip cap", t_per_ip_cap, env)
        check("silent peer does not block others", t_silent_peer_dropped, env)
        check("SIGTERM with active tunnels", t_sigterm_with_tunnels, env)
        check("startup errors", t_startup_errors, env)
    finally:
        if srv:
            rc = srv.stop()
            if rc != 0:
                FAILURES.append(f"main server exit code {rc}")
        env.close()
        if not FAILURES:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("logs kept in", tmp)
    print("FAILED: " + ", ".join(FAILURES) if FAILURES else "all passed")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
