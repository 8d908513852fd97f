// The SSH binary packet protocol (RFC 4253 §6) with the AEAD ciphers OpenSSH speaks:
// aes128-gcm@openssh.com / aes256-gcm@openssh.com (RFC 5647 as OpenSSH's PROTOCOL file amends
// it: the 4-byte length is plaintext, authenticated as additional data) and
// chacha20-poly1305@openssh.com (OpenSSH PROTOCOL.chacha20poly1305: the length has its own key).
// No MAC-then-encrypt ciphers: every cipher we negotiate authenticates itself, except
// TlsBound: two alknet peers on one TLS 1.3 / QUIC channel whose binding both KEXINITs name
// (see kex.hpp) leave encryption and integrity to that channel, and packets go as under "none".
//
// Built for one copy per byte: a sealer encrypts a packet in place in the caller's buffer (the
// payload is written straight after a 5-byte header), and an opener decrypts in place in the
// receive buffer, handing back a span of the plaintext payload. Pure: no I/O, no allocation on
// the per-packet path.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace alk::ssh {

enum class Cipher { None, Aes128Gcm, Aes256Gcm, ChaCha20Poly1305, TlsBound };

// Also knows the bound-cipher names (kTlsBoundPrefix + 32 hex digits + kTlsBoundSuffix).
std::optional<Cipher> cipher_from_name(std::string_view name);
std::string_view cipher_name(Cipher c);  // TlsBound: "tls-bound" (its wire names vary)
inline constexpr std::string_view kTlsBoundPrefix = "tls-bound-", kTlsBoundSuffix = "@alknet.invalid";
size_t cipher_key_len(Cipher c);  // 0, 16, 32, 64, 0
size_t cipher_iv_len(Cipher c);   // 0, 12, 12, 0, 0

// One direction's keys, as derived at NEWKEYS (RFC 4253 §7.2: letters A-D).
struct DirectionKeys {
  Cipher cipher = Cipher::None;
  std::vector<uint8_t> key;
  std::vector<uint8_t> iv;
};

// Writes v big-endian at p (the SSH uint32), for fields filled in place in a packet buffer.
inline void put_u32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24);
  p[1] = uint8_t(v >> 16);
  p[2] = uint8_t(v >> 8);
  p[3] = uint8_t(v);
}
// Reads the big-endian uint32 at p; the caller has checked that 4 bytes are there.
inline uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// The largest packet_length we accept or send. RFC 4253 asks for at least 35000; OpenSSH
// accepts up to 256 KiB, and bigger packets mean fewer per-packet costs on bulk channels.
inline constexpr size_t kMaxPacketLength = 256 * 1024;
// Bytes in front of the payload in a packet: uint32 packet_length + byte padding_length.
inline constexpr size_t kPacketHeader = 5;
// The most a packet adds after its payload: padding (4..19 bytes for 16-byte blocks) + 16-byte tag.
inline constexpr size_t kPacketTrailerMax = 19 + 16;

// The largest payload one packet can carry.
inline constexpr size_t kMaxPayload = kMaxPacketLength - 1 - 19;

class CipherState;  // the cipher contexts (crypto::AesGcm, BoringSSL ChaCha20), hidden from callers

// One direction's cipher state and sequence number, shared by the sealer and the opener.
// Starts with no cipher (the clear-text key exchange).
class PacketDirection {
 public:
  PacketDirection();
  ~PacketDirection();
  PacketDirection(PacketDirection&&) noexcept;
  PacketDirection& operator=(PacketDirection&&) noexcept;

  // Switches to new keys (NEWKEYS). Returns false if the key/iv sizes do not fit the cipher.
  bool set_keys(const DirectionKeys& keys);
  // Strict key exchange (kex-strict-*-v00@openssh.com) restarts the sequence number at NEWKEYS.
  void reset_sequence() { seq_ = 0; }
  uint32_t sequence() const { return seq_; }

 protected:
  std::unique_ptr<CipherState> st_;
  uint32_t seq_ = 0;
};

// Seals outgoing packets for one direction.
class PacketSealer : public PacketDirection {
 public:
  // Exact size of the sealed packet for a payload of n bytes.
  size_t sealed_size(size_t payload_len) const;
  // buf holds the payload at [kPacketHeader, kPacketHeader + payload_len) and is at least
  // sealed_size(payload_len) long; writes header, padding and tag around it and encrypts in place.
  // Returns the sealed size. payload_len must be at most kMaxPayload.
  size_t seal_in_place(std::span<uint8_t> buf, size_t payload_len);
  // Convenience: appends one sealed packet carrying payload to out.
  void seal(std::span<const uint8_t> payload, std::vector<uint8_t>& out);
};

struct Opened {
  enum Status { NeedMore, Packet, Error };
  Status status = NeedMore;
  size_t consumed = 0;              // Packet: bytes of input this packet used
  size_t need = 0;                  // NeedMore: total bytes the packet will take, once known (0 = unknown)
  std::span<uint8_t> payload;       // Packet: points into the input buffer (decrypted in place)
  std::string_view error;           // Error: why (the connection must be dropped)
};

// Opens incoming packets for one direction.
class PacketOpener : public PacketDirection {
 public:
  // Looks at the front of buf. On Packet, the bytes [0, consumed) were decrypted in place and the
  // payload span points into them; on NeedMore nothing in buf was changed (call again with more).
  // A failed tag, a bad length or bad padding is an Error and the stream cannot be resynchronised.
  Opened open(std::span<uint8_t> buf);
};

}  // namespace alk::ssh
