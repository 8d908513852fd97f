// QUIC packet-protection and TLS glue between libngtcp2 0.12.1 and BoringSSL.
//
// Debian ships ngtcp2 without a BoringSSL crypto helper (and the GnuTLS one exports
// the same ngtcp2_crypto_* symbols, so it must stay out of the link); this module is
// our own equivalent of ngtcp2's crypto/shared.c + crypto/boringssl/boringssl.c.
// Only QUIC version 1 (RFC 9000/9001) is supported: other versions are refused
// rather than keyed with the wrong salt or labels.
//
// Ownership rule: every AEAD / header-protection context created here is handed to
// ngtcp2 only when the install call succeeds; on every failure path it is freed here.
// ngtcp2 later frees installed contexts through delete_crypto_{aead,cipher}_ctx_cb.
#pragma once

#include <ngtcp2/ngtcp2.h>
#include <openssl/ssl.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace alk::quic {

// The one application protocol alknet speaks over QUIC.
inline constexpr std::string_view kAlpn = "alknet-ssh";

// AEAD usage limits (RFC 9001 §6.6); ngtcp2 enforces them from ngtcp2_crypto_ctx.
inline constexpr uint64_t kMaxEncryptionAesGcm = 1ULL << 23;
inline constexpr uint64_t kMaxEncryptionChaCha20 = 1ULL << 62;
inline constexpr uint64_t kMaxDecryptionFailureAesGcm = 1ULL << 52;
inline constexpr uint64_t kMaxDecryptionFailureChaCha20 = 1ULL << 36;

inline constexpr size_t kInitialSecretLen = 32;
inline constexpr size_t kInitialKeyLen = 16;
inline constexpr size_t kPacketIvLen = 12;  // max(8, AEAD nonce length) for every TLS 1.3 AEAD
inline constexpr size_t kMaxKeyLen = 32;
inline constexpr size_t kMaxSecretLen = 64;  // SHA-384 output is 48

// ---------------------------------------------------------------------------------
// Crypto contexts (what ngtcp2 calls aead / md / hp "native handles").

// Initial packets: AES-128-GCM, SHA-256, AES-128 header protection.
void initial_crypto_ctx(ngtcp2_crypto_ctx &ctx);
// Retry integrity tag AEAD (AES-128-GCM).
void retry_aead(ngtcp2_crypto_aead &aead);
// Handshake/1-RTT context for a TLS 1.3 cipher suite id (SSL_CIPHER_get_id), with the
// right usage limits. Returns false for a suite QUIC cannot use.
bool crypto_ctx_for_cipher(ngtcp2_crypto_ctx &ctx, uint32_t tls_cipher_id);
// Same, for the cipher BoringSSL negotiated on |ssl|.
bool crypto_ctx_for_ssl(ngtcp2_crypto_ctx &ctx, const SSL *ssl);

size_t aead_key_length(const ngtcp2_crypto_aead &aead);
size_t aead_tag_length(const ngtcp2_crypto_aead &aead);
size_t md_length(const ngtcp2_crypto_md &md);

// ---------------------------------------------------------------------------------
// Key schedule (RFC 8446 §7.1 as used by RFC 9001 §5).

bool hkdf_extract(std::span<uint8_t> prk, const ngtcp2_crypto_md &md, std::span<const uint8_t> ikm,
                  std::span<const uint8_t> salt);
// HKDF-Expand-Label(secret, "tls13 " + label, context, out.size()).
bool hkdf_expand_label(std::span<uint8_t> out, const ngtcp2_crypto_md &md, std::span<const uint8_t> secret,
                       std::string_view label, std::span<const uint8_t> context = {});

struct InitialSecrets {
  std::array<uint8_t, kInitialSecretLen> initial{};
  std::array<uint8_t, kInitialSecretLen> client{};
  std::array<uint8_t, kInitialSecretLen> server{};
};
// QUIC v1 Initial secrets from the client's first Destination Connection ID.
bool derive_initial_secrets(InitialSecrets &out, std::span<const uint8_t> client_dcid);

