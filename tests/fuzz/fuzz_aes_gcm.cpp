// Differential target for the SSH packets' AES-GCM: our VAES code (where the CPU has it; both
// the 512-bit and the 256-bit build where it has AVX-512) against BoringSSL on the same key,
// nonce, additional data and bytes. Both must seal to the same
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

  // ours: what Auto picks; narrow: the 256-bit code where Auto runs the 512-bit one. Each
  // goes through every check against BoringSSL.
  AesGcm ours, narrow, reference;
  FUZZ_CHECK(ours.init({key, key_len}));
  FUZZ_CHECK(narrow.init({key, key_len}, AesGcm::Impl::Narrow));
  FUZZ_CHECK(reference.init({key, key_len}, AesGcm::Impl::Portable));

  for (const AesGcm* g : {&ours, &narrow}) {
    // The message as attacker bytes: ciphertext and a trailing tag.
    if (msg_len >= AesGcm::kTagLen) {
      const size_t n = msg_len - AesGcm::kTagLen;
      std::vector<uint8_t> a(n), b(msg, msg + n);
      const bool ok_a = g->open(nonce, {aad, aad_len}, {msg, n}, a.data(), msg + n);  // into a buffer apart
      const bool ok_b = reference.open(nonce, {aad, aad_len}, b, b.data(), msg + n);  // in place
      FUZZ_CHECK(ok_a == ok_b);
      FUZZ_CHECK(a == b);  // the same plaintext, or zeros on both sides
    }

    // The message as plaintext.
    // Ciphertext and tag: ours from msg into a buffer apart, BoringSSL's in place, and ours
    // again with the last bytes as extra (for both paths).
    const size_t extra = std::min<size_t>(msg_len, data[0] % (AesGcm::kMaxExtra + 1));
    std::vector<uint8_t> a(msg_len + AesGcm::kTagLen), b(msg, msg + msg_len), c(a.size()), d(a.size());
    b.resize(a.size());
    g->seal(nonce, {aad, aad_len}, {msg, msg_len}, a.data());
    reference.seal(nonce, {aad, aad_len}, {b.data(), msg_len}, b.data());
    g->seal(nonce, {aad, aad_len}, {msg, msg_len - extra}, c.data(), {msg + msg_len - extra, extra});
    reference.seal(nonce, {aad, aad_len}, {msg, msg_len - extra}, d.data(), {msg + msg_len - extra, extra});
    FUZZ_CHECK(a == b && a == c && a == d);
    std::vector<uint8_t> opened = a;
    FUZZ_CHECK(g->open(nonce, {aad, aad_len}, {opened.data(), msg_len}, opened.data(), opened.data() + msg_len));
    FUZZ_CHECK(std::equal(opened.begin(), opened.begin() + long(msg_len), msg));
    a[(msg_len ? msg[0] : 0) % a.size()] ^= 0x80;
    FUZZ_CHECK(!g->open(nonce, {aad, aad_len}, {a.data(), msg_len}, a.data(), a.data() + msg_len));
  }
  return 0;
}
