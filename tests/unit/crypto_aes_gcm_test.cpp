// AesGcm, the SSH packets' AES-GCM: our VAES code and the BoringSSL fallback against
// BoringSSL's EVP_AEAD on published vectors and on random keys, nonces and lengths.
#include <openssl/aead.h>

#include <catch2/catch.hpp>
#include <random>
#include <string>
#include <vector>

#include "crypto/aes_gcm.hpp"

using alk::crypto::AesGcm;

namespace {

std::vector<uint8_t> hex(std::string_view s) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < s.size(); i += 2)
    out.push_back(uint8_t(std::stoi(std::string(s.substr(i, 2)), nullptr, 16)));
  return out;
}

// BoringSSL's seal: ciphertext followed by the tag.
std::vector<uint8_t> reference_seal(std::span<const uint8_t> key, const uint8_t* nonce, std::span<const uint8_t> aad,
                                    std::span<const uint8_t> plain) {
  EVP_AEAD_CTX ctx;
  REQUIRE(EVP_AEAD_CTX_init(&ctx, key.size() == 16 ? EVP_aead_aes_128_gcm() : EVP_aead_aes_256_gcm(), key.data(),
                            key.size(), 16, nullptr) == 1);
  std::vector<uint8_t> out(plain.size() + 16);
  size_t out_len = 0;
  REQUIRE(EVP_AEAD_CTX_seal(&ctx, out.data(), &out_len, out.size(), nonce, 12, plain.data(), plain.size(), aad.data(),
                            aad.size()) == 1);
  EVP_AEAD_CTX_cleanup(&ctx);
  return out;
}

// Ours, in place: ciphertext followed by the tag.
std::vector<uint8_t> our_seal(const AesGcm& g, const uint8_t* nonce, std::span<const uint8_t> aad,
                              std::span<const uint8_t> plain) {
  std::vector<uint8_t> out(plain.begin(), plain.end());
  out.resize(plain.size() + 16);
  g.seal(nonce, aad, {out.data(), plain.size()}, out.data());
  return out;
}

std::vector<AesGcm::Impl> impls() {
  std::vector<AesGcm::Impl> v{AesGcm::Impl::Portable};
  if (AesGcm::vaes_available()) v.push_back(AesGcm::Impl::Auto);
  if (AesGcm::wide_available()) v.push_back(AesGcm::Impl::Narrow);  // Auto runs the 512-bit code there
  return v;
}

}  // namespace

TEST_CASE("AesGcm uses VAES where the CPU has it and BoringSSL where asked") {
  const std::vector<uint8_t> key(16, 7);
  AesGcm auto_impl, portable;
  REQUIRE(auto_impl.init(key));
  REQUIRE(portable.init(key, AesGcm::Impl::Portable));
  CHECK(auto_impl.vaes() == AesGcm::vaes_available());
  CHECK(auto_impl.wide() == AesGcm::wide_available());
  CHECK_FALSE(portable.vaes());
  CHECK_FALSE(portable.wide());
  AesGcm narrow;
  REQUIRE(narrow.init(key, AesGcm::Impl::Narrow));
  CHECK(narrow.vaes() == AesGcm::vaes_available());
  CHECK_FALSE(narrow.wide());
  AesGcm bad;
  CHECK_FALSE(bad.init(std::vector<uint8_t>(24, 1)));  // AES-192 is no SSH cipher
  CHECK_FALSE(bad.init({}));
}