struct PacketProtectionKeys {
  std::array<uint8_t, kMaxKeyLen> key{};
  std::array<uint8_t, kPacketIvLen> iv{};
  std::array<uint8_t, kMaxKeyLen> hp{};
  size_t key_len = 0;  // the hp key has the same length
  std::span<const uint8_t> key_span() const { return {key.data(), key_len}; }
  std::span<const uint8_t> hp_span() const { return {hp.data(), key_len}; }
};
// "quic key" / "quic iv" / "quic hp" from a traffic secret. With derive_hp false the
// hp key is left untouched (key update never rotates it).
bool derive_packet_protection_keys(PacketProtectionKeys &out, const ngtcp2_crypto_aead &aead,
                                   const ngtcp2_crypto_md &md, std::span<const uint8_t> secret,
                                   bool derive_hp = true);
// Next-generation traffic secret for a QUIC key update ("quic ku", RFC 9001 §6.1).
bool update_traffic_secret(std::span<uint8_t> next, const ngtcp2_crypto_md &md, std::span<const uint8_t> secret);

// Stateless reset token = HKDF-SHA256(secret, salt = CID, info = "stateless_reset").
bool generate_stateless_reset_token(std::span<uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN> token,
                                    std::span<const uint8_t> secret, const ngtcp2_cid &cid);

// ---------------------------------------------------------------------------------
// Native AEAD / header-protection contexts. Each init fills native_handle; free is a
// no-op on an empty handle and clears it.

bool aead_ctx_init(ngtcp2_crypto_aead_ctx &ctx, const ngtcp2_crypto_aead &aead, std::span<const uint8_t> key);
void aead_ctx_free(ngtcp2_crypto_aead_ctx &ctx);
bool hp_ctx_init(ngtcp2_crypto_cipher_ctx &ctx, const ngtcp2_crypto_cipher &hp, std::span<const uint8_t> key);
void hp_ctx_free(ngtcp2_crypto_cipher_ctx &ctx);

// Owns a context until release() hands it to ngtcp2.
class AeadCtx {
 public:
  AeadCtx() = default;
  AeadCtx(const AeadCtx &) = delete;
  AeadCtx &operator=(const AeadCtx &) = delete;
  ~AeadCtx() { aead_ctx_free(ctx_); }
  bool init(const ngtcp2_crypto_aead &aead, std::span<const uint8_t> key) {
    aead_ctx_free(ctx_);
    return aead_ctx_init(ctx_, aead, key);
  }
  const ngtcp2_crypto_aead_ctx *get() const { return &ctx_; }
  void release() { ctx_.native_handle = nullptr; }

 private:
  ngtcp2_crypto_aead_ctx ctx_{};
};

class HpCtx {
 public:
  HpCtx() = default;
  HpCtx(const HpCtx &) = delete;
  HpCtx &operator=(const HpCtx &) = delete;
  ~HpCtx() { hp_ctx_free(ctx_); }
  bool init(const ngtcp2_crypto_cipher &hp, std::span<const uint8_t> key) {
    hp_ctx_free(ctx_);
    return hp_ctx_init(ctx_, hp, key);
  }
  const ngtcp2_crypto_cipher_ctx *get() const { return &ctx_; }
  void release() { ctx_.native_handle = nullptr; }

 private:
  ngtcp2_crypto_cipher_ctx ctx_{};
};

// ---------------------------------------------------------------------------------
// Encryption levels: BoringSSL and ngtcp2 order their enums differently.

std::optional<ngtcp2_crypto_level> to_ngtcp2_level(ssl_encryption_level_t level);
std::optional<ssl_encryption_level_t> to_ssl_level(ngtcp2_crypto_level level);

// ---------------------------------------------------------------------------------
// Connection-level key installation (the SSL* is ngtcp2_conn_get_tls_native_handle).

// Initial keys for |client_dcid|; a client that has not seen a Retry also gets the
// Retry integrity AEAD. Returns 0 or -1.
int derive_and_install_initial_key(ngtcp2_conn *conn, uint32_t version, const ngtcp2_cid &client_dcid);
int derive_and_install_rx_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, std::span<const uint8_t> secret);
int derive_and_install_tx_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, std::span<const uint8_t> secret);

