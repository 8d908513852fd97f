// The SSH connection protocol's messages (RFC 4254) as a pure codec: decode one payload into a
// typed message, encode one back. SessionCore (session.cpp) keeps the state — channels,
// windows, pending replies — and never parses bytes itself. Spans in decoded messages point
// into the payload they came from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace alk::ssh::conn {

// Host names longer than these make a tcpip open or a forward request malformed.
inline constexpr size_t kMaxHost = 1024;
inline constexpr size_t kMaxForwardHost = 255;  // a bind address: a DNS name at most

struct GlobalRequest {  // 80
  std::string name;
  bool want_reply = false;
  std::span<const uint8_t> data;  // request-specific
};
struct GlobalReply {  // 81 / 82
  bool success = false;
  std::span<const uint8_t> data;  // e.g. the bound port of a tcpip-forward
};
struct Open {  // 90
  std::string type;
  uint32_t sender = 0, window = 0, max_packet = 0;
  std::span<const uint8_t> data;  // type-specific (decode_tcpip)
};
struct OpenConfirmation {  // 91
  uint32_t recipient = 0, sender = 0, window = 0, max_packet = 0;
};
struct OpenFailure {  // 92
  uint32_t recipient = 0, reason = 0;
  std::string description;
};
struct WindowAdjust {  // 93
  uint32_t recipient = 0, bytes = 0;
};
struct Data {  // 94
  uint32_t recipient = 0;
  std::span<const uint8_t> data;
};
struct ExtendedData {  // 95
  uint32_t recipient = 0, code = 0;
  std::span<const uint8_t> data;
};
struct Eof {  // 96
  uint32_t recipient = 0;
};
struct Close {  // 97
  uint32_t recipient = 0;
};
struct Request {  // 98
  uint32_t recipient = 0;
  std::string name;
  bool want_reply = false;
  std::span<const uint8_t> data;
};
struct RequestReply {  // 99 / 100
  uint32_t recipient = 0;
  bool success = false;
};
// A message number outside 80..100: not ours to handle (the session ignores it).
struct Other {
  uint8_t type = 0;
};

using Message = std::variant<GlobalRequest, GlobalReply, Open, OpenConfirmation, OpenFailure, WindowAdjust, Data,
                             ExtendedData, Eof, Close, Request, RequestReply, Other>;

// One payload (message number first). nullopt for a malformed message of the connection
// protocol, with *error (if given) saying which; the peer then broke the protocol.
std::optional<Message> decode(std::span<const uint8_t> payload, std::string *error = nullptr);

// The payload for m (Other encodes as its bare message number).
std::vector<uint8_t> encode(const Message &m);

// The recipient channel of a channel message (91..100), nullopt for the others.
std::optional<uint32_t> recipient(const Message &m);

// The data of "direct-tcpip" and "forwarded-tcpip" opens: where to connect (or what was
// connected to) and where the connection came from.
struct TcpipEndpoints {
  std::string host;
  uint16_t port = 0;
  std::string orig_host;
  uint16_t orig_port = 0;
};
std::optional<TcpipEndpoints> decode_tcpip(std::span<const uint8_t> data);
std::vector<uint8_t> encode_tcpip(const TcpipEndpoints &e);

// The data of "tcpip-forward" / "cancel-tcpip-forward" global requests.
struct ForwardAddress {
  std::string host;
  uint16_t port = 0;
};
std::optional<ForwardAddress> decode_forward(std::span<const uint8_t> data);
std::vector<uint8_t> encode_forward(const ForwardAddress &f);

// How much data the next CHANNEL_DATA packet may carry (within the peer's maximum packet and
// the channel's window). While anything interactive shares the session, OpenSSH's 32 KiB, so a
// small reply waits behind little bulk (the receiver can open a packet only once all of it is
// there). Once 4 MiB of data has moved (either direction, any channels) in packets of at least
// 32 KiB, with no channel opened and no shorter packet on another channel in between, the
// session is all bulk and data packets may carry up to ~255 KiB: a quarter of the syscalls,
// packet openings and wake-ups at both ends (loopback -L, session 10: 11.5-12.6 vs 9.6-11.0
// Gbit/s, sender CPU 0.54 vs 0.68 s/GB, receiver wake-ups 4-5k vs 9-10k per GB). A channel
// opening, or a short packet on any channel but the one that moved the last full packet,
// brings it back to 32 KiB at once. The bulk channel's own short packets (its source ran dry
// for a moment) neither count nor reset: otherwise a relay that reads faster than its source
// writes would keep finding short reads and never leave 32 KiB.
class PacketSizer {
 public:
  static constexpr size_t kSharedPacket = 32 * 1024;
  static constexpr size_t kBulkPacket = 256 * 1024 - 1024;  // a data header, padding and tag fit 256 KiB
  static constexpr uint64_t kBulkAfter = 4 * 1024 * 1024;

  void opened() { bulk_bytes_ = 0; }
  // A CHANNEL_DATA packet of this many bytes on a channel (our id for it), sent or received.
  void data(uint32_t channel, size_t bytes) {
    if (bytes >= kSharedPacket) {
      bulk_bytes_ += bytes;
      bulk_channel_ = channel;
    } else if (channel != bulk_channel_) {
      bulk_bytes_ = 0;
    }
  }
  size_t limit() const { return bulk_bytes_ >= kBulkAfter ? kBulkPacket : kSharedPacket; }

 private:
  uint64_t bulk_bytes_ = 0;
  uint32_t bulk_channel_ = UINT32_MAX;
};

// The data of an "exit-status" channel request.
std::optional<uint32_t> decode_exit_status(std::span<const uint8_t> data);
std::vector<uint8_t> encode_exit_status(uint32_t status);

}  // namespace alk::ssh::conn
