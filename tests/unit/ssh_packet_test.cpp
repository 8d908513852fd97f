// The SSH packet layer, key exchange pieces and the sans-I/O transport, ours against ours.
// (Interop with OpenSSH's sshd is in ssh_transport_sshd_test.cpp.)
#include <openssl/curve25519.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "ssh/kex.hpp"
#include "ssh/keys.hpp"
#include "ssh/packet.hpp"
#include "ssh/packet_transport.hpp"

using namespace alk::ssh;

namespace {

DirectionKeys keys_for(Cipher c, uint8_t fill) {
  DirectionKeys k;
  k.cipher = c;
  k.key.assign(cipher_key_len(c), fill);
  k.iv.assign(cipher_iv_len(c), uint8_t(fill + 1));
  return k;
}

std::vector<uint8_t> payload_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = uint8_t(seed + i * 7);
  return p;
}

struct HostKey {
  std::array<uint8_t, 64> priv{};
  std::vector<uint8_t> blob;
  HostKey() {
    uint8_t pub[32];
    ED25519_keypair(pub, priv.data());
    wire_put_string(blob, std::string_view("ssh-ed25519"));
    wire_put_string(blob, std::span<const uint8_t>(pub, 32));
  }
};

// Moves bytes between two transports until neither has anything to say; collects payloads.
struct Pair {
  PacketTransport client, server;
  std::vector<std::vector<uint8_t>> to_client, to_server;

  Pair(TransportConfig c, TransportConfig s) : client(std::move(c)), server(std::move(s)) {}

  static size_t move(PacketTransport& from, PacketTransport& to, size_t chunk) {
    size_t moved = 0;
    while (!from.output().empty()) {
      auto out = from.output();
      size_t n = std::min(out.size(), chunk);
      auto space = to.input_space(n);
      std::memcpy(space.data(), out.data(), n);
      to.commit_input(n);
      from.consume_output(n);
      moved += n;
    }
    return moved;
  }

  void pump(size_t chunk = 1 << 20) {
    for (int round = 0; round < 1000; ++round) {
      size_t moved = move(client, server, chunk) + move(server, client, chunk);
      while (auto p = server.next_payload()) to_server.emplace_back(p->begin(), p->end());
      while (auto p = client.next_payload()) to_client.emplace_back(p->begin(), p->end());
      if (moved == 0 && client.output().empty() && server.output().empty()) return;
    }
  }
};

TransportConfig client_cfg(std::vector<std::string> ciphers = {}) {
  TransportConfig c;
  c.role = Role::Client;
  c.version = "SSH-2.0-alknet_test";
  c.ciphers = std::move(ciphers);
  c.accept_host_key = [](std::span<const uint8_t>) { return true; };
  return c;
}

TransportConfig server_cfg(const HostKey& hk, std::vector<std::string> ciphers = {}) {
  TransportConfig s;
  s.role = Role::Server;
  s.version = "SSH-2.0-alknet_srv";
  s.host_private = hk.priv;
  s.host_key_blob = hk.blob;
  s.ciphers = std::move(ciphers);
  return s;
}

}  // namespace

TEST_CASE("packets round-trip under every cipher, byte by byte and in bulk") {
  for (Cipher c : {Cipher::None, Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305, Cipher::TlsBound}) {
    INFO(std::string(cipher_name(c)));
    PacketSealer s;
    PacketOpener o;
    REQUIRE(s.set_keys(keys_for(c, 3)));
    REQUIRE(o.set_keys(keys_for(c, 3)));
    std::vector<uint8_t> wire;
    std::vector<size_t> sizes{1, 2, 15, 16, 17, 31, 32, 33, 100, 1000, 32768, kMaxPayload};
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t before = wire.size();
      s.seal(payload_of(sizes[i], uint8_t(i)), wire);
      CHECK(wire.size() - before == s.sealed_size(sizes[i]));
      CHECK((wire.size() - before) <= kMaxPacketLength + 4 + 16);
    }
    // Feed one byte more at a time: NeedMore must not disturb the buffer.
    size_t pos = 0, idx = 0;
    while (pos < wire.size()) {
      size_t have = 1;
      Opened r;
      while (true) {
        r = o.open(std::span<uint8_t>(wire.data() + pos, std::min(have, wire.size() - pos)));
        if (r.status != Opened::NeedMore) break;
        if (r.need) have = r.need - 1 > have ? r.need - 1 : have + 1;  // jump to one short, then exact
        else ++have;
      }
      REQUIRE(r.status == Opened::Packet);
      CHECK(std::vector<uint8_t>(r.payload.begin(), r.payload.end()) == payload_of(sizes[idx], uint8_t(idx)));
      pos += r.consumed;
      ++idx;
    }
    CHECK(idx == sizes.size());
    CHECK(o.sequence() == sizes.size());
  }
}

