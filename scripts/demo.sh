#!/usr/bin/env bash
# The main job: a local `alknet serve` + `alknet connect` pair with freshly generated keys,
# a curl through the SOCKS5 port, then a clean exit of both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
ALKNET_TARGETS=src/cli/alknet bash scripts/build.sh build
ALKNET="$PWD/build/src/cli/alknet"
work=$(mktemp -d /tmp/alknet-demo.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ssh-keygen -q -t ed25519 -N '' -C alknet-host -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -C alknet-user -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
echo "hello through alknet $(date -u +%FT%TZ)" > "$work/index.html"
ssh_port=$(free_port); socks_port=$(free_port); web_port=$(free_port)

(cd "$work" && exec python3 -m http.server "$web_port" --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
"$ALKNET" serve --listen "127.0.0.1:$ssh_port" --key "$work/host_key" --authorized-keys "$work/authorized_keys" \
  2> "$work/serve.log" & pids+=($!)
serve_pid=$!
sleep 0.5
"$ALKNET" connect --server "127.0.0.1:$ssh_port" --identity "$work/user_key" --known-hosts "$work/known_hosts" \
  --socks5 "127.0.0.1:$socks_port" 2> "$work/connect.log" & pids+=($!)
connect_pid=$!
for _ in $(seq 1 50); do grep -q '^connected' "$work/connect.log" && break; sleep 0.1; done

echo "== alknet serve:";   sed 's/^/   /' "$work/serve.log"
echo "== alknet connect:"; sed 's/^/   /' "$work/connect.log"
echo "== curl --socks5-hostname 127.0.0.1:$socks_port http://localhost:$web_port/"
body=$(curl -sS --max-time 10 --socks5-hostname "127.0.0.1:$socks_port" "http://localhost:$web_port/")
echo "   $body"
kill -TERM "$connect_pid" "$serve_pid"
wait "$connect_pid" "$serve_pid"
pids=("${pids[0]}")
[ "$body" = "$(cat "$work/index.html")" ] || { echo "demo FAILED: unexpected body"; exit 1; }
echo "== demo OK: the tunnel worked and both processes exited cleanly (status 0)."
echo "To keep a tunnel running, start the two commands above yourself, e.g.:"
echo "   $ALKNET serve --listen 0.0.0.0:2222 --key HOST_KEY --authorized-keys AUTHORIZED_KEYS"
echo "   $ALKNET connect --server SERVER:2222 --identity USER_KEY --socks5 127.0.0.1:1080"
