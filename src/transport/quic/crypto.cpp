// Packet-protection primitives: contexts, key schedule, AEAD and header protection.
// Connection-level glue (ngtcp2 callbacks that touch a conn, the TLS side) lives in
// glue.cpp.
#include "transport/quic/crypto.hpp"

#include "crypto/aes_gcm.hpp"
#include "crypto/hkdf.hpp"

#include <openssl/aead.h>
#include <openssl/aes.h>
#include <openssl/chacha.h>
#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>

namespace alk::quic {
namespace {

enum class HpKind : uint8_t { aes128, aes256, chacha20 };

// The hp "native handle" ngtcp2 carries around points at one of these constants.
struct HpCipher {
  HpKind kind;
};
constexpr HpCipher kHpAes128{HpKind::aes128};
constexpr HpCipher kHpAes256{HpKind::aes256};
constexpr HpCipher kHpChaCha20{HpKind::chacha20};

// Keyed header-protection state behind ngtcp2_crypto_cipher_ctx::native_handle.
struct HpKey {
  HpKind kind;
  AES_KEY aes;
  uint8_t chacha[32];
};

// Keyed AEAD state behind ngtcp2_crypto_aead_ctx::native_handle: AES-GCM runs through our
// AesGcm (VAES code where the CPU has it), ChaCha20-Poly1305 through BoringSSL.
struct AeadKey {
  crypto::AesGcm gcm;
  EVP_AEAD_CTX *chacha = nullptr;
  AeadKey() = default;
  AeadKey(const AeadKey &) = delete;
  AeadKey &operator=(const AeadKey &) = delete;
  ~AeadKey() {
    if (chacha != nullptr) EVP_AEAD_CTX_free(chacha);
  }
};

void *handle(const void *p) { return const_cast<void *>(p); }

void set_aead(ngtcp2_crypto_aead &aead, const EVP_AEAD *native) {
  aead.native_handle = handle(native);
  aead.max_overhead = EVP_AEAD_max_overhead(native);
}

// QUIC v1 initial salt (RFC 9001 §5.2).
constexpr uint8_t kInitialSaltV1[] = {0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17,
                                      0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc, 0xbb, 0x7f, 0x0a};

std::span<const uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t *>(s.data()), s.size()};
}

}  // namespace

void initial_crypto_ctx(ngtcp2_crypto_ctx &ctx) {
  set_aead(ctx.aead, EVP_aead_aes_128_gcm());
  ctx.md.native_handle = handle(EVP_sha256());
  ctx.hp.native_handle = handle(&kHpAes128);
  ctx.max_encryption = kMaxEncryptionAesGcm;
  ctx.max_decryption_failure = kMaxDecryptionFailureAesGcm;
}

void retry_aead(ngtcp2_crypto_aead &aead) { set_aead(aead, EVP_aead_aes_128_gcm()); }

bool crypto_ctx_for_cipher(ngtcp2_crypto_ctx &ctx, uint32_t tls_cipher_id) {
  switch (tls_cipher_id) {
    case TLS1_CK_AES_128_GCM_SHA256:
      set_aead(ctx.aead, EVP_aead_aes_128_gcm());
      ctx.md.native_handle = handle(EVP_sha256());
      ctx.hp.native_handle = handle(&kHpAes128);
      ctx.max_encryption = kMaxEncryptionAesGcm;
      ctx.max_decryption_failure = kMaxDecryptionFailureAesGcm;
      return true;
    case TLS1_CK_AES_256_GCM_SHA384:
      set_aead(ctx.aead, EVP_aead_aes_256_gcm());
      ctx.md.native_handle = handle(EVP_sha384());
      ctx.hp.native_handle = handle(&kHpAes256);
      ctx.max_encryption = kMaxEncryptionAesGcm;
      ctx.max_decryption_failure = kMaxDecryptionFailureAesGcm;
      return true;
    case TLS1_CK_CHACHA20_POLY1305_SHA256:
      set_aead(ctx.aead, EVP_aead_chacha20_poly1305());
      ctx.md.native_handle = handle(EVP_sha256());
      ctx.hp.native_handle = handle(&kHpChaCha20);
      ctx.max_encryption = kMaxEncryptionChaCha20;
      ctx.max_decryption_failure = kMaxDecryptionFailureChaCha20;
      return true;
    default:
      // ngtcp2 0.12.1's own helper would carry a NULL AEAD on from here; refuse instead.
      return false;
  }
}

