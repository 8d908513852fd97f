"""ACME (issue 10): alknet serve gets, caches and renews its certificate from pebble, Debian's
ACME test server, through real tls-alpn-01 validation of our listener (PEBBLE_VA_ALWAYS_VALID is
not set). Everything runs on loopback: pebble-challtestsrv answers pebble's DNS queries for the
test domain with 127.0.0.1, pebble's own HTTPS uses a CA this test makes with openssl.

Run as: python3 acme_test.py path/to/alknet
"""

import json
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

from harness import (LOOP, HttpServer, TestFailure, check, free_port, keygen, run, run_test, sha, wait_until,
                     AlknetLog)

ALKNET = os.path.abspath(sys.argv[1])
WORK = tempfile.mkdtemp(prefix='alknet-acme-')
DOMAIN = 'tunnel.alknet.test'
VALIDITY = 45   # seconds: renewal comes two thirds in, while the test runs
PROCS = []


class Proc(AlknetLog):
    def __init__(self, name, args, env=None):
        self.name = name
        self.log_path = os.path.join(WORK, f'{name}.log')
        self.logf = open(self.log_path, 'ab')
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=env)
        PROCS.append(self)


class Env:
    pass


E = Env()


def openssl(*args):
    run(['openssl', *args], check=True)


def setup():
    # pebble's own HTTPS: a throwaway CA and a certificate for 127.0.0.1.
    E.https_ca, ca_key = os.path.join(WORK, 'https-ca.pem'), os.path.join(WORK, 'https-ca.key')
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', ca_key,
            '-out', E.https_ca, '-days', '2', '-subj', '/CN=alknet acme test https CA')
    srv_key, srv_csr, srv_pem = (os.path.join(WORK, n) for n in ('pebble.key', 'pebble.csr', 'pebble.pem'))
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', srv_key,
            '-out', srv_csr, '-subj', '/CN=127.0.0.1')
    ext = os.path.join(WORK, 'ext')
    with open(ext, 'w') as f:
        f.write('subjectAltName=IP:127.0.0.1\n')
    openssl('x509', '-req', '-in', srv_csr, '-CA', E.https_ca, '-CAkey', ca_key, '-CAcreateserial', '-out', srv_pem,
            '-days', '2', '-extfile', ext)

    E.dns_port, E.chall_mgmt = free_port(socket.SOCK_DGRAM), free_port()
    Proc('challtestsrv', ['pebble-challtestsrv', '-dns01', f'{LOOP}:{E.dns_port}', '-http01', '', '-https01', '',
                          '-tlsalpn01', '', '-management', f'{LOOP}:{E.chall_mgmt}', '-defaultIPv4', LOOP,
                          '-defaultIPv6', ''])
    # The port pebble validates tls-alpn-01 on is the one alknet serve listens on.
    E.port = free_port()
    E.acme_port, E.mgmt_port, E.http01_port = free_port(), free_port(), free_port()
    cfg = {'pebble': {'listenAddress': f'{LOOP}:{E.acme_port}', 'managementListenAddress': f'{LOOP}:{E.mgmt_port}',
                      'certificate': srv_pem, 'privateKey': srv_key, 'httpPort': E.http01_port, 'tlsPort': E.port,
                      'ocspResponderURL': '', 'externalAccountBindingRequired': False,
                      'certificateValidityPeriod': VALIDITY}}
    cfg_path = os.path.join(WORK, 'pebble.json')
    with open(cfg_path, 'w') as f:
        json.dump(cfg, f)
    env = dict(os.environ, PEBBLE_VA_NOSLEEP='1', PEBBLE_WFE_NONCEREJECT='0', PEBBLE_AUTHZREUSE='0')
    env.pop('PEBBLE_VA_ALWAYS_VALID', None)
    E.pebble = Proc('pebble', ['pebble', '-config', cfg_path, '-dnsserver', f'{LOOP}:{E.dns_port}'], env=env)
    E.pebble.wait_log('ACME directory available', 20)
    E.directory = f'https://{LOOP}:{E.acme_port}/dir'
    # pebble makes a new root on every start: the chain it issues is trusted through this one.
    ctx = ssl.create_default_context(cafile=E.https_ca)
    with urllib.request.urlopen(f'https://{LOOP}:{E.mgmt_port}/roots/0', context=ctx, timeout=10) as r:
        E.root = os.path.join(WORK, 'pebble-root.pem')
        with open(E.root, 'wb') as f:
            f.write(r.read())

    E.host_key = keygen(os.path.join(WORK, 'host_ed25519'))
    E.user_key = keygen(os.path.join(WORK, 'user_ed25519'))
    E.auth_keys = os.path.join(WORK, 'authorized_keys')
    shutil.copy(E.user_key + '.pub', E.auth_keys)
    E.cache = os.path.join(WORK, 'cache')
    root = os.path.join(WORK, 'www')
    os.makedirs(root)
    with open(os.path.join(root, 'hello.bin'), 'wb') as f:
        f.write(os.urandom(200_000))
    E.hello_sha = sha(os.path.join(root, 'hello.bin'))
    E.http = HttpServer(root)