TEST_CASE("a flipped bit anywhere in an encrypted packet is refused") {
  for (Cipher c : {Cipher::Aes128Gcm, Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305}) {
    INFO(std::string(cipher_name(c)));
    PacketSealer s;
    REQUIRE(s.set_keys(keys_for(c, 9)));
    std::vector<uint8_t> wire;
    s.seal(payload_of(40, 1), wire);
    for (size_t i = 0; i < wire.size(); ++i) {
      PacketOpener o;
      REQUIRE(o.set_keys(keys_for(c, 9)));
      auto bad = wire;
      bad[i] ^= 0x10;
      auto r = o.open(bad);
      // A flipped length byte may also just look like a longer packet still in flight.
      CHECK(r.status != Opened::Packet);
    }
    PacketOpener wrong;
    REQUIRE(wrong.set_keys(keys_for(c, 10)));
    CHECK(wrong.open(wire).status != Opened::Packet);
  }
}

TEST_CASE("same payload twice never gives the same ciphertext (nonce advances)") {
  for (Cipher c : {Cipher::Aes128Gcm, Cipher::ChaCha20Poly1305}) {
    PacketSealer s;
    REQUIRE(s.set_keys(keys_for(c, 1)));
    std::vector<uint8_t> a, b;
    s.seal(payload_of(64, 0), a);
    s.seal(payload_of(64, 0), b);
    CHECK(a != b);
  }
}

TEST_CASE("bad lengths and padding are errors, not reads past the buffer") {
  PacketOpener o;
  std::vector<uint8_t> huge{0x7f, 0xff, 0xff, 0xf8, 4, 0, 0, 0};
  CHECK(o.open(huge).status == Opened::Error);
  std::vector<uint8_t> tiny{0, 0, 0, 4, 4, 0, 0, 0};
  CHECK(o.open(tiny).status == Opened::Error);
  std::vector<uint8_t> badpad{0, 0, 0, 12, 11, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};  // padding swallows the payload
  CHECK(o.open(badpad).status == Opened::Error);
  std::vector<uint8_t> lowpad{0, 0, 0, 12, 3, 5, 5, 5, 5, 5, 5, 5, 0, 0, 0, 0};
  CHECK(o.open(lowpad).status == Opened::Error);
}

TEST_CASE("KEXINIT parses what it encodes and refuses malformed lists") {
  std::array<uint8_t, 16> cookie{};
  cookie[3] = 7;
  auto k = our_kexinit(Role::Client, true, cookie);
  auto bytes = encode_kexinit(k);
  auto back = parse_kexinit(bytes);
  REQUIRE(back);
  CHECK(back->lists == k.lists);
  CHECK(back->cookie == cookie);
  CHECK_FALSE(back->first_kex_follows);
  auto trailing = bytes;
  trailing.push_back(0);
  CHECK_FALSE(parse_kexinit(trailing));
  CHECK_FALSE(parse_kexinit(std::span<const uint8_t>(bytes.data(), bytes.size() - 1)));
  KexInit e = k;
  e.lists[kKexAlgs] = {"a", ""};
  CHECK_FALSE(parse_kexinit(encode_kexinit(e)));
}