bool crypto_ctx_for_ssl(ngtcp2_crypto_ctx &ctx, const SSL *ssl) {
  const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
  return cipher != nullptr && crypto_ctx_for_cipher(ctx, SSL_CIPHER_get_id(cipher));
}

size_t aead_key_length(const ngtcp2_crypto_aead &aead) {
  return EVP_AEAD_key_length(static_cast<const EVP_AEAD *>(aead.native_handle));
}

size_t aead_tag_length(const ngtcp2_crypto_aead &aead) {
  return EVP_AEAD_max_overhead(static_cast<const EVP_AEAD *>(aead.native_handle));
}

size_t md_length(const ngtcp2_crypto_md &md) {
  return EVP_MD_size(static_cast<const EVP_MD *>(md.native_handle));
}

bool hkdf_extract(std::span<uint8_t> prk, const ngtcp2_crypto_md &md, std::span<const uint8_t> ikm,
                  std::span<const uint8_t> salt) {
  const auto *evp = static_cast<const EVP_MD *>(md.native_handle);
  size_t len = EVP_MD_size(evp);
  if (prk.size() < len) return false;
  return HKDF_extract(prk.data(), &len, evp, ikm.data(), ikm.size(), salt.data(), salt.size()) == 1;
}

bool hkdf_expand_label(std::span<uint8_t> out, const ngtcp2_crypto_md &md, std::span<const uint8_t> secret,
                       std::string_view label, std::span<const uint8_t> context) {
  return crypto::tls13_expand_label(out, static_cast<const EVP_MD *>(md.native_handle), secret, label, context);
}

bool derive_initial_secrets(InitialSecrets &out, std::span<const uint8_t> client_dcid) {
  ngtcp2_crypto_ctx ctx;
  initial_crypto_ctx(ctx);
  return hkdf_extract(out.initial, ctx.md, client_dcid, kInitialSaltV1) &&
         hkdf_expand_label(out.client, ctx.md, out.initial, "client in") &&
         hkdf_expand_label(out.server, ctx.md, out.initial, "server in");
}

bool derive_packet_protection_keys(PacketProtectionKeys &out, const ngtcp2_crypto_aead &aead,
                                   const ngtcp2_crypto_md &md, std::span<const uint8_t> secret, bool derive_hp) {
  const size_t key_len = aead_key_length(aead);
  const auto *evp = static_cast<const EVP_AEAD *>(aead.native_handle);
  if (key_len == 0 || key_len > kMaxKeyLen || EVP_AEAD_nonce_length(evp) != kPacketIvLen) return false;
  out.key_len = key_len;
  return hkdf_expand_label({out.key.data(), key_len}, md, secret, "quic key") &&
         hkdf_expand_label(out.iv, md, secret, "quic iv") &&
         (!derive_hp || hkdf_expand_label({out.hp.data(), key_len}, md, secret, "quic hp"));
}

bool update_traffic_secret(std::span<uint8_t> next, const ngtcp2_crypto_md &md, std::span<const uint8_t> secret) {
  return hkdf_expand_label(next, md, secret, "quic ku");
}

bool generate_stateless_reset_token(std::span<uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN> token,
                                    std::span<const uint8_t> secret, const ngtcp2_cid &cid) {
  static constexpr std::string_view kInfo = "stateless_reset";
  const auto info = bytes(kInfo);
  const size_t cid_len = cid.datalen <= NGTCP2_MAX_CIDLEN ? cid.datalen : NGTCP2_MAX_CIDLEN;
  return HKDF(token.data(), token.size(), EVP_sha256(), secret.data(), secret.size(), cid.data, cid_len,
              info.data(), info.size()) == 1;
}

