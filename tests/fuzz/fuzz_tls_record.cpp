// The TLS 1.3 record layer we run after the handshake, on attacker bytes: record headers,
// post-handshake handshake messages, and records opened under fixed keys (both suites). Each
// parser's answer must be consistent with its input, and what we seal must open again.
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_check.hpp"
#include "transport/tls/record.hpp"

namespace tls13 = alk::transport::tls13;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> in(data, size);

  const auto header = tls13::parse_header(in);
  FUZZ_CHECK(header.status != tls13::Header::need_more || size < tls13::kHeaderLen);
  if (header.status == tls13::Header::ok)
    FUZZ_CHECK(header.record_len >= tls13::kHeaderLen + 17 &&
               header.record_len <= tls13::kHeaderLen + tls13::kMaxCiphertext);

  const auto msg = tls13::parse_post_handshake(in);
  if (msg.kind != tls13::PostHandshake::need_more && msg.kind != tls13::PostHandshake::bad)
    FUZZ_CHECK(msg.len >= 4 && msg.len <= size && msg.len <= tls13::kMaxPostHandshake);

  const uint16_t suite = size > 0 && (data[0] & 1) ? 0x1302 : 0x1301;
  uint8_t secret[48];
  for (size_t i = 0; i < sizeof secret; ++i) secret[i] = uint8_t(i * 7 + 1);
  tls13::RecordKeys keys;
  FUZZ_CHECK(keys.init(suite, {secret, suite == 0x1301 ? 32u : 48u}, 0));

  // The bytes as a received record.
  if (header.status == tls13::Header::ok && header.record_len <= size) {
    std::vector<uint8_t> out(header.record_len - tls13::kHeaderLen - tls13::kTagLen);
    const auto opened = keys.open(in.first(header.record_len), out.data());
    FUZZ_CHECK(opened.len < out.size() || opened.type == tls13::ContentType::invalid);
  }

  // The bytes as content: sealed by one side, opened by the other, then after a KeyUpdate.
  tls13::RecordKeys sender, receiver;
  FUZZ_CHECK(sender.init(suite, {secret, suite == 0x1301 ? 32u : 48u}, 5));
  FUZZ_CHECK(receiver.init(suite, {secret, suite == 0x1301 ? 32u : 48u}, 5));
  for (int round = 0; round < 2; ++round) {
    const size_t n = size < tls13::kMaxPlaintext ? size : tls13::kMaxPlaintext;
    std::vector<uint8_t> record(n + tls13::kSealOverhead);
    FUZZ_CHECK(sender.seal(tls13::ContentType::application_data, {data, n}, record.data()) == record.size());
    FUZZ_CHECK(tls13::parse_header(record).status == tls13::Header::ok);
    const auto opened = receiver.open(record, record.data() + tls13::kHeaderLen);
    FUZZ_CHECK(opened.type == tls13::ContentType::application_data && opened.len == n);
    FUZZ_CHECK(n == 0 || std::memcmp(record.data() + tls13::kHeaderLen, data, n) == 0);
    FUZZ_CHECK(sender.update() && receiver.update());
  }
  return 0;
}