// Feeds CRYPTO data to TLS, drives the handshake (marking it completed in ngtcp2 when
// TLS finishes) and processes post-handshake messages. Returns 0 or -1; on -1 the
// cause is in ngtcp2_conn_get_tls_error / get_tls_alert when TLS set one.
int read_write_crypto_data(ngtcp2_conn *conn, SSL *ssl, ngtcp2_crypto_level level, const uint8_t *data,
                           size_t len);

// ---------------------------------------------------------------------------------
// ngtcp2 callbacks, exact 0.12.1 signatures.

int client_initial_cb(ngtcp2_conn *conn, void *user_data);
int recv_client_initial_cb(ngtcp2_conn *conn, const ngtcp2_cid *dcid, void *user_data);
int recv_crypto_data_cb(ngtcp2_conn *conn, ngtcp2_crypto_level level, uint64_t offset, const uint8_t *data,
                        size_t datalen, void *user_data);
int encrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead, const ngtcp2_crypto_aead_ctx *aead_ctx,
               const uint8_t *plaintext, size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
               const uint8_t *aad, size_t aadlen);
// Returns NGTCP2_ERR_DECRYPT on authentication failure (ngtcp2 drops the packet).
int decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead, const ngtcp2_crypto_aead_ctx *aead_ctx,
               const uint8_t *ciphertext, size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
               const uint8_t *aad, size_t aadlen);
// Writes the mask to |dest|, which must hold 16 bytes (ngtcp2 passes a 16-byte buffer).
int hp_mask_cb(uint8_t *dest, const ngtcp2_crypto_cipher *hp, const ngtcp2_crypto_cipher_ctx *hp_ctx,
               const uint8_t *sample);
int recv_retry_cb(ngtcp2_conn *conn, const ngtcp2_pkt_hd *hd, void *user_data);
int update_key_cb(ngtcp2_conn *conn, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                  uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                  const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen,
                  void *user_data);
void delete_crypto_aead_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_aead_ctx *aead_ctx, void *user_data);
void delete_crypto_cipher_ctx_cb(ngtcp2_conn *conn, ngtcp2_crypto_cipher_ctx *cipher_ctx, void *user_data);
int version_negotiation_cb(ngtcp2_conn *conn, uint32_t version, const ngtcp2_cid *client_dcid, void *user_data);
int get_path_challenge_data_cb(ngtcp2_conn *conn, uint8_t *data, void *user_data);
// A ready-made ngtcp2_rand (BoringSSL's CSPRNG) for callers that want one.
void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *rand_ctx);

// Set the crypto fields of |cb| (client_initial / recv_client_initial, recv_crypto_data,
// encrypt, decrypt, hp_mask, recv_retry (client), update_key, delete_crypto_*,
// version_negotiation, get_path_challenge_data) and leave every other field alone.
// The caller must still set rand (rand_cb will do), get_new_connection_id, and the
// stream / handshake callbacks it needs.
void set_client_crypto_callbacks(ngtcp2_callbacks &cb);
void set_server_crypto_callbacks(ngtcp2_callbacks &cb);

// ---------------------------------------------------------------------------------
// TLS side.

// Stored with SSL_set_app_data(ssl, &ref); the QUIC method finds the connection
// through it. The owner keeps it alive as long as the SSL*.
struct ConnRef {
  ngtcp2_conn *(*get_conn)(ConnRef *);
  void *user_data;
};

const SSL_QUIC_METHOD &quic_method();

// TLS 1.3 only and the QUIC method. The server context also gets the ALPN selector.
bool configure_client_context(SSL_CTX *ctx);
bool configure_server_context(SSL_CTX *ctx);

// Client SSL: connect state, RFC transport-parameter codepoint, ALPN, SNI and the
// certificate name check (IP literals are checked as IP and get no SNI). Certificate
// verification itself (mode, trust store) is the SSL_CTX owner's choice.
bool setup_client_session(SSL *ssl, std::string_view server_name, std::string_view alpn = kAlpn);
// Server SSL: accept state and the RFC transport-parameter codepoint. No 0-RTT.
bool setup_server_session(SSL *ssl);

// ALPN select callback: picks "alknet-ssh" from the client's list, else fails the
// handshake with no_application_protocol (RFC 9001 §8.1). Malformed lists fail too.
int select_alpn_cb(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in, unsigned inlen, void *arg);

}  // namespace alk::quic