TEST_CASE("negotiation follows the client's order and names what is missing") {
  std::array<uint8_t, 16> cookie{};
  auto c = our_kexinit(Role::Client, true, cookie, {"chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com"});
  auto s = our_kexinit(Role::Server, true, cookie, {"aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"});
  std::string err;
  auto n = negotiate(c, s, true, &err);
  REQUIRE(n);
  CHECK(n->c2s == Cipher::ChaCha20Poly1305);
  CHECK(n->kex == "curve25519-sha256");
  CHECK(n->strict);
  CHECK(n->peer_wants_ext_info);
  CHECK_FALSE(negotiate(c, s, false, &err)->strict);

  auto s2 = s;
  s2.lists[kEncS2C] = {"aes256-ctr"};
  CHECK_FALSE(negotiate(c, s2, true, &err));
  CHECK(err == "no common cipher (server to client)");
  auto s3 = s;
  s3.lists[kKexAlgs] = {"diffie-hellman-group14-sha256", "kex-strict-s-v00@openssh.com"};
  CHECK_FALSE(negotiate(c, s3, true, &err));
  CHECK(err == "no common key exchange algorithm");
  auto c2 = c;  // the client's guess: first kex algorithm it lists, wrong if the server picks another
  c2.first_kex_follows = true;
  c2.lists[kKexAlgs].insert(c2.lists[kKexAlgs].begin(), "sntrup761x25519-sha512@openssh.com");
  n = negotiate(c2, s, true, &err);
  REQUIRE(n);
  CHECK(n->client_guessed_wrong);
  CHECK_FALSE(n->server_guessed_wrong);
}

TEST_CASE("the TLS-bound cipher is chosen only when both ends name the same channel binding") {
  std::array<uint8_t, 16> cookie{};
  Binding b1{}, b2{};
  for (size_t i = 0; i < b1.size(); ++i) {
    b1[i] = uint8_t(i * 17);
    b2[i] = uint8_t(i * 17 + 1);
  }
  const std::string name = tls_bound_cipher_name(b1);
  CHECK(name == "tls-bound-00112233445566778899aabbccddeeff@alknet.invalid");
  CHECK(name.size() <= 64);
  CHECK(cipher_from_name(name) == Cipher::TlsBound);
  for (const char* bad : {"tls-bound-00112233445566778899AABBCCDDEEFF@alknet.invalid",
                          "tls-bound-00112233445566778899aabbccddeef@alknet.invalid",
                          "tls-bound-00112233445566778899aabbccddeeff0@alknet.invalid",
                          "tls-bound-00112233445566778899aabbccddeeff@alknet", "tls-bound", "none"})
    CHECK_FALSE(cipher_from_name(bad));

  auto c = our_kexinit(Role::Client, true, cookie, {}, b1);
  CHECK(c.lists[kEncC2S].front() == name);
  CHECK(c.lists[kEncS2C].front() == name);
  CHECK(c.lists[kEncC2S].size() == 4);  // the AEADs stay offered behind it
  std::string err;
  auto n = negotiate(c, our_kexinit(Role::Server, true, cookie, {}, b1), true, &err);
  REQUIRE(n);
  CHECK(n->c2s == Cipher::TlsBound);
  CHECK(n->s2c == Cipher::TlsBound);
  // Another channel (a relay that terminates TLS), or one end without a channel: SSH's own AEAD.
  for (const auto& [client, server] :
       {std::pair{std::optional<Binding>(b1), std::optional<Binding>(b2)}, std::pair{std::optional<Binding>(b1), std::optional<Binding>()},
        std::pair{std::optional<Binding>(), std::optional<Binding>(b1)}}) {
    n = negotiate(our_kexinit(Role::Client, true, cookie, {}, client), our_kexinit(Role::Server, true, cookie, {}, server),
                  true, &err);
    REQUIRE(n);
    CHECK(n->c2s != Cipher::TlsBound);
    CHECK(n->s2c != Cipher::TlsBound);
  }
  // An explicit cipher list is the whole offer.
  CHECK(our_kexinit(Role::Client, true, cookie, {"aes128-gcm@openssh.com"}, b1).lists[kEncC2S] ==
        std::vector<std::string>{"aes128-gcm@openssh.com"});
}

TEST_CASE("mpint encoding is minimal and sign-safe") {
  std::vector<uint8_t> out;
  std::array<uint8_t, 3> a{0, 0, 0x7f};
  wire_put_mpint(out, a);
  CHECK(out == std::vector<uint8_t>{0, 0, 0, 1, 0x7f});
  out.clear();
  std::array<uint8_t, 2> b{0x80, 1};
  wire_put_mpint(out, b);
  CHECK(out == std::vector<uint8_t>{0, 0, 0, 3, 0, 0x80, 1});
  out.clear();
  std::array<uint8_t, 2> z{0, 0};
  wire_put_mpint(out, z);
  CHECK(out == std::vector<uint8_t>{0, 0, 0, 0});
}

