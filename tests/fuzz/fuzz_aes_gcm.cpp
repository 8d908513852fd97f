// Differential target for the SSH packets' AES-GCM: our VAES code (where the CPU has it) against
// BoringSSL on the same key, nonce, additional data and bytes. Both must seal to the same
// ciphertext and tag, agree on whether attacker bytes + tag authenticate (and on the plaintext
// when they do), open what they sealed, and reject it with one bit flipped.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "crypto/aes_gcm.hpp"

using alk::crypto::AesGcm;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // byte 0: key size and additional-data length; then 12 nonce bytes; the rest is the message.
  if (size < 13) return 0;
  const size_t key_len = (data[0] & 1) ? 32 : 16;
  const size_t aad_len = std::min<size_t>(data[0] >> 1, size - 13);
  const uint8_t* nonce = data + 1;
  const uint8_t* aad = data + 13;
  const uint8_t* msg = aad + aad_len;
  const size_t msg_len = size - 13 - aad_len;
  uint8_t key[32];
  for (size_t i = 0; i < sizeof key; ++i) key[i] = uint8_t(0xa5 ^ (i * 29) ^ data[0]);

  AesGcm ours, reference;
  FUZZ_CHECK(ours.init({key, key_len}));
  FUZZ_CHECK(reference.init({key, key_len}, AesGcm::Impl::Portable));

  // The message as attacker bytes: ciphertext and a trailing tag.
  if (msg_len >= AesGcm::kTagLen) {
    const size_t n = msg_len - AesGcm::kTagLen;
    std::vector<uint8_t> a(n), b(msg, msg + n);
    const bool ok_a = ours.open(nonce, {aad, aad_len}, {msg, n}, a.data(), msg + n);  // into a buffer apart
    const bool ok_b = reference.open(nonce, {aad, aad_len}, b, b.data(), msg + n);    // in place
    FUZZ_CHECK(ok_a == ok_b);
    FUZZ_CHECK(a == b);  // the same plaintext, or zeros on both sides
  }

  // The message as plaintext.
  std::vector<uint8_t> a(msg_len), b(msg, msg + msg_len);
  uint8_t tag_a[AesGcm::kTagLen], tag_b[AesGcm::kTagLen];
  ours.seal(nonce, {aad, aad_len}, {msg, msg_len}, a.data(), tag_a);
  reference.seal(nonce, {aad, aad_len}, b, b.data(), tag_b);
  FUZZ_CHECK(a == b);
  FUZZ_CHECK(std::memcmp(tag_a, tag_b, sizeof tag_a) == 0);
  std::vector<uint8_t> opened = a;
  FUZZ_CHECK(ours.open(nonce, {aad, aad_len}, opened, opened.data(), tag_a));
  FUZZ_CHECK(std::equal(opened.begin(), opened.end(), msg));
  const size_t flip = (msg_len ? msg[0] : 0) % (msg_len + sizeof tag_a);
  if (flip < msg_len)
    a[flip] ^= 0x80;
  else
    tag_a[flip - msg_len] ^= 0x80;
  FUZZ_CHECK(!ours.open(nonce, {aad, aad_len}, a, a.data(), tag_a));
  return 0;
}
