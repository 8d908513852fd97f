#!/bin/bash
# alknet's transports on a network path instead of loopback: server and client in two network
# namespaces joined by a veth pair (MTU 1500), so QUIC uses network-size datagrams (PMTUD, GSO
# and GRO) rather than the 65000-byte same-host ones that bench/run.py measures.
#
# usage (root, from the repository root): bash bench/netpath.sh [RUNS] [SECONDS]
# The path can be made worse (docs/transports.md's --quic-cc table came from these):
#   TRANSPORTS="quic quic-bbr quic-bbr2"  what to measure (default tcp tls quic quic-bbr2;
#                                         quic-CC = quic with --quic-cc CC on both ends)
#   LOSS=1         drop 1% of UDP each way (iptables statistic in the server's namespace)
#   RATE=500mbit   a tbf bottleneck (20 ms of buffer) on both ends of the veth
#   COMPETE=1      a kernel TCP iperf3 flow through the same path at the same time
# needs: iproute2, iperf3, openssh-client (ssh-keygen), openssl, python3, build-release/src/cli/alknet
# (python3 bench/run.py builds it). Prints one line per measurement, then medians and ratios.
set -euo pipefail
RUNS=${1:-3}
SECS=${2:-4}
TRANSPORTS=${TRANSPORTS:-tcp tls quic quic-bbr2}
LOSS=${LOSS:-} RATE=${RATE:-} COMPETE=${COMPETE:-}
ALKNET=$(realpath "${ALKNET:-build-release/src/cli/alknet}")
NS_S=alknet-bench-s NS_C=alknet-bench-c
ADDR_S=10.231.0.1 ADDR_C=10.231.0.2
WORK=$(mktemp -d /tmp/alknet-netpath.XXXXXX)

[ "$(id -u)" = 0 ] || { echo "error: needs root (network namespaces)" >&2; exit 1; }
[ -x "$ALKNET" ] || { echo "error: no alknet binary at $ALKNET (run python3 bench/run.py, or set ALKNET)" >&2; exit 1; }
for t in ip iperf3 ssh-keygen openssl python3 ${RATE:+tc} ${LOSS:+iptables}; do
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
if [ -n "$RATE" ]; then
  ip netns exec $NS_S tc qdisc add dev veth-s root tbf rate "$RATE" burst 64kb latency 20ms
  ip netns exec $NS_C tc qdisc add dev veth-c root tbf rate "$RATE" burst 64kb latency 20ms
fi
if [ -n "$LOSS" ]; then
  for chain in INPUT OUTPUT; do
    ip netns exec $NS_S iptables -A $chain -p udp -m statistic --mode random \
      --probability "$(awk -v l="$LOSS" 'BEGIN{print l / 100}')" -j DROP
  done
fi

cd "$WORK"
ssh-keygen -q -t ed25519 -N '' -f host
ssh-keygen -q -t ed25519 -N '' -f user
cp user.pub authorized_keys
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -keyout tls.key -out tls.crt 2>/dev/null

# One -L upload or download through TRANSPORT; prints Gbit/s (and, with COMPETE, "+" and the
# competing TCP flow's Gbit/s).
measure() {
  local t=$1 dir=$2 port=$((20000 + RANDOM % 20000))
  local tls_s=() tls_c=() cc=()
  # quic-CC: quic with --quic-cc CC on both ends (docs/transports.md compares them)
  [ "${t#quic-}" != "$t" ] && cc=(--quic-cc "${t#quic-}") && t=quic
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
  local r rev=$([ "$dir" = down ] && echo -R) other=""
  if [ -n "$COMPETE" ]; then
    ip netns exec $NS_S iperf3 -s -1 -p $((port + 4)) >/dev/null 2>&1 &
    sleep 0.2
    ip netns exec $NS_C iperf3 -c $ADDR_S -p $((port + 4)) -t "$SECS" $rev -J >compete.json 2>/dev/null &
    other=$!
  fi
  r=$(ip netns exec $NS_C iperf3 -c 127.0.0.1 -p $((port + 1)) -t "$SECS" $rev -J |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e9, 2))' || echo 0)
  if [ -n "$other" ]; then
    wait "$other" || true
    r+=" + $(python3 -c 'import json; print(round(json.load(open("compete.json"))["end"]["sum_received"]["bits_per_second"]/1e9, 2))' || echo 0)"
  fi
  kill $cp $sp 2>/dev/null || true
  wait $cp $sp 2>/dev/null || true
  echo "$r"
}

declare -A results beside
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for run in $(seq "$RUNS"); do
  for dir in up down; do
    for t in $TRANSPORTS; do
      g=$(measure $t $dir)
      echo "[run $run/$RUNS] -L $dir  $t  $g Gbit/s"
      results[$t.$dir]+="${g%% *} "
      [ -n "$COMPETE" ] && beside[$t.$dir]+="${g##* } "
    done
  done
done

echo
echo "medians of $RUNS run(s), $SECS s each, veth between two namespaces (MTU 1500${LOSS:+, $LOSS% UDP loss}${RATE:+, tbf $RATE})${COMPETE:+; + = the kernel TCP flow beside it}:"
for dir in up down; do
  line="-L $dir:"
  declare -A med
  for t in $TRANSPORTS; do
    med[$t]=$(echo ${results[$t.$dir]} | median)
    line+="  $t ${med[$t]}"
    [ -n "$COMPETE" ] && line+=" + $(echo ${beside[$t.$dir]} | median)"
    line+=" Gbit/s"
  done
  if [ -n "${med[tcp]:-}" ]; then
    line+="  |"
    for t in $TRANSPORTS; do
      [ "$t" = tcp ] || line+="  $t÷tcp $(awk -v a=${med[$t]} -v b=${med[tcp]} 'BEGIN{printf "%.2f", (b > 0 ? a / b : 0)}')"
    done
  fi
  echo "$line"
done