def serve(name, transport='tls', cache=None, wait='listening on', extra=()):
    s = Proc(name, [ALKNET, 'serve', '--key', E.host_key, '--authorized-keys', E.auth_keys, '--transport', transport,
                    '--listen', f'{LOOP}:{E.port}', '--acme-domain', DOMAIN, '--acme-directory', E.directory,
                    '--acme-ca', E.https_ca, '--acme-cache', cache or E.cache, '--acme-email', 'ops@alknet.test',
                    *extra])
    s.wait_log(wait, 30)
    return s


def orders():
    return E.pebble.log().count('Added order')


def served_cert():
    """(serial, issuer, verify ok) of the certificate a new handshake gets."""
    p = subprocess.run(['openssl', 's_client', '-connect', f'{LOOP}:{E.port}', '-servername', DOMAIN, '-alpn',
                        'alknet-ssh', '-CAfile', E.root, '-verify_hostname', DOMAIN],
                       input=b'', capture_output=True, timeout=20)
    out = p.stdout.decode(errors='replace')
    x = subprocess.run(['openssl', 'x509', '-noout', '-serial', '-issuer'], input=p.stdout, capture_output=True,
                       timeout=10).stdout.decode()
    serial = issuer = ''
    for line in x.splitlines():
        if line.startswith('serial='):
            serial = line[7:].lower().lstrip('0')
        if line.startswith('issuer='):
            issuer = line
    return serial, issuer, 'Verify return code: 0 (ok)' in out


def ssh_session_works(transport='tls'):
    socks = free_port()
    c = Proc(f'connect-{transport}-{socks}', [ALKNET, 'connect', '--server', f'{LOOP}:{E.port}', '--transport',
                                              transport, '--identity', E.user_key, '--known-hosts',
                                              os.path.join(WORK, f'kh-{socks}'), '--socks5', f'{LOOP}:{socks}',
                                              '--tls-ca', E.root, '--tls-server-name', DOMAIN])
    try:
        c.wait_log('connected transport=', 20)
        out = os.path.join(WORK, f'dl-{socks}')
        r = subprocess.run(['curl', '-sS', '--fail', '--max-time', '20', '--socks5-hostname', f'{LOOP}:{socks}',
                            '-o', out, f'http://{LOOP}:{E.http.port}/hello.bin'], capture_output=True, timeout=30)
        check(r.returncode == 0, f'curl through the ACME-certified {transport} listener: {r.stderr.decode()[-300:]}')
        check(sha(out) == E.hello_sha, 'download differs')
    finally:
        c.stop()


# ---------------------------------------------------------------------------------------

def test_issue_through_tls_alpn_01():
    E.server = serve('serve-1')
    E.server.wait_log('acme: certificate issued', 30)
    check('set VALID by completed challenge' in E.pebble.log(), 'pebble did not validate a challenge')
    check(orders() == 1, f'expected one order, pebble log has {orders()}')
    serial, issuer, ok = served_cert()
    check(ok, 'openssl s_client does not verify the served chain against pebble\'s root')
    check('Pebble Intermediate' in issuer, f'served certificate not issued by pebble: {issuer}')
    check(f'serial={serial}' in E.server.log().lower().replace('serial=0', 'serial='), f'served serial {serial} '
          f'is not the issued one:\n{E.server.log()}')
    E.serial = serial
    # Cache: directory 0700, account key and certificate files 0600.
    ca_dir = os.path.join(E.cache, f'{LOOP}_{E.acme_port}')
    check(stat.S_IMODE(os.stat(E.cache).st_mode) == 0o700, 'cache dir not 0700')
    for name in ('account.key', f'{DOMAIN}.crt', f'{DOMAIN}.key'):
        mode = stat.S_IMODE(os.stat(os.path.join(ca_dir, name)).st_mode)
        check(mode == 0o600, f'{name} has mode {oct(mode)}, not 0600')


def test_challenge_alpn_never_reaches_ssh():
    # A client asking for acme-tls/1 with no challenge pending is refused, not served SSH.
    p = subprocess.run(['openssl', 's_client', '-connect', f'{LOOP}:{E.port}', '-servername', DOMAIN, '-alpn',
                        'acme-tls/1'], input=b'', capture_output=True, timeout=20)
    out = p.stdout.decode(errors='replace')
    check('ALPN protocol: acme-tls/1' not in out, 'acme-tls/1 negotiated without a pending challenge')
    check('SSH-2.0' not in out, 'acme-tls/1 client got the SSH banner')


def test_restart_uses_cache():
    before = orders()
    E.server.stop()
    E.server = serve('serve-2', wait='acme: using the cached certificate')
    time.sleep(1.0)
    check(orders() == before, f'restart placed a new order ({before} -> {orders()})')
    serial, _, ok = served_cert()
    check(ok and serial == E.serial, f'restart serves {serial}, not the cached {E.serial}')


