#include "crypto/aes_gcm.hpp"

#include <cpuid.h>
#include <immintrin.h>
#include <openssl/crypto.h>

#include <cstring>

// Everything that touches 256-bit registers is compiled for these extensions and only called
// after vaes_available() said yes.
#define ALK_VAES __attribute__((target("aes,pclmul,ssse3,sse4.1,avx,avx2,vaes,vpclmulqdq")))

namespace alk::crypto {

namespace {

// GHASH works on bit-reflected blocks: reversing a block's 16 bytes puts its first bit at the
// top of the register, where the carry-less multiply wants the polynomial's x^0.
ALK_VAES inline __m128i reverse(__m128i x) {
  return _mm_shuffle_epi8(x, _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}
ALK_VAES inline __m256i reverse(__m256i x) {  // each 128-bit lane on its own
  return _mm256_shuffle_epi8(x, _mm256_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4,
                                                5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
}

// A 256-bit carry-less product in three parts (low, middle = the two cross terms, high), so
// that the products of many blocks can be summed and reduced once.
struct Product {
  __m128i lo, mid, hi;
};

ALK_VAES inline Product multiply(__m128i a, __m128i b) {
  return {_mm_clmulepi64_si128(a, b, 0x00),
          _mm_xor_si128(_mm_clmulepi64_si128(a, b, 0x10), _mm_clmulepi64_si128(a, b, 0x01)),
          _mm_clmulepi64_si128(a, b, 0x11)};
}

// The product modulo x^128 + x^7 + x^2 + x + 1, in the reflected representation.
ALK_VAES inline __m128i reduce(const Product& p) {
  __m128i lo = _mm_xor_si128(p.lo, _mm_slli_si128(p.mid, 8));
  __m128i hi = _mm_xor_si128(p.hi, _mm_srli_si128(p.mid, 8));
  // A product of two reflected values comes out one bit short: shift all 256 bits left by one.
  const __m128i lo_carry = _mm_srli_epi32(lo, 31), hi_carry = _mm_srli_epi32(hi, 31);
  lo = _mm_or_si128(_mm_slli_epi32(lo, 1), _mm_slli_si128(lo_carry, 4));
  hi = _mm_or_si128(_mm_or_si128(_mm_slli_epi32(hi, 1), _mm_slli_si128(hi_carry, 4)), _mm_srli_si128(lo_carry, 12));
  // Fold the low half into the high one: multiply by x^7 + x^2 + x + 1 as shifts, in two steps.
  const __m128i a =
      _mm_xor_si128(_mm_xor_si128(_mm_slli_epi32(lo, 31), _mm_slli_epi32(lo, 30)), _mm_slli_epi32(lo, 25));
  lo = _mm_xor_si128(lo, _mm_slli_si128(a, 12));
  __m128i b = _mm_xor_si128(_mm_xor_si128(_mm_srli_epi32(lo, 1), _mm_srli_epi32(lo, 2)), _mm_srli_epi32(lo, 7));
  b = _mm_xor_si128(b, _mm_srli_si128(a, 4));
  return _mm_xor_si128(hi, _mm_xor_si128(lo, b));
}

ALK_VAES inline __m128i gf_mul(__m128i a, __m128i b) { return reduce(multiply(a, b)); }

// Two lanes' partial products folded into one.
ALK_VAES inline __m128i fold(__m256i x) {
  return _mm_xor_si128(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
}

struct Keys {
  const __m256i* rk;  // round keys, each in both lanes
  const __m256i* powers;  // [H^16, H^15] ... [H^2, H^1]
  __m128i h;  // H^1
};

template <int Rounds>
ALK_VAES inline __m128i encrypt_block(const Keys& k, __m128i x) {
  x = _mm_xor_si128(x, _mm256_castsi256_si128(k.rk[0]));
#pragma GCC unroll 14
  for (int r = 1; r < Rounds; ++r) x = _mm_aesenc_si128(x, _mm256_castsi256_si128(k.rk[r]));
  return _mm_aesenclast_si128(x, _mm256_castsi256_si128(k.rk[Rounds]));
}

// One step of 2*N blocks from in to out: N register pairs of counter blocks through AES, XORed
// into the data, and the ciphertext (the output when sealing, the input when opening) hashed
// into y with one reduction. ctr holds the next two counters, reversed (the 32-bit count in the low
// dword of each lane), so an add steps them.
template <bool Seal, int N, int Rounds>
ALK_VAES inline void step(const Keys& k, __m128i& y, __m256i& ctr, const uint8_t* in, uint8_t* out) {
  const __m256i two = _mm256_set_epi32(0, 0, 0, 2, 0, 0, 0, 2);
  __m256i x[N];
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    x[i] = _mm256_xor_si256(reverse(ctr), k.rk[0]);
    ctr = _mm256_add_epi32(ctr, two);
  }
#pragma GCC unroll 14
  for (int r = 1; r < Rounds; ++r)
#pragma GCC unroll 8
    for (int i = 0; i < N; ++i) x[i] = _mm256_aesenc_epi128(x[i], k.rk[r]);
  const auto* src = reinterpret_cast<const __m256i*>(in);
  auto* dst = reinterpret_cast<__m256i*>(out);
  const __m256i* pw = k.powers + (8 - N);
  __m256i lo = _mm256_setzero_si256(), mid = lo, hi = lo;
  // The first pair is hashed last: only it waits for the previous step's y.
#pragma GCC unroll 8
  for (int j = 1; j <= N; ++j) {
    const int i = j % N;
    const __m256i plain_or_cipher = _mm256_loadu_si256(src + i);
    const __m256i result = _mm256_xor_si256(plain_or_cipher, _mm256_aesenclast_epi128(x[i], k.rk[Rounds]));
    _mm256_storeu_si256(dst + i, result);
    __m256i c = reverse(Seal ? result : plain_or_cipher);
    if (i == 0) c = _mm256_xor_si256(c, _mm256_zextsi128_si256(y));
    lo = _mm256_xor_si256(lo, _mm256_clmulepi64_epi128(c, pw[i], 0x00));
    mid = _mm256_xor_si256(mid, _mm256_xor_si256(_mm256_clmulepi64_epi128(c, pw[i], 0x10),
                                                 _mm256_clmulepi64_epi128(c, pw[i], 0x01)));
    hi = _mm256_xor_si256(hi, _mm256_clmulepi64_epi128(c, pw[i], 0x11));
  }
  y = reduce({fold(lo), fold(mid), fold(hi)});
}

// Hashes n bytes (a last partial block zero-padded) into y one block at a time.
ALK_VAES inline void hash_bytes(const Keys& k, __m128i& y, const uint8_t* p, size_t n) {
  for (; n > 0; p += 16, n -= n < 16 ? n : 16) {
    alignas(16) uint8_t block[16] = {};
    std::memcpy(block, p, n < 16 ? n : 16);
    y = gf_mul(_mm_xor_si128(y, reverse(_mm_load_si128(reinterpret_cast<const __m128i*>(block)))), k.h);
  }
}

// CTR from in, then extra (sealing only), to out (the same buffer or apart) from the counter
// block after j0, hashing the ciphertext; returns the tag.
template <bool Seal, int Rounds>
ALK_VAES __m128i crypt(const Keys& k, const uint8_t* nonce, std::span<const uint8_t> aad, const uint8_t* in,
                       uint8_t* out, size_t len, std::span<const uint8_t> extra) {
  alignas(16) uint8_t j0_bytes[16] = {};
  std::memcpy(j0_bytes, nonce, AesGcm::kNonceLen);
  j0_bytes[15] = 1;
  const __m128i j0 = _mm_load_si128(reinterpret_cast<const __m128i*>(j0_bytes));
  __m128i y = _mm_setzero_si128();
  hash_bytes(k, y, aad.data(), aad.size());

  const __m128i first = _mm_add_epi32(reverse(j0), _mm_set_epi32(0, 0, 0, 1));
  __m256i ctr = _mm256_add_epi32(_mm256_broadcastsi128_si256(first), _mm256_set_epi32(0, 0, 0, 1, 0, 0, 0, 0));
  const size_t total = len + extra.size();
  for (; len >= 256; in += 256, out += 256, len -= 256) step<Seal, 8, Rounds>(k, y, ctr, in, out);
  for (; len >= 32; in += 32, out += 32, len -= 32) step<Seal, 1, Rounds>(k, y, ctr, in, out);
  // The last 0-31 bytes and extra, gathered into one buffer.
  alignas(16) uint8_t rest[32 + AesGcm::kMaxExtra];
  if (len) std::memcpy(rest, in, len);  // in may be null when there is no input at all
  if (!extra.empty()) std::memcpy(rest + len, extra.data(), extra.size());
  in = rest;
  len += extra.size();
  __m128i c = _mm256_castsi256_si128(ctr);
  for (size_t n; len > 0; in += n, out += n, len -= n) {
    n = len < 16 ? len : 16;
    alignas(16) uint8_t block[16] = {};
    std::memcpy(block, in, n);
    const __m128i given = _mm_load_si128(reinterpret_cast<const __m128i*>(block));
    _mm_store_si128(reinterpret_cast<__m128i*>(block), _mm_xor_si128(given, encrypt_block<Rounds>(k, reverse(c))));
    std::memcpy(out, block, n);
    c = _mm_add_epi32(c, _mm_set_epi32(0, 0, 0, 1));
    hash_bytes(k, y, Seal ? out : in, n);  // the ciphertext
  }
  const __m128i lengths = _mm_set_epi64x(static_cast<long long>(aad.size() * 8), static_cast<long long>(total * 8));
  y = gf_mul(_mm_xor_si128(y, lengths), k.h);
  return _mm_xor_si128(reverse(y), encrypt_block<Rounds>(k, j0));
}

template <int Rcon>
ALK_VAES inline __m128i next_key(__m128i prev, __m128i from, int lane) {
  __m128i t = _mm_aeskeygenassist_si128(from, Rcon);
  t = lane == 3 ? _mm_shuffle_epi32(t, 0xff) : _mm_shuffle_epi32(t, 0xaa);
  prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
  prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 8));
  return _mm_xor_si128(prev, t);
}

// FIPS 197 §5.2 key expansion; returns the number of rounds.
ALK_VAES int expand_key(std::span<const uint8_t> key, __m128i (&rk)[15]) {
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

ALK_VAES void init_vaes(std::span<const uint8_t> key, uint8_t (&round_keys)[15][32], uint8_t (&powers)[8][32],
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

template <bool Seal>
ALK_VAES __m128i run(const uint8_t (&round_keys)[15][32], const uint8_t (&powers)[8][32], int rounds,
                     const uint8_t* nonce, std::span<const uint8_t> aad, std::span<const uint8_t> in, uint8_t* out,
                     std::span<const uint8_t> extra) {
  const auto* pairs = reinterpret_cast<const __m256i*>(powers);
  const Keys k{reinterpret_cast<const __m256i*>(round_keys), pairs, _mm256_extracti128_si256(pairs[7], 1)};
  return rounds == 10 ? crypt<Seal, 10>(k, nonce, aad, in.data(), out, in.size(), extra)
                      : crypt<Seal, 14>(k, nonce, aad, in.data(), out, in.size(), extra);
}

}  // namespace

bool AesGcm::vaes_available() {
  static const bool available = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const bool aes = c & bit_AES, pclmul = c & bit_PCLMUL, avx = c & bit_AVX, osxsave = c & bit_OSXSAVE;
    if (!aes || !pclmul || !avx || !osxsave) return false;
    // The kernel saves the 256-bit registers (XCR0: SSE and AVX state).
    unsigned xcr0_lo, xcr0_hi;
    __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    if ((xcr0_lo & 6) != 6) return false;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (b & bit_AVX2) && (c & bit_VAES) && (c & bit_VPCLMULQDQ);
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
  if (key.size() != 16 && key.size() != 32) return false;
  if (impl == Impl::Auto && vaes_available()) {
    init_vaes(key, round_keys_, powers_, rounds_);
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
    const __m128i tag_of_data = run<true>(round_keys_, powers_, rounds_, nonce, aad, in, out, extra);
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
    const __m128i tag_of_data = run<false>(round_keys_, powers_, rounds_, nonce, aad, in, out, {});
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
