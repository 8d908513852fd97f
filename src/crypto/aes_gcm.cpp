#include "crypto/aes_gcm.hpp"

#include <cpuid.h>
// GCC 12's AVX-512 intrinsics start from an "undefined" vector that its own header then reads,
// and -W(maybe-)uninitialized says so at every use (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#include <openssl/crypto.h>

#include <cstring>

// Everything that touches 256- or 512-bit registers is compiled for these extensions and only
// called after vaes_available() / wide_available() said yes.
#define ALK_VAES_NARROW __attribute__((target("aes,pclmul,ssse3,sse4.1,avx,avx2,vaes,vpclmulqdq")))
#define ALK_VAES_WIDE \
  __attribute__((target("aes,pclmul,ssse3,sse4.1,avx,avx2,vaes,vpclmulqdq,avx512f,avx512vl,avx512bw")))

namespace alk::crypto {

namespace {

namespace narrow {
#define ALK_VAES ALK_VAES_NARROW
#define ALK_GCM_WIDE 0
#include "crypto/aes_gcm_vaes.inc"
#undef ALK_GCM_WIDE
#undef ALK_VAES

// The key schedule and the hash key's powers, the same for both builds.
template <int Rcon>
ALK_VAES_NARROW inline __m128i next_key(__m128i prev, __m128i from, int lane) {
  __m128i t = _mm_aeskeygenassist_si128(from, Rcon);
  t = lane == 3 ? _mm_shuffle_epi32(t, 0xff) : _mm_shuffle_epi32(t, 0xaa);
  prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
  prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 8));
  return _mm_xor_si128(prev, t);
}

// FIPS 197 §5.2 key expansion; returns the number of rounds.
ALK_VAES_NARROW int expand_key(std::span<const uint8_t> key, __m128i (&rk)[15]) {
  if (key.size() == 16) {
    rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key.data()));
    rk[1] = next_key<0x01>(rk[0], rk[0], 3);
    rk[2] = next_key<0x02>(rk[1], rk[1], 3);
    rk[3] = next_key<0x04>(rk[2], rk[2], 3);
    rk[4] = next_key<0x08>(rk[3], rk[3], 3);
    rk[5] = next_key<0x10>(rk[4], rk[4], 3);
    rk[6] = next_key<0x20>(rk[5], rk[5], 3);
    rk[7] = next_key<0x40>(rk[6], rk[6], 3);
    rk[8] = next_key<0x80>(rk[7], rk[7], 3);
    rk[9] = next_key<0x1b>(rk[8], rk[8], 3);
    rk[10] = next_key<0x36>(rk[9], rk[9], 3);
    return 10;
  }
  // AES-256: even round keys take RotWord+SubWord+Rcon of the one before, odd ones SubWord only.
  rk[0] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key.data()));
  rk[1] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(key.data() + 16));
  rk[2] = next_key<0x01>(rk[0], rk[1], 3);
  rk[3] = next_key<0x00>(rk[1], rk[2], 2);
  rk[4] = next_key<0x02>(rk[2], rk[3], 3);
  rk[5] = next_key<0x00>(rk[3], rk[4], 2);
  rk[6] = next_key<0x04>(rk[4], rk[5], 3);
  rk[7] = next_key<0x00>(rk[5], rk[6], 2);
  rk[8] = next_key<0x08>(rk[6], rk[7], 3);
  rk[9] = next_key<0x00>(rk[7], rk[8], 2);
  rk[10] = next_key<0x10>(rk[8], rk[9], 3);
  rk[11] = next_key<0x00>(rk[9], rk[10], 2);
  rk[12] = next_key<0x20>(rk[10], rk[11], 3);
  rk[13] = next_key<0x00>(rk[11], rk[12], 2);
  rk[14] = next_key<0x40>(rk[12], rk[13], 3);
  return 14;
}

ALK_VAES_NARROW void init_vaes(std::span<const uint8_t> key, uint8_t (&round_keys)[15][32], uint8_t (&powers)[8][32],
                        int& rounds) {
  __m128i rk[15];
  rounds = expand_key(key, rk);
  auto* out = reinterpret_cast<__m256i*>(round_keys);
  for (int i = 0; i <= rounds; ++i) out[i] = _mm256_broadcastsi128_si256(rk[i]);
  const Keys k{out, nullptr, {}};
  const __m128i zero = _mm_setzero_si128();
  const __m128i h = reverse(rounds == 10 ? encrypt_block<10>(k, zero) : encrypt_block<14>(k, zero));
  __m128i pw[17];
  pw[1] = h;
  for (int i = 2; i <= 16; ++i) pw[i] = gf_mul(pw[i - 1], h);
  auto* pairs = reinterpret_cast<__m256i*>(powers);
  for (int j = 0; j < 8; ++j) pairs[j] = _mm256_set_m128i(pw[15 - 2 * j], pw[16 - 2 * j]);
  OPENSSL_cleanse(rk, sizeof rk);
  OPENSSL_cleanse(pw, sizeof pw);
}

}  // namespace narrow