TEST_CASE("x25519 refuses low-order points and wrong sizes") {
  auto k = X25519Key::generate();
  std::array<uint8_t, 32> zero{};
  CHECK_FALSE(x25519_shared(k, zero));
  CHECK_FALSE(x25519_shared(k, std::span<const uint8_t>(zero.data(), 31)));
  auto peer = X25519Key::generate();
  CHECK(x25519_shared(k, peer.pub) == x25519_shared(peer, k.pub));
}

TEST_CASE("host-key signatures verify only for the right key and message") {
  HostKey hk, other;
  std::vector<uint8_t> msg{1, 2, 3};
  auto sig = ed25519_signature_blob(msg, hk.priv);
  CHECK(ed25519_verify_blob(sig, msg, hk.blob));
  CHECK_FALSE(ed25519_verify_blob(sig, msg, other.blob));
  msg[0] = 9;
  CHECK_FALSE(ed25519_verify_blob(sig, msg, hk.blob));
}

TEST_CASE("transport: handshake, payloads both ways, every cipher") {
  HostKey hk;
  for (const char* c : {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}) {
    INFO(c);
    Pair p(client_cfg({c}), server_cfg(hk));
    p.client.start();
    p.server.start();
    // Sent before the handshake finished: held, then delivered in order after NEWKEYS.
    std::vector<uint8_t> early{msg::kServiceRequest, 1, 2, 3};
    p.client.send(early);
    p.pump(7);  // small chunks: version lines and packets split everywhere
    REQUIRE_FALSE(p.client.failed());
    REQUIRE_FALSE(p.server.failed());
    REQUIRE(p.client.established());
    REQUIRE(p.server.established());
    CHECK(std::vector<uint8_t>(p.client.session_id().begin(), p.client.session_id().end()) ==
          std::vector<uint8_t>(p.server.session_id().begin(), p.server.session_id().end()));
    CHECK(p.client.negotiated().c2s == cipher_from_name(c));
    CHECK(p.client.negotiated().strict);
    CHECK(p.client.peer_version() == "SSH-2.0-alknet_srv");
    REQUIRE(p.to_server.size() == 1);
    CHECK(p.to_server[0] == early);
    for (size_t n : {size_t(1), size_t(5000), kMaxPayload}) {
      auto area = p.server.begin_payload(n);
      auto data = payload_of(n, 5);
      data[0] = msg::kChannelData;
      std::memcpy(area.data(), data.data(), n);
      p.server.finish_payload();
      p.pump();
      REQUIRE(p.to_client.size() >= 1);
      CHECK(p.to_client.back() == data);
    }
  }
}

TEST_CASE("transport: re-keys by volume from either side without losing a payload") {
  HostKey hk;
  auto cc = client_cfg();
  cc.rekey_bytes = 100000;
  auto sc = server_cfg(hk);
  sc.rekey_bytes = 150000;
  Pair p(cc, sc);
  p.client.start();
  p.server.start();
  p.pump();
  REQUIRE(p.client.established());
  size_t sent = 0;
  for (int i = 0; i < 200; ++i) {
    auto d = payload_of(3000 + size_t(i), uint8_t(i));
    d[0] = msg::kChannelData;
    p.client.send(d);
    auto e = d;
    e[1] ^= 1;
    p.server.send(e);
    ++sent;
    if (i % 3 == 0) p.pump(1000);
  }
  p.pump();
  REQUIRE_FALSE(p.client.failed());
  REQUIRE_FALSE(p.server.failed());
  CHECK(p.to_server.size() == sent);
  CHECK(p.to_client.size() == sent);
  for (size_t i = 0; i < sent; ++i) {
    auto d = payload_of(3000 + i, uint8_t(i));
    d[0] = msg::kChannelData;
    CHECK(p.to_server[i] == d);
  }
  CHECK(p.client.key_exchanges() >= 5);
  CHECK(p.server.key_exchanges() == p.client.key_exchanges());
}

