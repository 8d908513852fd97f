#include "ssh/kex.hpp"

#include <openssl/aead.h>
#include <openssl/crypto.h>
#include <openssl/curve25519.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstring>

#include "ssh/keys.hpp"

namespace alk::ssh {

namespace {

constexpr std::string_view kStrictClient = "kex-strict-c-v00@openssh.com";
constexpr std::string_view kStrictServer = "kex-strict-s-v00@openssh.com";
constexpr std::string_view kExtInfoClient = "ext-info-c";
constexpr size_t kMaxNameList = 4096;

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 64) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return c > ' ' && c < 127 && c != ','; });
}

std::optional<std::vector<std::string>> split_name_list(std::span<const uint8_t> b) {
  std::vector<std::string> out;
  if (b.empty()) return out;
  if (b.size() > kMaxNameList) return std::nullopt;
  std::string_view s(reinterpret_cast<const char*>(b.data()), b.size());
  size_t start = 0;
  while (true) {
    size_t comma = s.find(',', start);
    std::string_view name = s.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (!valid_name(name)) return std::nullopt;
    out.emplace_back(name);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& n : v) {
    if (!s.empty()) s += ',';
    s += n;
  }
  return s;
}

bool contains(const std::vector<std::string>& v, std::string_view n) {
  return std::find(v.begin(), v.end(), n) != v.end();
}

bool is_marker(std::string_view n) {
  return n == kStrictClient || n == kStrictServer || n == kExtInfoClient || n == "ext-info-s";
}

// First client name the server also lists (markers are not algorithms and never chosen).
std::optional<std::string> choose(const std::vector<std::string>& client, const std::vector<std::string>& server) {
  for (const auto& n : client)
    if (!is_marker(n) && contains(server, n)) return n;
  return std::nullopt;
}

void sha256_string(SHA256_CTX& h, std::span<const uint8_t> b) {
  uint8_t len[4] = {uint8_t(b.size() >> 24), uint8_t(b.size() >> 16), uint8_t(b.size() >> 8), uint8_t(b.size())};
  SHA256_Update(&h, len, 4);
  SHA256_Update(&h, b.data(), b.size());
}

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

}  // namespace

std::optional<KexInit> parse_kexinit(std::span<const uint8_t> payload) {
  if (payload.size() < 17 || payload[0] != msg::kKexInit) return std::nullopt;
  KexInit k;
  std::memcpy(k.cookie.data(), payload.data() + 1, 16);
  WireReader r(payload.subspan(17));
  for (auto& list : k.lists) {
    std::span<const uint8_t> b;
    if (!r.bytes(b)) return std::nullopt;
    auto names = split_name_list(b);
    if (!names) return std::nullopt;
    list = std::move(*names);
  }
  // Then boolean first_kex_packet_follows and uint32 reserved, nothing after.
  if (r.remaining() != 5) return std::nullopt;
  k.first_kex_follows = payload[17 + r.offset()] != 0;
  return k;
}

std::vector<uint8_t> encode_kexinit(const KexInit& k) {
  std::vector<uint8_t> out(17);
  out[0] = msg::kKexInit;
  std::memcpy(out.data() + 1, k.cookie.data(), k.cookie.size());
  for (const auto& list : k.lists) wire_put_string(out, join(list));
  out.push_back(k.first_kex_follows ? 1 : 0);
  wire_put_u32(out, 0);
  return out;
}

std::string tls_bound_cipher_name(const Binding& binding) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string n(kTlsBoundPrefix);
  for (uint8_t b : binding) {
    n += kHex[b >> 4];
    n += kHex[b & 15];
  }
  n += kTlsBoundSuffix;
  return n;
}

