#include "transport/tls/record.hpp"

#include <openssl/crypto.h>
#include <openssl/digest.h>

#include "crypto/hkdf.hpp"

namespace alk::transport::tls13 {

Header parse_header(std::span<const uint8_t> in) {
  if (in.size() < kHeaderLen) return {Header::need_more, 0};
  const size_t len = size_t(in[3]) << 8 | in[4];
  // legacy_record_version is not checked: §5.1 says it MUST be ignored.
  if (in[0] != uint8_t(ContentType::application_data) || len < 1 + kTagLen || len > kMaxCiphertext)
    return {Header::bad, 0};
  return {Header::ok, kHeaderLen + len};
}

RecordKeys::~RecordKeys() {
  OPENSSL_cleanse(secret_.data(), secret_.size());
  OPENSSL_cleanse(iv_.data(), iv_.size());
}

bool RecordKeys::supports(uint16_t cipher_suite) { return cipher_suite == 0x1301 || cipher_suite == 0x1302; }

bool RecordKeys::init(uint16_t cipher_suite, std::span<const uint8_t> secret, uint64_t seq) {
  if (!supports(cipher_suite)) return false;
  md_ = cipher_suite == 0x1301 ? EVP_sha256() : EVP_sha384();
  key_len_ = cipher_suite == 0x1301 ? 16 : 32;
  secret_len_ = EVP_MD_size(md_);
  if (secret.size() != secret_len_) return false;
  std::copy(secret.begin(), secret.end(), secret_.begin());
  seq_ = seq;
  return derive();
}

bool RecordKeys::derive() {
  std::array<uint8_t, 32> key;
  const std::span<const uint8_t> secret(secret_.data(), secret_len_);
  const bool ok = crypto::tls13_expand_label({key.data(), key_len_}, md_, secret, "key") &&
                  crypto::tls13_expand_label(iv_, md_, secret, "iv") && aead_.init({key.data(), key_len_});
  OPENSSL_cleanse(key.data(), key.size());
  return ok;
}

bool RecordKeys::update() {
  std::array<uint8_t, 48> next;
  if (!crypto::tls13_expand_label({next.data(), secret_len_}, md_, {secret_.data(), secret_len_}, "traffic upd"))
    return false;
  secret_ = next;
  OPENSSL_cleanse(next.data(), next.size());
  seq_ = 0;
  return derive();
}

namespace {

// §5.3: the 64-bit sequence number, big-endian, XORed into the IV's last 8 bytes.
std::array<uint8_t, crypto::AesGcm::kNonceLen> nonce_for(const std::array<uint8_t, 12>& iv, uint64_t seq) {
  auto nonce = iv;
  for (int i = 0; i < 8; ++i) nonce[size_t(11 - i)] ^= uint8_t(seq >> (8 * i));
  return nonce;
}

}  // namespace

size_t RecordKeys::seal(ContentType type, std::span<const uint8_t> content, uint8_t* record) {
  const size_t length_field = content.size() + 1 + kTagLen;  // content, its type, no padding
  record[0] = uint8_t(ContentType::application_data);
  record[1] = 0x03;
  record[2] = 0x03;
  record[3] = uint8_t(length_field >> 8);
  record[4] = uint8_t(length_field);
  const auto nonce = nonce_for(iv_, seq_++);
  const uint8_t inner_type = uint8_t(type);
  aead_.seal(nonce.data(), {record, kHeaderLen}, content, record + kHeaderLen, {&inner_type, 1});
  return kHeaderLen + length_field;
}

RecordKeys::Opened RecordKeys::open(std::span<const uint8_t> record, uint8_t* out) {
  const size_t inner = record.size() - kHeaderLen - kTagLen;
  const auto nonce = nonce_for(iv_, seq_++);
  if (!aead_.open(nonce.data(), record.first(kHeaderLen), record.subspan(kHeaderLen, inner), out,
                  record.data() + kHeaderLen + inner))
    return {ContentType::invalid, 0};
  // §5.4: the content type is the last non-zero byte; zeros after it are padding.
  size_t n = inner;
  while (n > 0 && out[n - 1] == 0) --n;
  if (n == 0) return {ContentType::invalid, 0};
  return {ContentType(out[n - 1]), n - 1};
}

PostHandshake parse_post_handshake(std::span<const uint8_t> in) {
  if (in.size() < 4) return {PostHandshake::need_more, 0};
  const size_t body = size_t(in[1]) << 16 | size_t(in[2]) << 8 | in[3];
  if (4 + body > kMaxPostHandshake) return {PostHandshake::bad, 0};
  if (in.size() < 4 + body) return {PostHandshake::need_more, 0};
  constexpr uint8_t kNewSessionTicket = 4, kKeyUpdate = 24;
  if (in[0] == kNewSessionTicket) return {PostHandshake::new_session_ticket, 4 + body};
  if (in[0] == kKeyUpdate && body == 1 && in[4] <= 1)
    return {in[4] ? PostHandshake::key_update_requested : PostHandshake::key_update, 4 + body};
  return {PostHandshake::bad, 0};
}

}  // namespace alk::transport::tls13
