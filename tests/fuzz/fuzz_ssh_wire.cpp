// Our SSH protocol layers fed by the network: the sans-I/O transport in both roles (version
// lines, clear-text packets, KEXINIT negotiation, key exchange messages), the packet opener
// under every cipher, and the KEXINIT / userauth / private-key parsers. The first byte picks
// the mode; the rest is the peer's bytes.
#include <openssl/curve25519.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "ssh/kex.hpp"
#include "ssh/keys.hpp"
#include "ssh/packet.hpp"
#include "ssh/packet_transport.hpp"
#include "ssh/userauth.hpp"

using namespace alk::ssh;

namespace {

TransportConfig config(Role role) {
  static std::array<uint8_t, 64> host_priv{};
  static std::vector<uint8_t> host_blob;
  if (host_blob.empty()) {
    uint8_t seed[32] = {7};
    uint8_t pub[32];
    ED25519_keypair_from_seed(pub, host_priv.data(), seed);
    wire_put_string(host_blob, std::string_view("ssh-ed25519"));
    wire_put_string(host_blob, std::span<const uint8_t>(pub, 32));
  }
  TransportConfig c;
  c.role = role;
  c.host_private = host_priv;
  c.host_key_blob = host_blob;
  c.accept_host_key = [](std::span<const uint8_t>) { return true; };
  return c;
}

// The peer's bytes in chunks whose sizes come from the input too.
void feed_transport(Role role, std::span<const uint8_t> in) {
  PacketTransport t(config(role));
  t.start();
  size_t pos = 0;
  while (pos < in.size() && !t.failed()) {
    size_t n = std::min<size_t>(in.size() - pos, 1 + (in[pos] % 64) * 16);
    auto space = t.input_space(n);
    FUZZ_CHECK(space.size() >= n);
    std::memcpy(space.data(), in.data() + pos, n);
    t.commit_input(n);
    pos += n;
    int guard = 0;
    while (auto p = t.next_payload()) {
      FUZZ_CHECK(!p->empty());
      FUZZ_CHECK(p->size() <= kMaxPacketLength);
      FUZZ_CHECK(++guard < 100000);
    }
    // Output stays bounded whatever the peer sends (version, KEXINIT, kex replies).
    FUZZ_CHECK(t.output().size() < 64 * 1024);
    t.consume_output(t.output().size());
  }
  if (t.failed()) FUZZ_CHECK(!t.error().empty());
}

void feed_opener(Cipher c, std::span<const uint8_t> in) {
  DirectionKeys k;
  k.cipher = c;
  k.key.assign(cipher_key_len(c), 0x42);
  k.iv.assign(cipher_iv_len(c), 0x24);
  PacketOpener o;
  FUZZ_CHECK(o.set_keys(k));
  std::vector<uint8_t> buf(in.begin(), in.end());
  size_t pos = 0;
  while (pos < buf.size()) {
    auto r = o.open(std::span<uint8_t>(buf).subspan(pos));
    if (r.status != Opened::Packet) {
      if (r.status == Opened::NeedMore && r.need) FUZZ_CHECK(r.need > buf.size() - pos);
      break;
    }
    FUZZ_CHECK(r.consumed > 0 && r.consumed <= buf.size() - pos);
    FUZZ_CHECK(r.payload.data() >= buf.data() + pos && r.payload.data() + r.payload.size() <= buf.data() + pos + r.consumed);
    pos += r.consumed;
  }
  // And whatever the input is as a payload survives a seal/open round trip.
  if (!in.empty() && in.size() <= kMaxPayload) {
    PacketSealer s;
    PacketOpener o2;
    FUZZ_CHECK(s.set_keys(k) && o2.set_keys(k));
    std::vector<uint8_t> wire;
    s.seal(in, wire);
    auto r = o2.open(wire);
    FUZZ_CHECK(r.status == Opened::Packet && r.consumed == wire.size());
    FUZZ_CHECK(r.payload.size() == in.size() && std::memcmp(r.payload.data(), in.data(), in.size()) == 0);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::span<const uint8_t> in(data + 1, size - 1);
  switch (data[0] % 9) {
    case 0: feed_transport(Role::Server, in); break;
    case 1: feed_transport(Role::Client, in); break;
    case 2: feed_opener(Cipher::None, in); break;
    case 3: feed_opener(Cipher::Aes128Gcm, in); break;
    case 4: feed_opener(Cipher::ChaCha20Poly1305, in); break;
    case 5: {
      if (auto k = parse_kexinit(in)) {
        auto again = parse_kexinit(encode_kexinit(*k));
        FUZZ_CHECK(again && again->lists == k->lists && again->cookie == k->cookie);
        std::string err;
        // Our side on a TLS channel: the bound cipher may only be chosen if the peer named
        // exactly our binding, in that direction's list.
        Binding b;
        b.fill(0x5a);
        const std::string bound = tls_bound_cipher_name(b);
        auto ours = our_kexinit(Role::Server, true, k->cookie, {}, b);
        if (auto n = negotiate(*k, ours, true, &err)) {
          FUZZ_CHECK(n->hostkey == "ssh-ed25519");
          const auto& c2s = k->lists[kEncC2S];
          const auto& s2c = k->lists[kEncS2C];
          if (n->c2s == Cipher::TlsBound) FUZZ_CHECK(std::find(c2s.begin(), c2s.end(), bound) != c2s.end());
          if (n->s2c == Cipher::TlsBound) FUZZ_CHECK(std::find(s2c.begin(), s2c.end(), bound) != s2c.end());
        } else {
          FUZZ_CHECK(!err.empty());
        }
      }
      break;
    }
    case 6: {
      if (auto q = parse_userauth_request(in)) {
        FUZZ_CHECK(q->user.size() <= 256);
        if (q->has_signature) FUZZ_CHECK(q->method == "publickey");
      }
      break;
    }
    case 7: {
      std::string err;
      std::string_view text(reinterpret_cast<const char*>(in.data()), in.size());
      if (auto k = parse_openssh_ed25519_private(text, &err)) FUZZ_CHECK(ed25519_key_bytes(k->public_blob));
      else FUZZ_CHECK(!err.empty());
      break;
    }
    case 8: {
      std::vector<uint8_t> out;
      wire_put_mpint(out, in);
      FUZZ_CHECK(out.size() >= 4 && out.size() <= in.size() + 5);
      break;
    }
  }
  return 0;
}