KexInit our_kexinit(Role role, bool initial, const std::array<uint8_t, 16>& cookie,
                    const std::vector<std::string>& cipher_override, const std::optional<Binding>& binding) {
  KexInit k;
  k.cookie = cookie;
  k.lists[kKexAlgs] = {"curve25519-sha256", "curve25519-sha256@libssh.org"};
  if (initial) k.lists[kKexAlgs].emplace_back(role == Role::Client ? kExtInfoClient : "ext-info-s");
  if (initial) k.lists[kKexAlgs].emplace_back(role == Role::Client ? kStrictClient : kStrictServer);
  k.lists[kHostKeyAlgs] = {"ssh-ed25519"};
  std::vector<std::string> ciphers;
  if (!cipher_override.empty())
    ciphers = cipher_override;
  else if (EVP_has_aes_hardware())
    ciphers = {"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"};
  else
    ciphers = {"chacha20-poly1305@openssh.com", "aes128-gcm@openssh.com", "aes256-gcm@openssh.com"};
  if (cipher_override.empty() && binding) ciphers.insert(ciphers.begin(), tls_bound_cipher_name(*binding));
  k.lists[kEncC2S] = ciphers;
  k.lists[kEncS2C] = ciphers;
  // Every cipher above is an AEAD, so the MAC lists are never consulted (OpenSSH skips MAC
  // negotiation for them); we advertise none rather than claim one we do not implement.
  k.lists[kCompC2S] = {"none"};
  k.lists[kCompS2C] = {"none"};
  return k;
}

std::optional<Negotiated> negotiate(const KexInit& client, const KexInit& server, bool initial, std::string* err) {
  auto fail = [&](const char* what) -> std::optional<Negotiated> {
    if (err) *err = what;
    return std::nullopt;
  };
  Negotiated n;
  auto kex = choose(client.lists[kKexAlgs], server.lists[kKexAlgs]);
  if (!kex || (*kex != "curve25519-sha256" && *kex != "curve25519-sha256@libssh.org"))
    return fail("no common key exchange algorithm");
  n.kex = *kex;
  auto hk = choose(client.lists[kHostKeyAlgs], server.lists[kHostKeyAlgs]);
  if (!hk || *hk != "ssh-ed25519") return fail("no common host key algorithm");
  n.hostkey = *hk;
  auto c2s = choose(client.lists[kEncC2S], server.lists[kEncC2S]);
  auto c2s_cipher = c2s ? cipher_from_name(*c2s) : std::nullopt;
  if (!c2s_cipher) return fail("no common cipher (client to server)");
  auto s2c = choose(client.lists[kEncS2C], server.lists[kEncS2C]);
  auto s2c_cipher = s2c ? cipher_from_name(*s2c) : std::nullopt;
  if (!s2c_cipher) return fail("no common cipher (server to client)");
  n.c2s = *c2s_cipher;
  n.s2c = *s2c_cipher;
  auto comp_c2s = choose(client.lists[kCompC2S], server.lists[kCompC2S]);
  auto comp_s2c = choose(client.lists[kCompS2C], server.lists[kCompS2C]);
  if (comp_c2s != "none" || comp_s2c != "none") return fail("no common compression (we only do none)");
  n.strict = initial && contains(client.lists[kKexAlgs], kStrictClient) && contains(server.lists[kKexAlgs], kStrictServer);
  n.peer_wants_ext_info = initial && contains(client.lists[kKexAlgs], kExtInfoClient);
  // RFC 4253 §7: a guess is right when the guesser's first kex and host key algorithms are the
  // negotiated ones.
  auto guessed_wrong = [&](const KexInit& k) {
    if (!k.first_kex_follows) return false;
    return k.lists[kKexAlgs].empty() || k.lists[kHostKeyAlgs].empty() || k.lists[kKexAlgs][0] != n.kex ||
           k.lists[kHostKeyAlgs][0] != n.hostkey;
  };
  n.client_guessed_wrong = guessed_wrong(client);
  n.server_guessed_wrong = guessed_wrong(server);
  return n;
}

X25519Key X25519Key::generate() {
  X25519Key k;
  X25519_keypair(k.pub.data(), k.priv.data());
  return k;
}

std::optional<std::array<uint8_t, 32>> x25519_shared(const X25519Key& ours, std::span<const uint8_t> peer_pub) {
  if (peer_pub.size() != 32) return std::nullopt;
  std::array<uint8_t, 32> out{};
  // BoringSSL's X25519 returns 0 for an all-zero result (low-order peer point).
  if (X25519(out.data(), ours.priv.data(), peer_pub.data()) != 1) return std::nullopt;
  return out;
}

void wire_put_mpint(std::vector<uint8_t>& out, std::span<const uint8_t> unsigned_be) {
  size_t skip = 0;
  while (skip < unsigned_be.size() && unsigned_be[skip] == 0) ++skip;
  auto digits = unsigned_be.subspan(skip);
  const bool pad = !digits.empty() && (digits[0] & 0x80);
  wire_put_u32(out, uint32_t(digits.size() + (pad ? 1 : 0)));
  if (pad) out.push_back(0);
  out.insert(out.end(), digits.begin(), digits.end());
}