TEST_CASE("AesGcm matches the GCM specification's test vectors") {
  // McGrew and Viega, "The Galois/Counter Mode of Operation", test cases 2, 4 and 16.
  struct Vector {
    const char *key, *iv, *plain, *aad, *cipher, *tag;
  } vectors[] = {
      {"00000000000000000000000000000000", "000000000000000000000000", "00000000000000000000000000000000", "",
       "0388dace60b6a392f328c2b971b2fe78", "ab6e47d42cec13bdf53a67b21257bddf"},
      {"feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
       "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a31"
       "8a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
       "feedfacedeadbeeffeedfacedeadbeefabaddad2",
       "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329ac"
       "a12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091",
       "5bc94fbc3221a5db94fae95ae7121a47"},
      {"feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", "cafebabefacedbaddecaf888",
       "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a31"
       "8a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
       "feedfacedeadbeeffeedfacedeadbeefabaddad2",
       "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555"
       "d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
       "76fc6ece0f4e1768cddf8853bb2d551b"},
  };
  for (auto impl : impls()) {
    for (const auto& v : vectors) {
      INFO("impl " << int(impl) << ", key " << v.key);
      AesGcm g;
      REQUIRE(g.init(hex(v.key), impl));
      const auto iv = hex(v.iv), aad = hex(v.aad), plain = hex(v.plain);
      auto expected = hex(v.cipher);
      const auto tag = hex(v.tag);
      expected.insert(expected.end(), tag.begin(), tag.end());
      CHECK(our_seal(g, iv.data(), aad, plain) == expected);
    }
  }
}

TEST_CASE("AesGcm seals as BoringSSL does and opens only what is intact, at every length") {
  std::mt19937 rng(20261126);
  auto fill = [&](std::vector<uint8_t>& v) {
    for (auto& b : v) b = uint8_t(rng());
  };
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= 600; ++n) lengths.push_back(n);
  for (size_t n : {4095, 4096, 32768 + 4, 32768 + 16 + 12, 65535, 100003, 256 * 1024}) lengths.push_back(n);
  for (auto impl : impls()) {
    for (size_t key_len : {16, 32}) {
      for (size_t len : lengths) {
        std::vector<uint8_t> key(key_len), nonce(12), aad(len % 41), plain(len);
        fill(key), fill(nonce), fill(aad), fill(plain);
        INFO("impl " << int(impl) << ", key " << key_len << ", length " << len << ", aad "
                     << aad.size());
        AesGcm g;
        REQUIRE(g.init(key, impl));
        auto sealed = our_seal(g, nonce.data(), aad, plain);
        REQUIRE(sealed == reference_seal(key, nonce.data(), aad, plain));
        std::vector<uint8_t> apart(len + 16);  // from one buffer into another
        g.seal(nonce.data(), aad, plain, apart.data());
        REQUIRE(apart == sealed);
        // The last bytes as extra: the same record (TLS 1.3 seals its content type so).
        const size_t split = len - std::min<size_t>(len, len % (AesGcm::kMaxExtra + 1));
        std::vector<uint8_t> with_extra(len + 16);
        g.seal(nonce.data(), aad, {plain.data(), split}, with_extra.data(), {plain.data() + split, len - split});
        REQUIRE(with_extra == sealed);

        auto opened = sealed;
        REQUIRE(g.open(nonce.data(), aad, {opened.data(), len}, opened.data(), opened.data() + len));
        REQUIRE(std::equal(plain.begin(), plain.end(), opened.begin()));
        std::vector<uint8_t> opened_apart(len);
        REQUIRE(g.open(nonce.data(), aad, {sealed.data(), len}, opened_apart.data(), sealed.data() + len));
        REQUIRE(opened_apart == plain);

        // One flipped bit anywhere (ciphertext, tag, additional data) fails, and leaves zeros.
        auto tampered = sealed;
        auto tampered_aad = aad;
        const size_t where = rng() % (len + 16 + aad.size());
        if (where < len + 16)
          tampered[where] ^= uint8_t(1u << (rng() % 8));
        else
          tampered_aad[where - len - 16] ^= uint8_t(1u << (rng() % 8));
        REQUIRE_FALSE(
            g.open(nonce.data(), tampered_aad, {tampered.data(), len}, tampered.data(), tampered.data() + len));
        REQUIRE(std::all_of(tampered.begin(), tampered.begin() + long(len), [](uint8_t b) { return b == 0; }));
      }
    }
  }
}