TEST_CASE("transport: refused host key, garbage, and a tampered stream fail cleanly") {
  HostKey hk;
  {
    auto cc = client_cfg();
    cc.accept_host_key = [](std::span<const uint8_t>) { return false; };
    Pair p(cc, server_cfg(hk));
    p.client.start();
    p.server.start();
    p.pump();
    CHECK(p.client.failed());
    CHECK(p.client.error() == "server host key not accepted");
    CHECK_FALSE(p.client.established());
  }
  {
    PacketTransport s(server_cfg(hk));
    s.start();
    std::string junk = "GET / HTTP/1.1\r\n\r\n";
    auto space = s.input_space(junk.size());
    std::memcpy(space.data(), junk.data(), junk.size());
    s.commit_input(junk.size());
    CHECK_FALSE(s.next_payload());
    CHECK(s.failed());
  }
  {
    Pair p(client_cfg(), server_cfg(hk));
    p.client.start();
    p.server.start();
    p.pump();
    REQUIRE(p.client.established());
    std::vector<uint8_t> d{msg::kChannelData, 1, 2, 3, 4};
    p.client.send(d);
    auto out = p.client.output();
    std::vector<uint8_t> bytes(out.begin(), out.end());
    bytes[bytes.size() - 3] ^= 1;
    auto space = p.server.input_space(bytes.size());
    std::memcpy(space.data(), bytes.data(), bytes.size());
    p.server.commit_input(bytes.size());
    CHECK_FALSE(p.server.next_payload());
    CHECK(p.server.error() == "message authentication failed");
  }
}

TEST_CASE("transport: a payload area can be finished shorter or cancelled, also while held for a re-key") {
  HostKey hk;
  Pair p(client_cfg(), server_cfg(hk));
  p.client.start();
  p.server.start();
  p.pump();
  REQUIRE(p.client.established());
  auto fill = [](std::span<uint8_t> area, uint8_t seed) {
    for (size_t i = 0; i < area.size(); ++i) area[i] = uint8_t(seed + i);
    area[0] = msg::kChannelData;
  };
  auto expect = [&](size_t n, uint8_t seed) {
    std::vector<uint8_t> v(n);
    fill(v, seed);
    return v;
  };
  for (bool during_rekey : {false, true}) {
    INFO("during a re-key: " << during_rekey);
    p.to_server.clear();
    const auto kex_before = p.client.key_exchanges();
    if (during_rekey) {  // our KEXINIT goes out with this payload: what follows is held
      p.client.config().rekey_bytes = 1;
      p.client.send(expect(50, 1));
      p.client.config().rekey_bytes = uint64_t{1} << 30;
    }
    fill(p.client.begin_payload(30000), 2);
    p.client.finish_payload(1000);  // only the first 1,000 bytes were filled in time
    fill(p.client.begin_payload(kMaxPayload), 3);
    p.client.cancel_payload();  // nothing came: nothing is sent
    p.client.send(expect(77, 4));
    p.pump(3000);
    REQUIRE_FALSE(p.client.failed());
    REQUIRE_FALSE(p.server.failed());
    const size_t first = during_rekey ? 1 : 0;
    REQUIRE(p.to_server.size() == first + 2);
    CHECK(p.to_server[first] == expect(1000, 2));
    CHECK(p.to_server[first + 1] == expect(77, 4));
    CHECK(p.client.key_exchanges() == kex_before + (during_rekey ? 1 : 0));
  }
}

