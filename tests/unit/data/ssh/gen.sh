#!/bin/sh
# Regenerates the test-only SSH fixtures used by tests/unit/ssh_*_test.cpp.
# Run once; the outputs are committed. Regenerating changes every key, so the expected
# fingerprints and certificate fields recorded in the tests must be updated with it.
# These keys protect nothing: never use them outside the tests.
set -eu
cd "$(dirname "$0")"
export TZ=UTC
rm -f user_ed25519* host_ed25519* ca_ed25519* other_ca_ed25519* rsa_ca* user_ecdsa* rsa_pem* known_hosts*
ssh-keygen -q -t ed25519 -N '' -C 'alice@test' -f user_ed25519
ssh-keygen -q -t ed25519 -N '' -C 'host@test' -f host_ed25519
ssh-keygen -q -t ed25519 -N '' -C 'ca@test' -f ca_ed25519
ssh-keygen -q -t ed25519 -N '' -C 'other-ca@test' -f other_ca_ed25519
ssh-keygen -q -t rsa -b 2048 -N '' -C 'rsa-ca@test' -f rsa_ca
ssh-keygen -q -t ecdsa -b 256 -N '' -C 'ecdsa@test' -f user_ecdsa
ssh-keygen -q -m PEM -t rsa -b 2048 -N '' -C 'rsa-pem@test' -f rsa_pem

sign() { # sign OUT-NAME CA ARGS...
  out=$1; ca=$2; shift 2
  cp user_ed25519.pub "$out.pub"
  ssh-keygen -q -s "$ca" "$@" "$out.pub"
  mv "$out-cert.pub" "$out.cert.pub"; rm -f "$out.pub"
}
sign user_valid        ca_ed25519 -I alice-valid   -n alknet,alice -z 1001 -V 20200101:20991231
sign user_expired      ca_ed25519 -I alice-expired -n alknet       -z 1002 -V 20200101:20200102
sign user_future       ca_ed25519 -I alice-future  -n alknet       -z 1003 -V 20980101:20990101
sign user_wrong_princ  ca_ed25519 -I alice-wrong   -n bob          -z 1004 -V 20200101:20991231
sign user_source_addr  ca_ed25519 -I alice-srcaddr -n alknet       -z 1005 -V 20200101:20991231 -O source-address=127.0.0.1/32
sign user_no_pf        ca_ed25519 -I alice-nopf    -n alknet       -z 1006 -V 20200101:20991231 -O no-port-forwarding
sign user_forever      ca_ed25519 -I alice-forever -n alknet       -z 1007 -V always:forever
sign user_force_cmd    ca_ed25519 -I alice-forcecmd -n alknet      -z 1008 -V 20200101:20991231 -O force-command=/bin/true
sign user_verify_req   ca_ed25519 -I alice-verify  -n alknet       -z 1009 -V 20200101:20991231 -O verify-required
sign user_other_ca     other_ca_ed25519 -I alice-other -n alknet   -z 1010 -V 20200101:20991231
sign user_rsa_ca       rsa_ca     -I alice-rsaca   -n alknet       -z 1011 -V 20200101:20991231
sign host_cert         ca_ed25519 -I host-cert -h  -n host.test    -z 1012 -V 20200101:20991231
cp user_ecdsa.pub user_ecdsa_c.pub
ssh-keygen -q -s ca_ed25519 -I ecdsa-cert -n alknet -z 1013 -V 20200101:20991231 user_ecdsa_c.pub
mv user_ecdsa_c-cert.pub user_ecdsa.cert.pub; rm -f user_ecdsa_c.pub

# known_hosts: one plain file and its hashed twin (ssh-keygen -H).
{
  printf 'host.test,10.0.0.7 %s\n' "$(cut -d' ' -f1,2 host_ed25519.pub)"
  printf '[host.test]:2222 %s\n' "$(cut -d' ' -f1,2 user_ecdsa.pub)"
} > known_hosts
cp known_hosts known_hosts_hashed
ssh-keygen -q -H -f known_hosts_hashed
rm -f known_hosts_hashed.old

for f in *.pub; do echo "$f: $(ssh-keygen -l -f "$f")"; done > fingerprints.txt
for f in *.cert.pub; do echo "== $f"; ssh-keygen -L -f "$f"; done > certs.txt
