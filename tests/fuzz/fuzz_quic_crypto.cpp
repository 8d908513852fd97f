// Fuzzes the QUIC crypto glue with attacker-shaped bytes: ciphertexts and header
// protection samples under fixed keys, ALPN lists, key-schedule inputs, and the
// packet prefix ngtcp2 parses before any key exists. Logic violations trap, so
// libFuzzer reports them like crashes.
#include <cstdint>
#include <cstring>
#include <vector>

#include <ngtcp2/ngtcp2.h>

#include "transport/quic/crypto.hpp"

namespace q = alk::quic;

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

constexpr uint32_t kCiphers[] = {TLS1_CK_AES_128_GCM_SHA256, TLS1_CK_AES_256_GCM_SHA384,
                                 TLS1_CK_CHACHA20_POLY1305_SHA256};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t selector = size > 0 ? data[0] : 0;
  const uint8_t *body = size > 0 ? data + 1 : data;
  const size_t len = size > 0 ? size - 1 : 0;

  ngtcp2_crypto_ctx ctx{};
  check(q::crypto_ctx_for_cipher(ctx, kCiphers[selector % 3]));
  uint8_t key[32];
  for (size_t i = 0; i < sizeof(key); ++i) key[i] = static_cast<uint8_t>(0x5a ^ i);
  const size_t key_len = q::aead_key_length(ctx.aead);
  q::AeadCtx aead;
  q::HpCtx hp;
  check(aead.init(ctx.aead, {key, key_len}));
  check(hp.init(ctx.hp, {key, key_len}));
  const uint8_t nonce[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

  // Bytes as a received packet: the first few are the header (AAD), the rest ciphertext.
  const size_t aad_len = len < 20 ? len / 2 : 20;
  std::vector<uint8_t> out(len + 16);
  const int rv = q::decrypt_cb(out.data(), &ctx.aead, aead.get(), body + aad_len, len - aad_len, nonce, 12,
                               len ? body : nullptr, aad_len);
  check(rv == 0 || rv == NGTCP2_ERR_DECRYPT);

  // Bytes as plaintext: seal, open, and a one-bit flip must fail to authenticate.
  std::vector<uint8_t> sealed(len + ctx.aead.max_overhead);
  check(q::encrypt_cb(sealed.data(), &ctx.aead, aead.get(), body, len, nonce, 12, nullptr, 0) == 0);
  check(q::decrypt_cb(out.data(), &ctx.aead, aead.get(), sealed.data(), sealed.size(), nonce, 12, nullptr, 0) == 0);
  check(len == 0 || std::memcmp(out.data(), body, len) == 0);
  sealed[selector % sealed.size()] ^= 0x01;
  check(q::decrypt_cb(out.data(), &ctx.aead, aead.get(), sealed.data(), sealed.size(), nonce, 12, nullptr, 0) ==
        NGTCP2_ERR_DECRYPT);

  // Bytes as header-protection samples (bounded number of windows).
  for (size_t off = 0; off + NGTCP2_HP_SAMPLELEN <= len && off < 64 * 16; off += 16) {
    uint8_t mask[16];
    check(q::hp_mask_cb(mask, &ctx.hp, hp.get(), body + off) == 0);
  }

  // Bytes as the client's DCID and as a traffic secret.
  q::InitialSecrets secrets;
  check(q::derive_initial_secrets(secrets, {body, len < NGTCP2_MAX_CIDLEN ? len : NGTCP2_MAX_CIDLEN}));
  q::PacketProtectionKeys keys;
  check(q::derive_packet_protection_keys(keys, ctx.aead, ctx.md, {body, len < 64 ? len : 64}));
  // Oversized labels are refused, never overflow.
  const std::string_view label(reinterpret_cast<const char *>(body), len < 300 ? len : 300);
  uint8_t okm[32];
  check(q::hkdf_expand_label(okm, ctx.md, secrets.initial, label) == (label.size() + 6 <= 255));

  // Bytes as a client's ALPN list.
  const uint8_t *alpn = nullptr;
  uint8_t alpn_len = 0;
  if (q::select_alpn_cb(nullptr, &alpn, &alpn_len, body, static_cast<unsigned>(len), nullptr) == SSL_TLSEXT_ERR_OK) {
    check(alpn >= body && alpn + alpn_len <= body + len && alpn_len == q::kAlpn.size());
  }

  // Bytes as a datagram before any key exists. ngtcp2 0.12.1 asserts on an empty
  // datagram here, so the receive path must drop zero-length reads before calling it.
  ngtcp2_version_cid vc;
  if (len > 0 && ngtcp2_pkt_decode_version_cid(&vc, body, len, selector % (NGTCP2_MAX_CIDLEN + 1)) == 0) {
    check(vc.dcidlen <= NGTCP2_MAX_CIDLEN || vc.version != NGTCP2_PROTO_VER_V1);
  }
  return 0;
}