namespace wide {
#define ALK_VAES ALK_VAES_WIDE
#define ALK_GCM_WIDE 1
#include "crypto/aes_gcm_vaes.inc"
#undef ALK_GCM_WIDE
#undef ALK_VAES
}  // namespace wide

// Which register states the kernel saves (XCR0's low half); only after CPUID said OSXSAVE.
unsigned xcr0() {
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return lo;
}

}  // namespace

bool AesGcm::vaes_available() {
  static const bool available = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool aes = c & bit_AES, pclmul = c & bit_PCLMUL, avx = c & bit_AVX, osxsave = c & bit_OSXSAVE;
    if (!aes || !pclmul || !avx || !osxsave) return false;
    // The kernel saves the 256-bit registers (XCR0: SSE and AVX state).
    if ((xcr0() & 6) != 6) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & bit_AVX2) && (c & bit_VAES) && (c & bit_VPCLMULQDQ);
  }();
  return available;
}

bool AesGcm::wide_available() {
  static const bool available = [] {
    if (!vaes_available()) return false;
    // The kernel saves the opmask and all 512-bit registers (XCR0 bits 5-7) as well.
    if ((xcr0() & 0xe6) != 0xe6) return false;
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512VL);
  }();
  return available;
}

AesGcm::~AesGcm() {
  if (aead_ready_) EVP_AEAD_CTX_cleanup(&aead_);
  OPENSSL_cleanse(round_keys_, sizeof round_keys_);
  OPENSSL_cleanse(powers_, sizeof powers_);
}

bool AesGcm::init(std::span<const uint8_t> key, Impl impl) {
  if (aead_ready_) EVP_AEAD_CTX_cleanup(&aead_);
  aead_ready_ = false;
  rounds_ = 0;
  wide_ = false;
  if (key.size() != 16 && key.size() != 32) return false;
  if (impl != Impl::Portable && vaes_available()) {
    narrow::init_vaes(key, round_keys_, powers_, rounds_);
    wide_ = impl == Impl::Auto && wide_available();
    return true;
  }
  const EVP_AEAD* alg = key.size() == 16 ? EVP_aead_aes_128_gcm() : EVP_aead_aes_256_gcm();
  aead_ready_ = EVP_AEAD_CTX_init(&aead_, alg, key.data(), key.size(), kTagLen, nullptr) == 1;
  return aead_ready_;
}

void AesGcm::seal(const uint8_t* nonce, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out,
                  std::span<const uint8_t> extra) const {
  uint8_t* tag = out + in.size() + extra.size();
  if (vaes()) {
    const __m128i tag_of_data = wide_ ? wide::run<true>(round_keys_, powers_, rounds_, nonce, aad, in, out, extra)
                                      : narrow::run<true>(round_keys_, powers_, rounds_, nonce, aad, in, out, extra);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(tag), tag_of_data);
    return;
  }
  // BoringSSL writes extra's ciphertext where we ask for the tag, and the tag after it.
  size_t tag_len = 0;
  EVP_AEAD_CTX_seal_scatter(&aead_, out, out + in.size(), &tag_len, extra.size() + kTagLen, nonce, kNonceLen,
                            in.data(), in.size(), extra.data(), extra.size(), aad.data(), aad.size());
}

bool AesGcm::open(const uint8_t* nonce, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out,
                  const uint8_t* tag) const {
  bool ok;
  if (vaes()) {
    alignas(16) uint8_t computed[kTagLen];
    const __m128i tag_of_data = wide_ ? wide::run<false>(round_keys_, powers_, rounds_, nonce, aad, in, out, {})
                                      : narrow::run<false>(round_keys_, powers_, rounds_, nonce, aad, in, out, {});
    _mm_store_si128(reinterpret_cast<__m128i*>(computed), tag_of_data);
    ok = CRYPTO_memcmp(computed, tag, kTagLen) == 0;
  } else {
    ok = EVP_AEAD_CTX_open_gather(&aead_, out, nonce, kNonceLen, in.data(), in.size(), tag, kTagLen, aad.data(),
                                  aad.size()) == 1;
  }
  if (!ok && !in.empty()) std::memset(out, 0, in.size());
  return ok;
}

}  // namespace alk::crypto