def test_ssh_session_through_acme_certificate():
    ssh_session_works('tls')


def test_renewal_while_running():
    # Two thirds of VALIDITY after issuance the running server renews; new handshakes get it.
    E.server.wait_log('acme: renewing the certificate', VALIDITY)
    E.server.wait_log('acme: new handshakes use the new certificate', 30)
    serial, issuer, ok = served_cert()
    check(ok and 'Pebble Intermediate' in issuer, 'renewed chain does not verify')
    check(serial != E.serial, f'still serving the old certificate {serial}')
    E.serial = serial


def test_quic_issues_with_tcp_challenge_listener():
    # quic: tls-alpn-01 on the TCP side of the same port, then the QUIC listener starts with it.
    E.server.stop()
    cache = os.path.join(WORK, 'cache-quic')
    before = orders()
    q = serve('serve-quic', transport='quic', cache=cache, wait='listening on')
    try:
        check('acme: certificate issued' in q.log(), 'quic server started without an issued certificate')
        check(orders() == before + 1, 'quic server did not place exactly one order')
        ssh_session_works('quic')
        # Renewal while running: the QUIC listener takes the new certificate for new handshakes.
        swapped = q.log().count('acme: new handshakes use the new certificate')
        q.wait_log('acme: renewing the certificate', VALIDITY)
        q.wait_log('acme: new handshakes use the new certificate', 30, count=swapped + 1)
        check('cannot use the new certificate' not in q.log(), 'quic listener refused the renewed certificate')
        ssh_session_works('quic')
    finally:
        q.stop()


def test_stealth_and_http01():
    # --stealth: the validator's acme-tls/1 connection gets the challenge, not the 404.
    s = serve('serve-stealth', cache=os.path.join(WORK, 'cache-stealth'), extra=('--stealth',))
    try:
        s.wait_log('acme: certificate issued', 30)
        _, issuer, ok = served_cert()
        check(ok and 'Pebble Intermediate' in issuer, 'stealth server does not serve the issued chain')
    finally:
        s.stop()
    # http-01: pebble fetches the token from --acme-http-port instead.
    validations = E.pebble.log().count('set VALID by completed challenge')
    h = serve('serve-http01', cache=os.path.join(WORK, 'cache-http01'), extra=('--acme-http-port', str(E.http01_port)))
    try:
        h.wait_log('acme: certificate issued', 30)
        check(E.pebble.log().count('set VALID by completed challenge') == validations + 1, 'no http-01 validation')
        _, issuer, ok = served_cert()
        check(ok and 'Pebble Intermediate' in issuer, 'http-01 server does not serve the issued chain')
        # Anything but a pending token is a 404 on the http-01 port.
        r = subprocess.run(['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}',
                            f'http://{LOOP}:{E.http01_port}/.well-known/acme-challenge/nope'],
                           capture_output=True, timeout=10)
        check(r.stdout == b'404', f'http-01 port answered {r.stdout!r} for an unknown token')
    finally:
        h.stop()
    E.server = serve('serve-3', wait='acme: using the cached certificate')


def cached_serial():
    crt = os.path.join(E.cache, f'{LOOP}_{E.acme_port}', f'{DOMAIN}.crt')
    x = run(['openssl', 'x509', '-noout', '-serial', '-in', crt], check=True).stdout.decode()
    return x.strip().split('=', 1)[1].lower().lstrip('0')


def test_pebble_down_keeps_serving():
    E.pebble.stop()
    # A new handshake still gets the cached certificate, and a renewal attempt fails loudly
    # without taking it away.
    serial, _, ok = served_cert()
    check(ok and serial == cached_serial(), 'cached certificate not served with pebble down')
    E.server.wait_log('still serving the certificate valid until', VALIDITY + 10)
    check(E.server.proc.poll() is None, 'server died when the CA went away')
    again, _, ok = served_cert()
    check(ok and again == serial, 'certificate changed or broke after a failed renewal')


def main():
    failed = []
    try:
        setup()
        for t in (test_issue_through_tls_alpn_01, test_challenge_alpn_never_reaches_ssh, test_restart_uses_cache,
                  test_ssh_session_through_acme_certificate, test_renewal_while_running,
                  test_quic_issues_with_tcp_challenge_listener, test_stealth_and_http01,
                  test_pebble_down_keeps_serving):
            run_test(t, t.__name__, failed)
            if failed and t in (test_issue_through_tls_alpn_01,):
                break
    finally:
        for p in reversed(PROCS):
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        if failed:
            for p in PROCS:
                try:
                    print(f'--- {p.name} log ---\n{p.log()[-4000:]}')
                except OSError:
                    pass
        try:
            E.http.stop()
        except AttributeError:
            pass
        shutil.rmtree(WORK, ignore_errors=True)
    print(f'{len(failed)} failed' if failed else 'all passed')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