std::array<uint8_t, 32> exchange_hash(const KexHashInput& in) {
  SHA256_CTX h;
  SHA256_Init(&h);
  sha256_string(h, bytes_of(in.client_version));
  sha256_string(h, bytes_of(in.server_version));
  sha256_string(h, in.client_kexinit);
  sha256_string(h, in.server_kexinit);
  sha256_string(h, in.host_key_blob);
  sha256_string(h, in.client_pub);
  sha256_string(h, in.server_pub);
  std::vector<uint8_t> k;
  wire_put_mpint(k, in.shared_secret);
  SHA256_Update(&h, k.data(), k.size());
  OPENSSL_cleanse(k.data(), k.size());
  std::array<uint8_t, 32> out{};
  SHA256_Final(out.data(), &h);
  return out;
}

namespace {

std::vector<uint8_t> derive_one(std::span<const uint8_t> k_mpint, std::span<const uint8_t> h, char letter,
                                std::span<const uint8_t> session_id, size_t want) {
  std::vector<uint8_t> out;
  if (want == 0) return out;
  uint8_t block[SHA256_DIGEST_LENGTH];
  SHA256_CTX c;
  SHA256_Init(&c);
  SHA256_Update(&c, k_mpint.data(), k_mpint.size());
  SHA256_Update(&c, h.data(), h.size());
  const uint8_t x = uint8_t(letter);
  SHA256_Update(&c, &x, 1);
  SHA256_Update(&c, session_id.data(), session_id.size());
  SHA256_Final(block, &c);
  out.assign(block, block + sizeof block);
  while (out.size() < want) {
    SHA256_Init(&c);
    SHA256_Update(&c, k_mpint.data(), k_mpint.size());
    SHA256_Update(&c, h.data(), h.size());
    SHA256_Update(&c, out.data(), out.size());
    SHA256_Final(block, &c);
    out.insert(out.end(), block, block + sizeof block);
  }
  OPENSSL_cleanse(block, sizeof block);
  out.resize(want);
  return out;
}

}  // namespace

SessionKeys derive_keys(std::span<const uint8_t> shared_secret, std::span<const uint8_t> exchange_hash,
                        std::span<const uint8_t> session_id, Cipher c2s, Cipher s2c) {
  std::vector<uint8_t> k;
  wire_put_mpint(k, shared_secret);
  SessionKeys s;
  s.c2s.cipher = c2s;
  s.s2c.cipher = s2c;
  s.c2s.iv = derive_one(k, exchange_hash, 'A', session_id, cipher_iv_len(c2s));
  s.s2c.iv = derive_one(k, exchange_hash, 'B', session_id, cipher_iv_len(s2c));
  s.c2s.key = derive_one(k, exchange_hash, 'C', session_id, cipher_key_len(c2s));
  s.s2c.key = derive_one(k, exchange_hash, 'D', session_id, cipher_key_len(s2c));
  OPENSSL_cleanse(k.data(), k.size());
  return s;
}

std::vector<uint8_t> ed25519_signature_blob(std::span<const uint8_t> message, std::span<const uint8_t, 64> private_key) {
  uint8_t sig[64];
  ED25519_sign(sig, message.data(), message.size(), private_key.data());
  std::vector<uint8_t> out;
  wire_put_string(out, std::string_view("ssh-ed25519"));
  wire_put_string(out, std::span<const uint8_t>(sig, sizeof sig));
  return out;
}

bool ed25519_verify_blob(std::span<const uint8_t> signature_blob, std::span<const uint8_t> message,
                         std::span<const uint8_t> public_key_blob) {
  auto pk = ed25519_key_bytes(public_key_blob);
  if (!pk) return false;
  WireReader r(signature_blob);
  std::string alg;
  std::span<const uint8_t> sig;
  if (!r.string(alg) || alg != "ssh-ed25519" || !r.bytes(sig) || sig.size() != 64 || r.remaining() != 0) return false;
  return ED25519_verify(message.data(), message.size(), sig.data(), pk->data()) == 1;
}

}  // namespace alk::ssh
