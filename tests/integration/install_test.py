#!/usr/bin/env python3
"""`meson install --destdir` produces what a packaged daemon needs, and each piece is usable.

usage: install_test.py BUILD_ROOT

Checks, against the real install (not the source files):
  - the binary lands in prefix/bindir and runs (--version, --help);
  - alknet(1) lands in mandir/man1, renders with groff and man without a single warning, has the
    usual sections, no unsubstituted @VARS@, and mentions every flag the binary's --help lists;
  - alknet-serve.service and alknet-connect@.service land in prefix/lib/systemd/system with
    ExecStart pointing at the installed binary, and pass `systemd-analyze verify` (skipped
    when systemd-analyze is missing) with the man page found through Documentation=;
  - the sysusers.d entry and the example env files are installed.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def meson_cmd():
    # Prefer the meson that configured this build (meson test exports it), then PATH.
    introspect = os.environ.get("MESONINTROSPECT", "")
    if introspect:
        parts = introspect.split()
        # "MESONINTROSPECT" is "<python> <meson.py> introspect" or "<meson> introspect".
        if parts and parts[-1] == "introspect":
            return parts[:-1]
    exe = shutil.which("meson")
    if not exe:
        print("meson not found", file=sys.stderr)
        sys.exit(1)
    return [exe]


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    build = os.path.abspath(sys.argv[1])
    meson = meson_cmd()

    opts = json.loads(run(meson + ["introspect", "--buildoptions", build], check=True).stdout)
    opt = {o["name"]: o["value"] for o in opts}
    prefix = opt["prefix"]

    def under_prefix(p):
        return p if os.path.isabs(p) else os.path.join(prefix, p)

    bindir = under_prefix(opt["bindir"])
    mandir = under_prefix(opt["mandir"])
    datadir = under_prefix(opt["datadir"])
    unitdir = os.path.join(prefix, "lib", "systemd", "system")

    with tempfile.TemporaryDirectory(prefix="alknet-install-") as dest:
        def in_dest(p):
            return os.path.join(dest, p.lstrip("/"))

        r = run(meson + ["install", "-C", build, "--destdir", dest, "--no-rebuild"])
        if not check(r.returncode == 0, "meson install --destdir exits 0"):
            print(r.stdout[-4000:], r.stderr[-4000:], file=sys.stderr)
            return 1

        # --- binary
        exe = in_dest(os.path.join(bindir, "alknet"))
        check(os.path.isfile(exe) and os.access(exe, os.X_OK), f"binary installed at {bindir}/alknet")
        r = run([exe, "--version"])
        # The build tree's rpath is dropped on install, so this is where a missing install_rpath
        # (e.g. to Debian's BoringSSL in /usr/lib/<triplet>/android) shows up.
        check(r.returncode == 0 and re.match(r"^alknet \S+\n$", r.stdout) is not None,
              f"installed binary runs: --version -> {r.stdout.strip()!r}" +
              (f" (exit {r.returncode}: {r.stderr.strip()})" if r.returncode != 0 else ""))
        version = r.stdout.split()[1] if r.returncode == 0 and r.stdout.split() else None
        helps = ""
        for sub in ("connect", "serve"):
            r = run([exe, sub, "--help"])
            check(r.returncode == 0 and "USAGE" in r.stdout, f"alknet {sub} --help exits 0")
            helps += r.stdout
        # The flag column of each help entry: "  --server HOST[:PORT]   ..." or "  -q, --quiet  ...".
        help_flags = sorted(set(re.findall(r"^  (?:-[a-zA-Z], )?(--[a-z0-9][a-z0-9-]*)", helps, re.M)))
        check(len(help_flags) >= 30, f"--help lists the flags ({len(help_flags)} found)")

        # --- man page
        man_dir = in_dest(os.path.join(mandir, "man1"))
        page = os.path.join(man_dir, "alknet.1")
        check(os.path.isfile(page), f"man page installed at {mandir}/man1/alknet.1")
        if os.path.isfile(page):
            src = open(page, encoding="utf-8").read()
            check(re.search(r"@[A-Za-z_]+@", src) is None, "man page has no unsubstituted @VARS@")
            check(version is not None and f"alknet {version}" in src, "man page carries the project version")
            # roff writes flags as \-\-name; compare in plain text so no line break or hyphenation
            # in the rendering can hide or fake a match.
            plain = src.replace("\\-", "-")
            missing = [f for f in help_flags if not re.search(re.escape(f) + r"(?![a-z0-9-])", plain)]
            check(not missing, "man page documents every --help flag" + (f" (missing: {missing})" if missing else ""))
            for env in ("ALKNET_SERVER", "ALKNET_IDENTITY", "XDG_CONFIG_HOME"):
                check(env in src, f"man page documents {env}")
            check("known_hosts" in src and "EXIT STATUS" in src, "man page has FILES (known_hosts) and EXIT STATUS")

            groff = shutil.which("groff")
            if check(groff is not None, "groff available to render the man page"):
                r = run([groff, "-man", "-Tutf8", "-ww", "-z", page])
                check(r.returncode == 0 and r.stderr.strip() == "",
                      "groff -man -ww renders without warnings" + (f": {r.stderr.strip()}" if r.stderr.strip() else ""))
            man = shutil.which("man")
            if man:
                env = dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0", PAGER="cat", MANPAGER="cat")
                r = run([man, "--warnings", "-l", page], env=env)
                text = re.sub(r".\x08", "", r.stdout)
                check(r.returncode == 0 and r.stderr.strip() == "",
                      "man --warnings -l renders without warnings" + (f": {r.stderr.strip()}" if r.stderr.strip() else ""))
                for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "CONNECT OPTIONS", "SERVE OPTIONS",
                                "ENVIRONMENT", "FILES", "EXIT STATUS", "EXAMPLES", "SEE ALSO"):
                    check(re.search(rf"^{section}$", text, re.M) is not None, f"rendered man page has section {section}")
                check("tun2proxy --proxy socks5://127.0.0.1:1080" in text, "rendered man page shows the tun2proxy example")
            else:
                print("skip man -l: man is not installed (groff check above still ran)")

        # --- systemd units, sysusers, examples
        units = ["alknet-serve.service", "alknet-connect@.service"]
        installed_units = {}
        for u in units:
            path = in_dest(os.path.join(unitdir, u))
            if check(os.path.isfile(path), f"unit installed at {unitdir}/{u}"):
                text = open(path, encoding="utf-8").read()
                installed_units[u] = text
                check("@BINDIR@" not in text, f"{u}: @BINDIR@ substituted")
                m = re.search(r"^ExecStart=(\S+)", text, re.M)
                check(m is not None and m.group(1) == os.path.join(bindir, "alknet"),
                      f"{u}: ExecStart runs {bindir}/alknet" + (f" (got {m.group(1)})" if m else ""))
        serve = installed_units.get("alknet-serve.service", "")
        for line in ("AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                     "PrivateDevices=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
                     "SystemCallArchitectures=native", "MemoryDenyWriteExecute=yes", "LockPersonality=yes",
                     "StateDirectory=alknet", "ConfigurationDirectory=alknet", "Restart=on-failure",
                     "EnvironmentFile=/etc/alknet/serve.env"):
            check(re.search(rf"^{re.escape(line)}$", serve, re.M) is not None, f"alknet-serve.service: {line}")
        check(re.search(r"^User=\S+", serve, re.M) is not None or "DynamicUser=yes" in serve,
              "alknet-serve.service: runs as an unprivileged user")
        conn = installed_units.get("alknet-connect@.service", "")
        for line in ("EnvironmentFile=/etc/alknet/connect-%i.env", "Restart=always"):
            check(re.search(rf"^{re.escape(line)}$", conn, re.M) is not None, f"alknet-connect@.service: {line}")
        check("$ALKNET_CONNECT_ARGS" in conn, "alknet-connect@.service: passes $ALKNET_CONNECT_ARGS")

        sysusers = in_dest(os.path.join(prefix, "lib", "sysusers.d", "alknet.conf"))
        if check(os.path.isfile(sysusers), "sysusers.d/alknet.conf installed"):
            check(re.search(r"^u alknet ", open(sysusers).read(), re.M) is not None, "sysusers.d declares user alknet")
            tool = shutil.which("systemd-sysusers")
            if tool:
                # Apply it to an empty root: proves the line parses and yields the user and group.
                with tempfile.TemporaryDirectory(prefix="alknet-sysusers-") as root:
                    os.makedirs(os.path.join(root, "etc"))
                    r = run([tool, "--root", root, sysusers])
                    passwd = open(os.path.join(root, "etc", "passwd")).read() if r.returncode == 0 else ""
                    check(re.search(r"^alknet:x:\d+:\d+:[^:]*:/var/lib/alknet:/usr/sbin/nologin$", passwd, re.M) is not None,
                          "systemd-sysusers creates the alknet system user" + (f": {r.stderr.strip()}" if r.returncode else ""))
            else:
                print("skip systemd-sysusers: not installed")
        for ex in ("serve.env.example", "connect.env.example"):
            check(os.path.isfile(in_dest(os.path.join(datadir, "doc", "alknet", "examples", ex))),
                  f"example {ex} installed")
        connect_env = in_dest(os.path.join(datadir, "doc", "alknet", "examples", "connect.env.example"))
        if os.path.isfile(connect_env):
            env_text = open(connect_env).read()
            for var in ("ALKNET_SERVER=", "ALKNET_IDENTITY=", "ALKNET_CONNECT_ARGS="):
                check(re.search(rf"^{var}", env_text, re.M) is not None, f"connect.env.example sets {var[:-1]}")

        analyze = shutil.which("systemd-analyze")
        if not analyze:
            print("skip systemd-analyze verify: systemd-analyze is not installed")
        elif installed_units:
            # verify insists that ExecStart's binary exists, and the installed path is only real
            # inside DESTDIR: verify copies whose ExecStart names the DESTDIR binary instead.
            with tempfile.TemporaryDirectory(prefix="alknet-units-") as ud:
                paths = []
                for u, text in installed_units.items():
                    p = os.path.join(ud, u)
                    with open(p, "w", encoding="utf-8") as f:
                        f.write(text.replace(os.path.join(bindir, "alknet"), exe))
                    paths.append(p)
                # Documentation=man:alknet(1) is checked too: point man at the installed page.
                env = dict(os.environ, MANPATH=in_dest(mandir), SYSTEMD_LOG_COLOR="0")
                r = run([analyze, "verify"] + paths, env=env, cwd=ud)
                msg = (r.stdout + r.stderr).strip()
                check(r.returncode == 0 and msg == "",
                      "systemd-analyze verify passes on both units" + (f":\n{msg}" if msg else ""))

    if failures:
        print(f"{len(failures)} check(s) failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("all install checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