bool aead_ctx_init(ngtcp2_crypto_aead_ctx &ctx, const ngtcp2_crypto_aead &aead, std::span<const uint8_t> key) {
  const auto *evp = static_cast<const EVP_AEAD *>(aead.native_handle);
  ctx.native_handle = nullptr;
  if (evp == nullptr || key.size() != EVP_AEAD_key_length(evp)) return false;
  // One context seals and opens, so rx and tx contexts are built the same way.
  auto state = std::make_unique<AeadKey>();
  if (evp == EVP_aead_aes_128_gcm() || evp == EVP_aead_aes_256_gcm()) {
    if (!state->gcm.init(key)) return false;
  } else {
    state->chacha = EVP_AEAD_CTX_new(evp, key.data(), key.size(), EVP_AEAD_DEFAULT_TAG_LENGTH);
    if (state->chacha == nullptr) return false;
  }
  ctx.native_handle = state.release();
  return true;
}

void aead_ctx_free(ngtcp2_crypto_aead_ctx &ctx) {
  delete static_cast<AeadKey *>(ctx.native_handle);
  ctx.native_handle = nullptr;
}

bool hp_ctx_init(ngtcp2_crypto_cipher_ctx &ctx, const ngtcp2_crypto_cipher &hp, std::span<const uint8_t> key) {
  ctx.native_handle = nullptr;
  const auto *cipher = static_cast<const HpCipher *>(hp.native_handle);
  if (cipher == nullptr) return false;
  auto state = std::make_unique<HpKey>();
  state->kind = cipher->kind;
  switch (cipher->kind) {
    case HpKind::aes128:
    case HpKind::aes256: {
      const unsigned bits = cipher->kind == HpKind::aes128 ? 128 : 256;
      if (key.size() * 8 != bits || AES_set_encrypt_key(key.data(), bits, &state->aes) != 0) return false;
      break;
    }
    case HpKind::chacha20:
      if (key.size() != sizeof(state->chacha)) return false;
      std::memcpy(state->chacha, key.data(), key.size());
      break;
  }
  ctx.native_handle = state.release();
  return true;
}

void hp_ctx_free(ngtcp2_crypto_cipher_ctx &ctx) {
  std::unique_ptr<HpKey> state(static_cast<HpKey *>(ctx.native_handle));
  if (state) OPENSSL_cleanse(state.get(), sizeof(HpKey));
  ctx.native_handle = nullptr;
}

int encrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead, const ngtcp2_crypto_aead_ctx *aead_ctx,
               const uint8_t *plaintext, size_t plaintextlen, const uint8_t *nonce, size_t noncelen,
               const uint8_t *aad, size_t aadlen) {
  const auto *key = static_cast<const AeadKey *>(aead_ctx->native_handle);
  if (key == nullptr || noncelen != kPacketIvLen) return NGTCP2_ERR_CALLBACK_FAILURE;
  if (key->chacha == nullptr) {
    key->gcm.seal(nonce, {aad, aadlen}, {plaintext, plaintextlen}, dest);
    return 0;
  }
  size_t outlen = 0;
  const size_t max_out = plaintextlen + aead->max_overhead;
  if (EVP_AEAD_CTX_seal(key->chacha, dest, &outlen, max_out, nonce, noncelen, plaintext, plaintextlen, aad,
                        aadlen) != 1) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int decrypt_cb(uint8_t *dest, const ngtcp2_crypto_aead *aead, const ngtcp2_crypto_aead_ctx *aead_ctx,
               const uint8_t *ciphertext, size_t ciphertextlen, const uint8_t *nonce, size_t noncelen,
               const uint8_t *aad, size_t aadlen) {
  const auto *key = static_cast<const AeadKey *>(aead_ctx->native_handle);
  // Anything that fails to authenticate is a bad packet, not a broken connection:
  // ngtcp2 treats NGTCP2_ERR_DECRYPT as "drop it", everything else as fatal.
  if (key == nullptr || noncelen != kPacketIvLen || ciphertextlen < aead->max_overhead) return NGTCP2_ERR_DECRYPT;
  const size_t max_out = ciphertextlen - aead->max_overhead;
  if (key->chacha == nullptr)
    return key->gcm.open(nonce, {aad, aadlen}, {ciphertext, max_out}, dest, ciphertext + max_out) ? 0
                                                                                                : NGTCP2_ERR_DECRYPT;
  size_t outlen = 0;
  if (EVP_AEAD_CTX_open(key->chacha, dest, &outlen, max_out, nonce, noncelen, ciphertext, ciphertextlen, aad,
                        aadlen) != 1) {
    return NGTCP2_ERR_DECRYPT;
  }
  return 0;
}

int hp_mask_cb(uint8_t *dest, const ngtcp2_crypto_cipher *, const ngtcp2_crypto_cipher_ctx *hp_ctx,
               const uint8_t *sample) {
  const auto *state = static_cast<const HpKey *>(hp_ctx->native_handle);
  if (state == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
  switch (state->kind) {
    case HpKind::aes128:
    case HpKind::aes256:
      AES_ecb_encrypt(sample, dest, &state->aes, AES_ENCRYPT);
      return 0;
    case HpKind::chacha20: {
      // RFC 9001 §5.4.4: counter = sample[0..3] little-endian, nonce = sample[4..15].
      static constexpr uint8_t kZeros[NGTCP2_HP_MASKLEN] = {};
      const uint32_t counter = uint32_t{sample[0]} | uint32_t{sample[1]} << 8 | uint32_t{sample[2]} << 16 |
                               uint32_t{sample[3]} << 24;
      CRYPTO_chacha_20(dest, kZeros, sizeof(kZeros), state->chacha, sample + 4, counter);
      return 0;
    }
  }
  return NGTCP2_ERR_CALLBACK_FAILURE;
}

void delete_crypto_aead_ctx_cb(ngtcp2_conn *, ngtcp2_crypto_aead_ctx *aead_ctx, void *) { aead_ctx_free(*aead_ctx); }

void delete_crypto_cipher_ctx_cb(ngtcp2_conn *, ngtcp2_crypto_cipher_ctx *cipher_ctx, void *) {
  hp_ctx_free(*cipher_ctx);
}

int get_path_challenge_data_cb(ngtcp2_conn *, uint8_t *data, void *) {
  return RAND_bytes(data, NGTCP2_PATH_CHALLENGE_DATALEN) == 1 ? 0 : NGTCP2_ERR_CALLBACK_FAILURE;
}

void rand_cb(uint8_t *dest, size_t destlen, const ngtcp2_rand_ctx *) { RAND_bytes(dest, destlen); }

std::optional<ngtcp2_crypto_level> to_ngtcp2_level(ssl_encryption_level_t level) {
  switch (level) {
    case ssl_encryption_initial:
      return NGTCP2_CRYPTO_LEVEL_INITIAL;
    case ssl_encryption_early_data:
      return NGTCP2_CRYPTO_LEVEL_EARLY;
    case ssl_encryption_handshake:
      return NGTCP2_CRYPTO_LEVEL_HANDSHAKE;
    case ssl_encryption_application:
      return NGTCP2_CRYPTO_LEVEL_APPLICATION;
  }
  return std::nullopt;
}

std::optional<ssl_encryption_level_t> to_ssl_level(ngtcp2_crypto_level level) {
  switch (level) {
    case NGTCP2_CRYPTO_LEVEL_INITIAL:
      return ssl_encryption_initial;
    case NGTCP2_CRYPTO_LEVEL_HANDSHAKE:
      return ssl_encryption_handshake;
    case NGTCP2_CRYPTO_LEVEL_APPLICATION:
      return ssl_encryption_application;
    case NGTCP2_CRYPTO_LEVEL_EARLY:
      return ssl_encryption_early_data;
  }
  return std::nullopt;
}

}  // namespace alk::quic
