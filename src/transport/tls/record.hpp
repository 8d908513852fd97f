// TLS 1.3 records after the handshake (RFC 8446 §5), sealed and opened by us for the AES-GCM
// suites. BoringSSL runs the handshake and keeps the exporter; then it hands over each
// direction's traffic secret and sequence number, and every record is one AesGcm pass
// between the socket buffers and the caller's (BoringSSL's record layer copies each byte
// twice more and seals at two thirds of AesGcm's speed on VAES CPUs). Pure: no I/O.
#pragma once

#include <openssl/base.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/aes_gcm.hpp"

namespace alk::transport::tls13 {

enum class ContentType : uint8_t { invalid = 0, alert = 21, handshake = 22, application_data = 23 };

inline constexpr size_t kHeaderLen = 5, kTagLen = 16;
inline constexpr size_t kMaxPlaintext = 16384;                 // content per record (§5.1)
inline constexpr size_t kMaxCiphertext = kMaxPlaintext + 256;  // the largest length field (§5.2)
// What sealing adds to a record's content: header, the inner content type, tag.
inline constexpr size_t kSealOverhead = kHeaderLen + 1 + kTagLen;

// The record at the start of in: need_more until its 5-byte header is there; bad for a
// header no TLS 1.3 peer sends once the handshake is done (an outer type other than
// application_data, a length outside 17..kMaxCiphertext); else the whole record's length.
struct Header {
  enum Status { need_more, ok, bad } status;
  size_t record_len;
};
Header parse_header(std::span<const uint8_t> in);

// One direction's record protection: key and IV from a traffic secret (§7.3), nonces from the
// sequence number (§5.3), KeyUpdate (§7.2).
class RecordKeys {
 public:
  RecordKeys() = default;
  ~RecordKeys();
  RecordKeys(const RecordKeys&) = delete;
  RecordKeys& operator=(const RecordKeys&) = delete;

  // TLS_AES_128_GCM_SHA256 (0x1301) and TLS_AES_256_GCM_SHA384 (0x1302).
  static bool supports(uint16_t cipher_suite);
  // secret: the current traffic secret; seq: the next record's sequence number.
  bool init(uint16_t cipher_suite, std::span<const uint8_t> secret, uint64_t seq);
  // The next traffic secret (application_traffic_secret_N+1), sequence number back to 0.
  bool update();

  // Seals content (at most kMaxPlaintext bytes, anywhere, or already at record + kHeaderLen)
  // as one record of type at record, which has content.size() + kSealOverhead bytes of room.
  // Returns the record's size.
  size_t seal(ContentType type, std::span<const uint8_t> content, uint8_t* record);

  // Opens a whole record (parse_header said ok) into out, which has record.size() -
  // kHeaderLen - kTagLen bytes of room (out may be record.data() + kHeaderLen). The
  // content is out[0, len); type is invalid if the record does not authenticate or its
  // plaintext is all padding.
  struct Opened {
    ContentType type;
    size_t len;
  };
  Opened open(std::span<const uint8_t> record, uint8_t* out);

 private:
  bool derive();
  crypto::AesGcm aead_;
  std::array<uint8_t, crypto::AesGcm::kNonceLen> iv_{};
  std::array<uint8_t, 48> secret_{};
  size_t secret_len_ = 0, key_len_ = 0;
  const EVP_MD* md_ = nullptr;
  uint64_t seq_ = 0;
};

// A handshake message after the handshake (§4.6) at the start of in: need_more until all of
// it is there; bad for anything but NewSessionTicket and a well-formed KeyUpdate (we offer no
// post-handshake authentication), or a message longer than kMaxPostHandshake.
struct PostHandshake {
  enum Kind { need_more, new_session_ticket, key_update, key_update_requested, bad } kind;
  size_t len;  // the whole message, its 4-byte header included
};
inline constexpr size_t kMaxPostHandshake = 4 + 65536 + 1024;  // a ticket (<2^16) and its extensions
PostHandshake parse_post_handshake(std::span<const uint8_t> in);

}  // namespace alk::transport::tls13
