// RFC 9001 Appendix A vectors for the QUIC crypto glue, plus a full in-memory
// ngtcp2 client/server handshake and stream transfer over our callbacks.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/aead.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/hkdf.h>
#include <openssl/nid.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "transport/quic/crypto.hpp"

namespace q = alk::quic;
using Bytes = std::vector<uint8_t>;

namespace {

Bytes hex(std::string_view s) {
  Bytes out;
  for (size_t i = 0; i + 1 < s.size(); i += 2) out.push_back(static_cast<uint8_t>(std::stoul(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

std::string to_hex(std::span<const uint8_t> b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) {
    s.push_back(kDigits[c >> 4]);
    s.push_back(kDigits[c & 15]);
  }
  return s;
}

ngtcp2_crypto_ctx ctx_for(uint32_t cipher_id) {
  ngtcp2_crypto_ctx ctx{};
  REQUIRE(q::crypto_ctx_for_cipher(ctx, cipher_id));
  return ctx;
}

const Bytes kA1Dcid = hex("8394c8f03e515708");

// Mask from a header-protection key and sample, through hp_mask_cb.
std::string mask_hex(const ngtcp2_crypto_cipher &hp, std::span<const uint8_t> key, std::span<const uint8_t> sample) {
  q::HpCtx ctx;
  REQUIRE(ctx.init(hp, key));
  uint8_t mask[16] = {};
  REQUIRE(q::hp_mask_cb(mask, &hp, ctx.get(), sample.data()) == 0);
  return to_hex({mask, NGTCP2_HP_MASKLEN});
}

}  // namespace

TEST_CASE("hkdf_expand_label reproduces the RFC 9001 A.1 initial and client secrets", "[quic][rfc9001]") {
  ngtcp2_crypto_ctx ctx;
  q::initial_crypto_ctx(ctx);
  uint8_t initial[32];
  const Bytes salt = hex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a");
  REQUIRE(q::hkdf_extract(initial, ctx.md, kA1Dcid, salt));
  CHECK(to_hex(initial) == "7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44");
  uint8_t client[32];
  REQUIRE(q::hkdf_expand_label(client, ctx.md, initial, "client in"));
  CHECK(to_hex(client) == "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea");
}

TEST_CASE("A.1 client initial secret, key, iv and hp", "[quic][rfc9001]") {
  q::InitialSecrets s;
  REQUIRE(q::derive_initial_secrets(s, kA1Dcid));
  CHECK(to_hex(s.initial) == "7db5df06e7a69e432496adedb00851923595221596ae2ae9fb8115c1e9ed0a44");
  CHECK(to_hex(s.client) == "c00cf151ca5be075ed0ebfb5c80323c42d6b7db67881289af4008f1f6c357aea");
  ngtcp2_crypto_ctx ctx;
  q::initial_crypto_ctx(ctx);
  q::PacketProtectionKeys k;
  REQUIRE(q::derive_packet_protection_keys(k, ctx.aead, ctx.md, s.client));
  CHECK(to_hex(k.key_span()) == "1f369613dd76d5467730efcbe3b1a22d");
  CHECK(to_hex(k.iv) == "fa044b2f42a3fd3b46fb255c");
  CHECK(to_hex(k.hp_span()) == "9f50449e04a0e810283a1e9933adedd2");
}

TEST_CASE("A.1 server initial secret, key, iv and hp", "[quic][rfc9001]") {
  q::InitialSecrets s;
  REQUIRE(q::derive_initial_secrets(s, kA1Dcid));
  CHECK(to_hex(s.server) == "3c199828fd139efd216c155ad844cc81fb82fa8d7446fa7d78be803acdda951b");
  ngtcp2_crypto_ctx ctx;
  q::initial_crypto_ctx(ctx);
  q::PacketProtectionKeys k;
  REQUIRE(q::derive_packet_protection_keys(k, ctx.aead, ctx.md, s.server));
  CHECK(to_hex(k.key_span()) == "cf3a5331653c364c88f0f379b6067e37");
  CHECK(to_hex(k.iv) == "0ac1493ca1905853b0bba03e");
  CHECK(to_hex(k.hp_span()) == "c206b8d9b9f0f37644430b490eeaa314");
}

TEST_CASE("A.2 client Initial header protection mask", "[quic][rfc9001]") {
  ngtcp2_crypto_ctx ctx;
  q::initial_crypto_ctx(ctx);
  CHECK(mask_hex(ctx.hp, hex("9f50449e04a0e810283a1e9933adedd2"), hex("d1b1c98dd7689fb8ec11d242b123dc9b")) ==
        "437b9aec36");
}

TEST_CASE("A.3 server Initial header protection mask", "[quic][rfc9001]") {
  ngtcp2_crypto_ctx ctx;
  q::initial_crypto_ctx(ctx);
  CHECK(mask_hex(ctx.hp, hex("c206b8d9b9f0f37644430b490eeaa314"), hex("2cd0991cd25b0aac406a5816b6394100")) ==
        "2ec0d8356a");
}

TEST_CASE("A.4 Retry integrity tag through encrypt_cb with the v1 retry key", "[quic][rfc9001]") {
  ngtcp2_crypto_aead aead;
  q::retry_aead(aead);
  q::AeadCtx actx;
  REQUIRE(actx.init(aead, {reinterpret_cast<const uint8_t *>(NGTCP2_RETRY_KEY_V1), 16}));
  // Retry pseudo-packet: ODCID length, ODCID, then the Retry packet without its tag.
  Bytes pseudo = hex("08" "8394c8f03e515708" "ff000000010008f067a5502a4262b5746f6b656e");
  uint8_t tag[16];
  REQUIRE(q::encrypt_cb(tag, &aead, actx.get(), nullptr, 0, reinterpret_cast<const uint8_t *>(NGTCP2_RETRY_NONCE_V1),
                        12, pseudo.data(), pseudo.size()) == 0);
  CHECK(to_hex(tag) == "04a265ba2eff4d829058fb3f0f2496ba");
}

TEST_CASE("A.5 ChaCha20-Poly1305 key, iv, hp and key update derivation", "[quic][rfc9001]") {
  const auto ctx = ctx_for(TLS1_CK_CHACHA20_POLY1305_SHA256);
  const Bytes secret = hex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b");
  q::PacketProtectionKeys k;
  REQUIRE(q::derive_packet_protection_keys(k, ctx.aead, ctx.md, secret));
  CHECK(to_hex(k.key_span()) == "c6d98ff3441c3fe1b2182094f69caa2ed4b716b65488960a7a984979fb23e1c8");
  CHECK(to_hex(k.iv) == "e0459b3474bdd0e44a41c144");
  CHECK(to_hex(k.hp_span()) == "25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4");
  uint8_t ku[32];
  REQUIRE(q::update_traffic_secret(ku, ctx.md, secret));
  CHECK(to_hex(ku) == "1223504755036d556342ee9361d253421a826c9ecdf3c7148684b36b714881f9");
}

TEST_CASE("A.5 ChaCha20 header protection mask", "[quic][rfc9001]") {
  const auto ctx = ctx_for(TLS1_CK_CHACHA20_POLY1305_SHA256);
  CHECK(mask_hex(ctx.hp, hex("25a282b9e82f06f21f488917a4fc8f1b73573685608597d0efcb076b0ab7a7a4"),
                 hex("5e5cd55c41f69080575d7999c25a5bfb")) == "aefefe7d03");
}

TEST_CASE("A.5 full short-header packet protection", "[quic][rfc9001]") {
  const auto ctx = ctx_for(TLS1_CK_CHACHA20_POLY1305_SHA256);
  const Bytes secret = hex("9ac312a7f877468ebe69422748ad00a15443f18203a07d6060f688f30f21632b");
  q::PacketProtectionKeys k;
  REQUIRE(q::derive_packet_protection_keys(k, ctx.aead, ctx.md, secret));
  q::AeadCtx aead;
  q::HpCtx hp;
  REQUIRE(aead.init(ctx.aead, k.key_span()));
  REQUIRE(hp.init(ctx.hp, k.hp_span()));

  const uint64_t pn = 654360564;
  // Short header, 3-byte packet number (0x00bff4, the low bits of pn), empty DCID.
  Bytes packet = {0x42, static_cast<uint8_t>(pn >> 16), static_cast<uint8_t>(pn >> 8), static_cast<uint8_t>(pn)};
  CHECK(to_hex(packet) == "4200bff4");
  const size_t pn_offset = 1, pn_len = 3;
  uint8_t nonce[12];
  std::memcpy(nonce, k.iv.data(), 12);
  for (int i = 0; i < 8; ++i) nonce[11 - i] ^= static_cast<uint8_t>(pn >> (8 * i));
  const uint8_t payload[] = {0x01};
  const size_t header_len = packet.size();
  packet.resize(header_len + sizeof(payload) + ctx.aead.max_overhead);
  REQUIRE(q::encrypt_cb(packet.data() + header_len, &ctx.aead, aead.get(), payload, sizeof(payload), nonce, 12,
                        packet.data(), header_len) == 0);
  CHECK(to_hex({packet.data() + header_len, packet.size() - header_len}) == "655e5cd55c41f69080575d7999c25a5bfb");

  uint8_t mask[16];
  REQUIRE(q::hp_mask_cb(mask, &ctx.hp, hp.get(), packet.data() + pn_offset + 4) == 0);
  packet[0] ^= mask[0] & 0x1f;
  for (size_t i = 0; i < pn_len; ++i) packet[pn_offset + i] ^= mask[1 + i];
  CHECK(to_hex(packet) == "4cfe4189655e5cd55c41f69080575d7999c25a5bfb");
}

TEST_CASE("AEAD round trip for every QUIC cipher, tampering is NGTCP2_ERR_DECRYPT", "[quic][aead]") {
  const uint32_t id = GENERATE(TLS1_CK_AES_128_GCM_SHA256, TLS1_CK_AES_256_GCM_SHA384, TLS1_CK_CHACHA20_POLY1305_SHA256);
  const auto ctx = ctx_for(id);
  Bytes key(q::aead_key_length(ctx.aead));
  RAND_bytes(key.data(), key.size());
  q::AeadCtx actx;
  REQUIRE(actx.init(ctx.aead, key));
  uint8_t nonce[12];
  RAND_bytes(nonce, sizeof(nonce));
  const Bytes aad = hex("c300000001088394c8f03e515708");
  Bytes plain(1200);
  RAND_bytes(plain.data(), plain.size());
  Bytes sealed(plain.size() + ctx.aead.max_overhead);
  REQUIRE(ctx.aead.max_overhead == 16);
  REQUIRE(q::encrypt_cb(sealed.data(), &ctx.aead, actx.get(), plain.data(), plain.size(), nonce, 12, aad.data(),
                        aad.size()) == 0);
  Bytes opened(plain.size());
  REQUIRE(q::decrypt_cb(opened.data(), &ctx.aead, actx.get(), sealed.data(), sealed.size(), nonce, 12, aad.data(),
                        aad.size()) == 0);
  CHECK(opened == plain);

  SECTION("flipped ciphertext bit") {
    sealed[7] ^= 0x01;
    CHECK(q::decrypt_cb(opened.data(), &ctx.aead, actx.get(), sealed.data(), sealed.size(), nonce, 12, aad.data(),
                        aad.size()) == NGTCP2_ERR_DECRYPT);
  }
  SECTION("flipped tag bit") {
    sealed.back() ^= 0x80;
    CHECK(q::decrypt_cb(opened.data(), &ctx.aead, actx.get(), sealed.data(), sealed.size(), nonce, 12, aad.data(),
                        aad.size()) == NGTCP2_ERR_DECRYPT);
  }
  SECTION("different associated data") {
    Bytes other = aad;
    other[0] ^= 0x40;
    CHECK(q::decrypt_cb(opened.data(), &ctx.aead, actx.get(), sealed.data(), sealed.size(), nonce, 12, other.data(),
                        other.size()) == NGTCP2_ERR_DECRYPT);
  }
  SECTION("ciphertext shorter than the tag") {
    for (size_t len : {0, 1, 15}) {
      CHECK(q::decrypt_cb(opened.data(), &ctx.aead, actx.get(), sealed.data(), len, nonce, 12, aad.data(),
                          aad.size()) == NGTCP2_ERR_DECRYPT);
    }
  }
}

TEST_CASE("crypto contexts carry the RFC 9001 usage limits and refuse unknown suites", "[quic][ctx]") {
  const auto aes128 = ctx_for(TLS1_CK_AES_128_GCM_SHA256);
  CHECK(aes128.max_encryption == (1ULL << 23));
  CHECK(aes128.max_decryption_failure == (1ULL << 52));
  CHECK(q::md_length(aes128.md) == 32);
  const auto aes256 = ctx_for(TLS1_CK_AES_256_GCM_SHA384);
  CHECK(aes256.max_encryption == (1ULL << 23));
  CHECK(q::aead_key_length(aes256.aead) == 32);
  CHECK(q::md_length(aes256.md) == 48);
  const auto chacha = ctx_for(TLS1_CK_CHACHA20_POLY1305_SHA256);
  CHECK(chacha.max_encryption == (1ULL << 62));
  CHECK(chacha.max_decryption_failure == (1ULL << 36));
  ngtcp2_crypto_ctx initial;
  q::initial_crypto_ctx(initial);
  CHECK(initial.max_encryption != 0);
  ngtcp2_crypto_ctx bad{};
  CHECK_FALSE(q::crypto_ctx_for_cipher(bad, 0x0300C02F));  // TLS 1.2 ECDHE-RSA-AES128-GCM
  CHECK_FALSE(q::crypto_ctx_for_cipher(bad, 0));

  q::HpCtx hp;
  CHECK_FALSE(hp.init(aes128.hp, hex("00112233")));  // wrong key length
  q::AeadCtx aead;
  CHECK_FALSE(aead.init(aes128.aead, hex("00112233")));
}

TEST_CASE("encryption levels map by meaning, not by enum value", "[quic][level]") {
  CHECK(q::to_ngtcp2_level(ssl_encryption_initial) == NGTCP2_CRYPTO_LEVEL_INITIAL);
  CHECK(q::to_ngtcp2_level(ssl_encryption_early_data) == NGTCP2_CRYPTO_LEVEL_EARLY);
  CHECK(q::to_ngtcp2_level(ssl_encryption_handshake) == NGTCP2_CRYPTO_LEVEL_HANDSHAKE);
  CHECK(q::to_ngtcp2_level(ssl_encryption_application) == NGTCP2_CRYPTO_LEVEL_APPLICATION);
  for (auto l : {NGTCP2_CRYPTO_LEVEL_INITIAL, NGTCP2_CRYPTO_LEVEL_HANDSHAKE, NGTCP2_CRYPTO_LEVEL_APPLICATION,
                 NGTCP2_CRYPTO_LEVEL_EARLY}) {
    auto s = q::to_ssl_level(l);
    REQUIRE(s.has_value());
    CHECK(q::to_ngtcp2_level(*s) == l);
  }
  CHECK_FALSE(q::to_ssl_level(static_cast<ngtcp2_crypto_level>(42)).has_value());
  CHECK_FALSE(q::to_ngtcp2_level(static_cast<ssl_encryption_level_t>(42)).has_value());
}

TEST_CASE("stateless reset tokens are deterministic per secret and CID", "[quic][token]") {
  const Bytes secret = hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  ngtcp2_cid a, b;
  const Bytes ca = hex("0102030405060708"), cb = hex("0102030405060709");
  ngtcp2_cid_init(&a, ca.data(), ca.size());
  ngtcp2_cid_init(&b, cb.data(), cb.size());
  std::array<uint8_t, 16> t1{}, t2{}, t3{}, t4{};
  REQUIRE(q::generate_stateless_reset_token(t1, secret, a));
  REQUIRE(q::generate_stateless_reset_token(t2, secret, a));
  REQUIRE(q::generate_stateless_reset_token(t3, secret, b));
  const Bytes other_secret = hex("ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  REQUIRE(q::generate_stateless_reset_token(t4, other_secret, a));
  CHECK(t1 == t2);
  CHECK(t1 != t3);
  CHECK(t1 != t4);
  // HKDF-SHA256(IKM = secret, salt = CID, info = "stateless_reset"), first 16 bytes.
  uint8_t ref[16];
  static const char kInfo[] = "stateless_reset";
  REQUIRE(HKDF(ref, 16, EVP_sha256(), secret.data(), secret.size(), ca.data(), ca.size(),
               reinterpret_cast<const uint8_t *>(kInfo), sizeof(kInfo) - 1) == 1);
  CHECK(to_hex(t1) == to_hex(ref));
}

TEST_CASE("ALPN selection accepts only alknet-ssh and rejects malformed lists", "[quic][alpn]") {
  const uint8_t *out = nullptr;
  uint8_t outlen = 0;
  const Bytes good = hex("02" "6832" "0a" "616c6b6e65742d737368");  // "h2", "alknet-ssh"
  REQUIRE(q::select_alpn_cb(nullptr, &out, &outlen, good.data(), good.size(), nullptr) == SSL_TLSEXT_ERR_OK);
  CHECK(std::string_view(reinterpret_cast<const char *>(out), outlen) == "alknet-ssh");
  const Bytes other = hex("02" "6833");  // "h3"
  CHECK(q::select_alpn_cb(nullptr, &out, &outlen, other.data(), other.size(), nullptr) ==
        SSL_TLSEXT_ERR_ALERT_FATAL);
  const Bytes truncated = hex("0b" "616c6b6e65742d737368");  // length runs past the end
  CHECK(q::select_alpn_cb(nullptr, &out, &outlen, truncated.data(), truncated.size(), nullptr) ==
        SSL_TLSEXT_ERR_ALERT_FATAL);
  const Bytes zero = hex("00" "0a" "616c6b6e65742d737368");
  CHECK(q::select_alpn_cb(nullptr, &out, &outlen, zero.data(), zero.size(), nullptr) == SSL_TLSEXT_ERR_ALERT_FATAL);
  CHECK(q::select_alpn_cb(nullptr, &out, &outlen, nullptr, 0, nullptr) == SSL_TLSEXT_ERR_ALERT_FATAL);
  const Bytes prefix = hex("09" "616c6b6e65742d7373");  // "alknet-ss"
  CHECK(q::select_alpn_cb(nullptr, &out, &outlen, prefix.data(), prefix.size(), nullptr) ==
        SSL_TLSEXT_ERR_ALERT_FATAL);
}

// ---------------------------------------------------------------------------------
// In-memory handshake: two ngtcp2 connections wired only through byte buffers.

namespace {

constexpr ngtcp2_tstamp kMs = 1'000'000;
const Bytes kResetSecret = hex("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf");

struct Identity {
  bssl::UniquePtr<EVP_PKEY> key;
  bssl::UniquePtr<X509> cert;
};

Identity make_self_signed(const char *cn) {
  Identity id;
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  REQUIRE(ec);
  REQUIRE(EC_KEY_generate_key(ec.get()) == 1);
  id.key.reset(EVP_PKEY_new());
  REQUIRE(EVP_PKEY_assign_EC_KEY(id.key.get(), ec.release()) == 1);
  id.cert.reset(X509_new());
  X509 *x = id.cert.get();
  REQUIRE(X509_set_version(x, 2) == 1);
  REQUIRE(ASN1_INTEGER_set(X509_get_serialNumber(x), 1) == 1);
  REQUIRE(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
  REQUIRE(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
  X509_NAME *name = X509_get_subject_name(x);
  REQUIRE(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t *>(cn), -1, -1, 0) ==
          1);
  REQUIRE(X509_set_issuer_name(x, name) == 1);
  // subjectAltName DNS:cn, built from parts (this BoringSSL build has no config-string API).
  bssl::UniquePtr<GENERAL_NAMES> names(GENERAL_NAMES_new());
  bssl::UniquePtr<GENERAL_NAME> dns(GENERAL_NAME_new());
  bssl::UniquePtr<ASN1_IA5STRING> ia5(ASN1_IA5STRING_new());
  REQUIRE(ASN1_STRING_set(ia5.get(), cn, static_cast<int>(std::strlen(cn))) == 1);
  GENERAL_NAME_set0_value(dns.get(), GEN_DNS, ia5.release());
  REQUIRE(bssl::PushToStack(names.get(), std::move(dns)));
  REQUIRE(X509_add1_ext_i2d(x, NID_subject_alt_name, names.get(), 0, X509V3_ADD_DEFAULT) == 1);
  REQUIRE(X509_set_pubkey(x, id.key.get()) == 1);
  REQUIRE(X509_sign(x, id.key.get(), EVP_sha256()) > 0);
  return id;
}

struct Endpoint {
  q::ConnRef ref{};
  bssl::UniquePtr<SSL> ssl;
  ngtcp2_conn *conn = nullptr;
  sockaddr_in local{}, remote{};
  int64_t stream_id = -1;
  Bytes tx;
  size_t tx_off = 0;
  bool fin_sent = false;
  Bytes rx;
  bool fin_received = false;
  bool confirmed = false;

  Endpoint() {
    ref.get_conn = [](q::ConnRef *r) { return static_cast<Endpoint *>(r->user_data)->conn; };
    ref.user_data = this;
  }
  Endpoint(const Endpoint &) = delete;
  Endpoint &operator=(const Endpoint &) = delete;
  ~Endpoint() {
    if (conn != nullptr) ngtcp2_conn_del(conn);
  }
  ngtcp2_path path() {
    return ngtcp2_path{{reinterpret_cast<sockaddr *>(&local), sizeof(local)},
                       {reinterpret_cast<sockaddr *>(&remote), sizeof(remote)},
                       nullptr};
  }
};

sockaddr_in v4(const char *ip, uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, ip, &sa.sin_addr);
  return sa;
}

ngtcp2_cid random_cid(size_t len = 16) {
  ngtcp2_cid cid;
  uint8_t buf[NGTCP2_MAX_CIDLEN];
  RAND_bytes(buf, len);
  ngtcp2_cid_init(&cid, buf, len);
  return cid;
}

int get_new_connection_id(ngtcp2_conn *, ngtcp2_cid *cid, uint8_t *token, size_t cidlen, void *) {
  *cid = random_cid(cidlen);
  return q::generate_stateless_reset_token(std::span<uint8_t, 16>(token, 16), kResetSecret, *cid)
             ? 0
             : NGTCP2_ERR_CALLBACK_FAILURE;
}

int recv_stream_data(ngtcp2_conn *conn, uint32_t flags, int64_t stream_id, uint64_t, const uint8_t *data,
                     size_t datalen, void *user_data, void *) {
  auto *ep = static_cast<Endpoint *>(user_data);
  ep->stream_id = stream_id;
  ep->rx.insert(ep->rx.end(), data, data + datalen);
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) ep->fin_received = true;
  // The application consumed it at once: reopen the windows by the same amount.
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, datalen);
  ngtcp2_conn_extend_max_offset(conn, datalen);
  return 0;
}

int handshake_confirmed(ngtcp2_conn *, void *user_data) {
  static_cast<Endpoint *>(user_data)->confirmed = true;
  return 0;
}

ngtcp2_callbacks app_callbacks(bool server) {
  ngtcp2_callbacks cb{};
  if (server) {
    q::set_server_crypto_callbacks(cb);
  } else {
    q::set_client_crypto_callbacks(cb);
  }
  cb.rand = q::rand_cb;
  cb.get_new_connection_id = get_new_connection_id;
  cb.recv_stream_data = recv_stream_data;
  cb.handshake_confirmed = handshake_confirmed;
  return cb;
}

void app_settings(ngtcp2_settings &s, ngtcp2_transport_params &p, ngtcp2_tstamp now) {
  ngtcp2_settings_default(&s);
  s.initial_ts = now;
  ngtcp2_transport_params_default(&p);
  p.initial_max_streams_bidi = 4;
  p.initial_max_stream_data_bidi_local = 256 * 1024;
  p.initial_max_stream_data_bidi_remote = 256 * 1024;
  p.initial_max_data = 1024 * 1024;
  p.max_idle_timeout = 30ULL * 1000 * kMs;
}

struct Harness {
  Identity id = make_self_signed("localhost");
  bssl::UniquePtr<SSL_CTX> client_ctx{SSL_CTX_new(TLS_method())};
  bssl::UniquePtr<SSL_CTX> server_ctx{SSL_CTX_new(TLS_method())};
  Endpoint client, server;
  std::deque<Bytes> to_server, to_client;
  ngtcp2_tstamp now = 1000 * kMs;
  std::string client_alpn{q::kAlpn};

  void init_contexts() {
    REQUIRE(q::configure_client_context(client_ctx.get()));
    REQUIRE(q::configure_server_context(server_ctx.get()));
    REQUIRE(SSL_CTX_use_certificate(server_ctx.get(), id.cert.get()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey(server_ctx.get(), id.key.get()) == 1);
    REQUIRE(X509_STORE_add_cert(SSL_CTX_get_cert_store(client_ctx.get()), id.cert.get()) == 1);
    SSL_CTX_set_verify(client_ctx.get(), SSL_VERIFY_PEER, nullptr);
  }

  void start_client() {
    init_contexts();
    client.local = v4("127.0.0.1", 40000);
    client.remote = v4("127.0.0.1", 443);
    server.local = client.remote;
    server.remote = client.local;
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    app_settings(s, p, now);
    const auto cb = app_callbacks(false);
    const ngtcp2_cid dcid = random_cid(), scid = random_cid();
    auto path = client.path();
    REQUIRE(ngtcp2_conn_client_new(&client.conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &s, &p, nullptr,
                                   &client) == 0);
    client.ssl.reset(SSL_new(client_ctx.get()));
    SSL_set_app_data(client.ssl.get(), &client.ref);
    REQUIRE(q::setup_client_session(client.ssl.get(), "localhost", client_alpn));
    ngtcp2_conn_set_tls_native_handle(client.conn, client.ssl.get());
  }

  void accept(const Bytes &pkt) {
    ngtcp2_pkt_hd hd;
    REQUIRE(ngtcp2_accept(&hd, pkt.data(), pkt.size()) == 0);
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    app_settings(s, p, now);
    p.original_dcid = hd.dcid;
    const ngtcp2_cid scid = random_cid();
    p.stateless_reset_token_present = 1;
    REQUIRE(q::generate_stateless_reset_token(p.stateless_reset_token, kResetSecret, scid));
    const auto cb = app_callbacks(true);
    auto path = server.path();
    REQUIRE(ngtcp2_conn_server_new(&server.conn, &hd.scid, &scid, &path, hd.version, &cb, &s, &p, nullptr,
                                   &server) == 0);
    server.ssl.reset(SSL_new(server_ctx.get()));
    SSL_set_app_data(server.ssl.get(), &server.ref);
    REQUIRE(q::setup_server_session(server.ssl.get()));
    ngtcp2_conn_set_tls_native_handle(server.conn, server.ssl.get());
  }

  // Writes every packet the endpoint wants to send now, stream data first.
  void flush(Endpoint &ep, std::deque<Bytes> &out) {
    if (ep.conn == nullptr) return;
    bool stream_blocked = false;
    for (int guard = 0; guard < 1000; ++guard) {
      uint8_t buf[1500];
      ngtcp2_path_storage ps;
      ngtcp2_path_storage_zero(&ps);
      ngtcp2_pkt_info pi{};
      ngtcp2_ssize consumed = -1;
      int64_t sid = -1;
      uint32_t flags = 0;
      ngtcp2_vec v{};
      size_t vcnt = 0;
      if (ep.stream_id >= 0 && !ep.fin_sent && !ep.tx.empty() && !stream_blocked) {
        sid = ep.stream_id;
        flags = NGTCP2_WRITE_STREAM_FLAG_FIN;
        v.base = ep.tx.data() + ep.tx_off;
        v.len = ep.tx.size() - ep.tx_off;
        vcnt = 1;
      }
      const ngtcp2_ssize n =
          ngtcp2_conn_writev_stream(ep.conn, &ps.path, &pi, buf, sizeof(buf), &consumed, flags, sid, &v, vcnt, now);
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
        stream_blocked = true;
        continue;
      }
      REQUIRE(n >= 0);
      if (consumed >= 0) {
        ep.tx_off += static_cast<size_t>(consumed);
        if (ep.tx_off == ep.tx.size()) ep.fin_sent = true;
      }
      if (n == 0) break;
      out.emplace_back(buf, buf + n);
    }
    ngtcp2_conn_update_pkt_tx_time(ep.conn, now);
  }

  void deliver(Endpoint &ep, std::deque<Bytes> &in) {
    while (!in.empty()) {
      Bytes pkt = std::move(in.front());
      in.pop_front();
      if (ep.conn == nullptr) accept(pkt);
      auto path = ep.path();
      const int rv = ngtcp2_conn_read_pkt(ep.conn, &path, nullptr, pkt.data(), pkt.size(), now);
      INFO("read_pkt: " << ngtcp2_strerror(rv) << " tls alert " << int(ngtcp2_conn_get_tls_alert(ep.conn)));
      REQUIRE(rv == 0);
    }
  }

  void expire(Endpoint &ep) {
    if (ep.conn != nullptr && ngtcp2_conn_get_expiry(ep.conn) <= now) {
      REQUIRE(ngtcp2_conn_handle_expiry(ep.conn, now) == 0);
    }
  }

  // One round: both sides send, the "network" carries it with 1 ms latency.
  void step() {
    flush(client, to_server);
    flush(server, to_client);
    now += kMs;
    deliver(server, to_server);
    deliver(client, to_client);
    expire(client);
    expire(server);
  }
};

}  // namespace

TEST_CASE("in-memory ngtcp2 handshake over our glue, key update, then 100 KB each way", "[quic][handshake]") {
  Harness h;
  h.start_client();

  int rounds = 0;
  while (!(h.server.conn != nullptr && ngtcp2_conn_get_handshake_completed(h.client.conn) &&
           ngtcp2_conn_get_handshake_completed(h.server.conn) && h.client.confirmed)) {
    REQUIRE(++rounds < 200);
    h.step();
  }
  // The peer certificate chain was checked against the test's own trust anchor.
  CHECK(SSL_get_verify_result(h.client.ssl.get()) == X509_V_OK);
  for (SSL *ssl : {h.client.ssl.get(), h.server.ssl.get()}) {
    const uint8_t *alpn = nullptr;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
    CHECK(std::string_view(reinterpret_cast<const char *>(alpn), alpn_len) == "alknet-ssh");
    CHECK(SSL_version(ssl) == TLS1_3_VERSION);
  }
  CHECK(ngtcp2_conn_get_negotiated_version(h.client.conn) == NGTCP2_PROTO_VER_V1);

  // A QUIC key update before the data, so every stream byte travels under the
  // "quic ku" keys from update_key_cb.
  bool updated = false;
  for (int i = 0; i < 2000 && !updated; ++i) {
    updated = ngtcp2_conn_initiate_key_update(h.client.conn, h.now) == 0;
    h.step();
  }
  REQUIRE(updated);

  constexpr size_t kSize = 100 * 1024;
  h.client.tx.resize(kSize);
  h.server.tx.resize(kSize);
  for (size_t i = 0; i < kSize; ++i) {
    h.client.tx[i] = static_cast<uint8_t>(i * 7 + 1);
    h.server.tx[i] = static_cast<uint8_t>(i * 13 + 5);
  }
  REQUIRE(ngtcp2_conn_open_bidi_stream(h.client.conn, &h.client.stream_id, nullptr) == 0);

  rounds = 0;
  while (!(h.client.fin_received && h.server.fin_received)) {
    REQUIRE(++rounds < 20000);
    h.step();
  }
  CHECK(h.server.stream_id == h.client.stream_id);
  CHECK(h.server.rx.size() == kSize);
  CHECK(h.client.rx.size() == kSize);
  CHECK(h.server.rx == h.client.tx);
  CHECK(h.client.rx == h.server.tx);
}

TEST_CASE("a client without the alknet-ssh ALPN is refused with no_application_protocol", "[quic][handshake]") {
  Harness h;
  h.client_alpn = "h3";
  h.start_client();
  h.flush(h.client, h.to_server);
  REQUIRE_FALSE(h.to_server.empty());
  h.accept(h.to_server.front());
  auto path = h.server.path();
  const Bytes pkt = h.to_server.front();
  const int rv = ngtcp2_conn_read_pkt(h.server.conn, &path, nullptr, pkt.data(), pkt.size(), h.now);
  CHECK(rv == NGTCP2_ERR_CRYPTO);
  CHECK(ngtcp2_conn_get_tls_alert(h.server.conn) == SSL_AD_NO_APPLICATION_PROTOCOL);
  CHECK_FALSE(ngtcp2_conn_get_handshake_completed(h.server.conn));
}
