#!/bin/bash
# alknet's transports on a network path instead of loopback: server and client in two network
# namespaces joined by a veth pair (MTU 1500), so QUIC uses network-size datagrams (PMTUD, GSO
# and GRO) rather than the 65000-byte same-host ones that bench/run.py measures.
#
# usage (root, from the repository root): bash bench/netpath.sh [RUNS] [SECONDS]
# needs: iproute2, iperf3, openssh-client (ssh-keygen), openssl, python3, build-release/src/cli/alknet
# (python3 bench/run.py builds it). Prints one line per measurement, then medians and ratios.
set -euo pipefail
RUNS=${1:-3}
SECS=${2:-4}
ALKNET=$(realpath "${ALKNET:-build-release/src/cli/alknet}")
NS_S=alknet-bench-s NS_C=alknet-bench-c
ADDR_S=10.231.0.1 ADDR_C=10.231.0.2
WORK=$(mktemp -d /tmp/alknet-netpath.XXXXXX)

[ "$(id -u)" = 0 ] || { echo "error: needs root (network namespaces)" >&2; exit 1; }
[ -x "$ALKNET" ] || { echo "error: no alknet binary at $ALKNET (run python3 bench/run.py, or set ALKNET)" >&2; exit 1; }
for t in ip iperf3 ssh-keygen openssl python3; do
  command -v $t >/dev/null || { echo "error: $t is missing" >&2; exit 1; }
done

remove_namespaces() {
  for ns in $NS_S $NS_C; do
    ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del $ns 2>/dev/null || true
  done
}
trap 'remove_namespaces; rm -rf "$WORK"' EXIT
remove_namespaces  # left over from an interrupted run

ip netns add $NS_S
ip netns add $NS_C
ip link add veth-s netns $NS_S type veth peer name veth-c netns $NS_C
ip -n $NS_S addr add $ADDR_S/24 dev veth-s
ip -n $NS_C addr add $ADDR_C/24 dev veth-c
for ns in $NS_S $NS_C; do ip -n $ns link set lo up; done
ip -n $NS_S link set veth-s up
ip -n $NS_C link set veth-c up

cd "$WORK"
ssh-keygen -q -t ed25519 -N '' -f host
ssh-keygen -q -t ed25519 -N '' -f user
cp user.pub authorized_keys
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout tls.key -out tls.crt 2>/dev/null

# One -L upload or download through TRANSPORT; prints Gbit/s.
measure() {
  local t=$1 dir=$2 port=$((20000 + RANDOM % 20000))
  local tls_s=() tls_c=() cc=()
  # quic-bbr2: quic with --quic-cc bbr2 on both ends (docs/transports.md says why it differs here)
  [ "$t" = quic-bbr2 ] && t=quic && cc=(--quic-cc bbr2)
  [ "$t" != tcp ] && tls_s=(--tls-cert tls.crt --tls-key tls.key) && tls_c=(--tls-ca tls.crt --tls-server-name localhost)
  ip netns exec $NS_S iperf3 -s -1 -p $((port + 2)) -B 127.0.0.1 >/dev/null 2>&1 &
  ip netns exec $NS_S "$ALKNET" serve --quiet --transport "$t" --listen $ADDR_S:$port --key host \
    --authorized-keys authorized_keys "${tls_s[@]}" "${cc[@]}" >serve.log 2>&1 &
  local sp=$!
  sleep 0.4
  rm -f known_hosts
  ip netns exec $NS_C "$ALKNET" connect --transport "$t" --server $ADDR_S:$port --identity user \
    --known-hosts known_hosts --socks5 127.0.0.1:$((port + 3)) \
    --forward 127.0.0.1:$((port + 1)):127.0.0.1:$((port + 2)) "${tls_c[@]}" "${cc[@]}" >connect.log 2>&1 &
  local cp=$!
  for _ in $(seq 50); do grep -q '^connected' connect.log && break; sleep 0.1; done
  local r
  r=$(ip netns exec $NS_C iperf3 -c 127.0.0.1 -p $((port + 1)) -t "$SECS" $([ "$dir" = down ] && echo -R) -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))' || echo 0)
  kill $cp $sp 2>/dev/null || true
  wait $cp $sp 2>/dev/null || true
  echo "$r"
}

declare -A results
for run in $(seq "$RUNS"); do
  for dir in up down; do
    for t in tcp tls quic quic-bbr2; do
      g=$(measure $t $dir)
      echo "[run $run/$RUNS] -L $dir  $t  $g Gbit/s"
      results[$t.$dir]+="$g "
    done
  done
done

echo
echo "medians of $RUNS run(s), $SECS s each, veth between two namespaces (MTU 1500):"
for dir in up down; do
  line="-L $dir:"
  declare -A med
  for t in tcp tls quic quic-bbr2; do
    med[$t]=$(echo ${results[$t.$dir]} | tr ' ' '\n' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')
    line+="  $t ${med[$t]} Gbit/s"
  done
  line+="  |  tls÷tcp $(awk -v a=${med[tls]} -v b=${med[tcp]} 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}')"
  line+="  quic÷tcp $(awk -v a=${med[quic]} -v b=${med[tcp]} 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}')"
  line+="  quic-bbr2÷tcp $(awk -v a=${med[quic-bbr2]} -v b=${med[tcp]} 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}')"
  echo "$line"
done
