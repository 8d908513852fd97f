// AES-GCM (NIST SP 800-38D, 96-bit nonces, 16-byte tags) for the SSH packet ciphers
// (aes128-gcm@openssh.com, aes256-gcm@openssh.com) and QUIC packet protection.
//
// On CPUs with VAES and VPCLMULQDQ (AES rounds and carry-less multiplies on two blocks per
// 256-bit register) it runs our own 16-blocks-per-step code, against 4.1-4.2 GB/s for the
// BoringSSL build Debian 12 ships, which predates BoringSSL's VAES code; where AVX-512 is
// there too, the same steps run four blocks per 512-bit register (bench machine, AMD EPYC,
// 256 KiB: seal 8.3 -> 11.0 GB/s, open 8.2 -> 10.8 GB/s per core). Elsewhere it is BoringSSL's
// EVP_AEAD. All produce the same bytes (the unit test and the fuzz target compare each with
// BoringSSL's on random input).
// Constant time either way: no secret-dependent branch or table index, the tag compared whole.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include <openssl/aead.h>

namespace alk::crypto {

class AesGcm {
 public:
  static constexpr size_t kNonceLen = 12, kTagLen = 16;
  // Portable: BoringSSL even where VAES is there; Narrow: the 256-bit VAES code even where
  // AVX-512 is there (both for tests).
  enum class Impl { Auto, Portable, Narrow };

  AesGcm() = default;
  ~AesGcm();
  AesGcm(const AesGcm&) = delete;
  AesGcm& operator=(const AesGcm&) = delete;

  // A 16- or 32-byte key (AES-128 / AES-256). False for any other size.
  bool init(std::span<const uint8_t> key, Impl impl = Impl::Auto);
  bool vaes() const { return rounds_ != 0; }  // running our own code
  bool wide() const { return wide_; }         // ... on 512-bit registers
  static bool vaes_available();
  static bool wide_available();

  // Encrypts in and then extra (at most kMaxExtra bytes: TLS 1.3's content type after a
  // record's content) into out, which is in's own bytes or a buffer apart from them, and
  // writes the tag right after the ciphertext. aad is authenticated, not encrypted.
  static constexpr size_t kMaxExtra = 16;
  void seal(const uint8_t* nonce, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out,
            std::span<const uint8_t> extra = {}) const;
  // Checks the tag and decrypts in into out (as for seal); on a mismatch returns false and
  // leaves out zeroed.
  bool open(const uint8_t* nonce, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out,
            const uint8_t* tag) const;

 private:
  // The VAES path: each round key twice over (one per 128-bit lane), and the hash key's powers
  // H^16..H^1 in lane pairs, bit-reflected as the carry-less multiply wants them.
  alignas(32) uint8_t round_keys_[15][32] = {};
  alignas(32) uint8_t powers_[8][32] = {};
  int rounds_ = 0;  // 10 or 14 on the VAES path; 0 when BoringSSL runs
  bool wide_ = false;
  EVP_AEAD_CTX aead_{};
  bool aead_ready_ = false;
};

}  // namespace alk::crypto