TEST_CASE("transport: the bound cipher carries payloads, and a rewritten binding fails the key exchange") {
  HostKey hk;
  Binding b1{}, b2{};
  b1.fill(0x5a);
  b2.fill(0xa5);
  auto configs = [&](const Binding& client, const Binding& server) {
    auto cc = client_cfg();
    cc.channel_binding = client;
    auto sc = server_cfg(hk);
    sc.channel_binding = server;
    return std::pair{cc, sc};
  };
  {
    auto [cc, sc] = configs(b1, b1);
    Pair p(cc, sc);
    p.client.start();
    p.server.start();
    p.pump(7);
    REQUIRE(p.client.established());
    REQUIRE(p.server.established());
    CHECK(p.client.negotiated().c2s == Cipher::TlsBound);
    CHECK(p.server.negotiated().s2c == Cipher::TlsBound);
    auto area = p.server.begin_payload(kMaxPayload);
    auto data = payload_of(kMaxPayload, 9);
    data[0] = msg::kChannelData;
    std::memcpy(area.data(), data.data(), data.size());
    p.server.finish_payload();
    p.client.send(data);
    p.pump();
    REQUIRE(p.to_client.size() == 1);
    CHECK(p.to_client[0] == data);
    REQUIRE(p.to_server.size() == 1);
    CHECK(p.to_server[0] == data);
    // A re-key keeps the bound cipher (same channel, same names) and loses nothing.
    const auto before = p.client.key_exchanges();
    p.client.config().rekey_bytes = 1;
    p.client.send(data);  // counted: starts a key exchange
    p.client.config().rekey_bytes = uint64_t{1} << 30;
    p.pump(4096);
    REQUIRE_FALSE(p.client.failed());
    REQUIRE_FALSE(p.server.failed());
    CHECK(p.client.key_exchanges() > before);
    CHECK(p.server.negotiated().c2s == Cipher::TlsBound);
    REQUIRE(p.to_server.size() == 2);
    CHECK(p.to_server[1] == data);
  }
  {
    // A man in the middle with a TLS session to each end (bindings b1 and b2) rewrites the
    // client's KEXINIT so the server sees its own binding. The server would choose the bound
    // cipher, but the exchange hashes now differ: the client refuses the host-key signature.
    auto [cc, sc] = configs(b1, b2);
    Pair p(cc, sc);
    p.client.start();
    p.server.start();
    auto out = p.client.output();
    std::string bytes(reinterpret_cast<const char*>(out.data()), out.size());
    const auto from = tls_bound_cipher_name(b1), to = tls_bound_cipher_name(b2);
    size_t rewritten = 0;
    for (size_t at; (at = bytes.find(from)) != std::string::npos; ++rewritten) bytes.replace(at, from.size(), to);
    CHECK(rewritten == 2);
    auto space = p.server.input_space(bytes.size());
    std::memcpy(space.data(), bytes.data(), bytes.size());
    p.server.commit_input(bytes.size());
    p.client.consume_output(out.size());
    p.pump();
    CHECK(p.server.negotiated().c2s == Cipher::TlsBound);
    CHECK(p.client.failed());
    CHECK_FALSE(p.client.established());
    CHECK(p.to_server.empty());
  }
}

TEST_CASE("transport: a server skips pre-version lines only as a client") {
  HostKey hk;
  PacketTransport c(client_cfg());
  c.start();
  std::string banner = "hello there\r\nSSH-2.0-OpenSSH_9.2\r\n";
  auto space = c.input_space(banner.size());
  std::memcpy(space.data(), banner.data(), banner.size());
  c.commit_input(banner.size());
  CHECK_FALSE(c.next_payload());
  CHECK_FALSE(c.failed());
  CHECK(c.peer_version() == "SSH-2.0-OpenSSH_9.2");
}

TEST_CASE("OpenSSH Ed25519 private keys load; others are refused with a reason") {
  // Generated with: ssh-keygen -t ed25519 -N '' -C test@alknet
  const char* text = R"(-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACDMBFlSA6OtTpQ8KNAwJ0qytMzTZzR2ZS+kUxDB17CefQAAAJCF4Ds2heA7
NgAAAAtzc2gtZWQyNTUxOQAAACDMBFlSA6OtTpQ8KNAwJ0qytMzTZzR2ZS+kUxDB17CefQ
AAAEAUy1L5wMueljvgdXrxhoC/t6i7g84GYfR15F7EOf66WcwEWVIDo61OlDwo0DAnSrK0
zNNnNHZlL6RTEMHXsJ59AAAAC3Rlc3RAYWxrbmV0AQI=
-----END OPENSSH PRIVATE KEY-----
)";
  std::string err;
  auto k = parse_openssh_ed25519_private(text, &err);
  REQUIRE(k);
  CHECK(k->comment == "test@alknet");
  CHECK(public_key_line({"ssh-ed25519", k->public_blob, ""}).starts_with(
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMwEWVIDo61OlDwo0DAnSrK0zNNnNHZlL6RTEMHXsJ59"));
  // The key signs and the public blob verifies it.
  std::vector<uint8_t> m{4, 5, 6};
  CHECK(ed25519_verify_blob(ed25519_signature_blob(m, k->secret), m, k->public_blob));

  CHECK_FALSE(parse_openssh_ed25519_private("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", &err));
  CHECK(err == "not an OpenSSH private key");
  std::string damaged = text;
  damaged[200] = damaged[200] == 'A' ? 'B' : 'A';
  CHECK_FALSE(parse_openssh_ed25519_private(damaged, &err));
}
