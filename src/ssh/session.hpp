// One SSH connection driven by the reactor on our own protocol layers (packet_transport.hpp):
// a reader task that reads the transport stream in large chunks straight into the packet
// layer's buffer (decrypted in place), a writer task that sends what the packet layer sealed,
// and the connection protocol (RFC 4254): channels with windows, global requests.
//
// Data path per byte, receive side: one read into the packet buffer, decrypt in place, one copy
// into the channel's buffer, one copy into the reader's buffer. Send side: one copy into the
// packet buffer, encrypt in place, one write. The transport is any stream::Stream (tcp, tls,
// quic): there is no socketpair bridge.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "runtime/event.hpp"
#include "runtime/result.hpp"
#include "runtime/scope.hpp"
#include "runtime/reactor.hpp"
#include "ssh/connection.hpp"
#include "ssh/keys.hpp"
#include "ssh/packet_transport.hpp"
#include "stream/stream.hpp"

namespace alk::ssh {

class Channel;
class ChannelOpen;
class GlobalRequest;

// Our channel parameters: the window OpenSSH uses (64 packets of 32 KiB), so a stalled tunnel
// holds at most 2 MiB, and the largest data packet we take (what fits our 256 KiB packet
// limit; RFC 4254 §5.1 lets each side name its own). What we send is sized by conn::PacketSizer
// within the peer's maximum: OpenSSH names 32 KiB, so it never gets more.
inline constexpr uint32_t kChannelWindow = 2 * 1024 * 1024;
inline constexpr uint32_t kChannelMaxPacket = conn::PacketSizer::kBulkPacket;
// A channel writer waits while this much sealed output is waiting for the socket: every channel
// shares it, so a bulk writer must not park much in front of a small request's reply. Measured on
// loopback during a bulk -L download: 512 KiB gave a request through another channel 3.2 ms p50,
// 256 KiB 2.2 ms, 128 KiB 1.6 ms (session 6, when 128 KiB cost ~9% of the bulk rate). Since the
// channels seal straight into this buffer, 128 KiB costs nothing measurable (session 9, 7 rounds:
// -L up median 8.68 vs 9.39 Gbit/s, down 9.14 vs 8.58) and takes p50 from 1.75-1.97 to 1.19-1.35
// ms, p99 from 6.1-6.5 to 5.3-5.8. 64 KiB starts to cost rate (6.5 and 7.1 Gbit/s in 2 of 4 runs).
inline constexpr size_t kOutputHighWater = 128 * 1024;

// alknet's servers answer every direct-tcpip open from an alknet client with an
// exit-status request carrying the SOCKS5 REP code of the dial (0 = connected): the exact
// SOCKS reply, which an open failure's four reason codes cannot carry. The client asks for it
// by this originator address. See docs/protocol.md.
inline constexpr const char *kStatusOriginator = "alknet-status";

// SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1).
enum class OpenFailure : int { None = 0, Prohibited = 1, ConnectFailed = 2, UnknownType = 3, ResourceShortage = 4 };

class SessionCore {
 public:
  SessionCore(std::unique_ptr<stream::Stream> transport, TransportConfig cfg);
  ~SessionCore();
  SessionCore(const SessionCore &) = delete;
  SessionCore &operator=(const SessionCore &) = delete;

  // Starts the reader and writer: the version exchange and key exchange begin.
  void start();
  PacketTransport &wire() { return wire_; }

  // Handshake phase: waits until the first key exchange is done. 0, or -ETIMEDOUT /
  // -ECONNRESET (death_reason() says why) / -ECANCELED.
  rt::Task<int> wait_established(rt::Clock::time_point deadline);
  // Handshake phase: the next user-auth-layer message (numbers 5..79 and, before
  // set_authenticated(), anything else the peer sent), or an error.
  rt::Task<rt::Result<std::vector<uint8_t>>> next_message(rt::Clock::time_point deadline);
  // Connection-protocol messages are handled from now on (any already queued are replayed).
  void set_authenticated();
  // Queues one payload and wakes the writer.
  void send(std::span<const uint8_t> payload);

  // Incoming channel opens (after authentication). Unanswered opens are refused when dropped.
  std::function<void(ChannelOpen)> on_channel_open;
  // Incoming global requests with their names (others are answered with failure).
  std::function<void(GlobalRequest)> on_global_request;

  // Opens a channel: type-specific data follows the standard fields. Resolves on confirmation
  // (the Channel), failure (rt::Error with the reason code in .code as OpenFailure + the
  // peer's description), session loss (ECONNRESET) or the deadline (ETIMEDOUT).
  struct OpenRefused {
    uint32_t reason = 0;
    std::string description;
  };
  rt::Task<rt::Result<std::unique_ptr<Channel>>> open_channel(std::string_view type, std::span<const uint8_t> extra,
                                                              rt::Clock::time_point deadline, OpenRefused *refused);
  // A global request with want_reply: true on success, false on failure; error if the session
  // is lost or the deadline passes. Replies come in request order (RFC 4254 §4).
  rt::Task<rt::Result<bool>> global_request(std::string_view name, std::span<const uint8_t> extra,
                                            rt::Clock::time_point deadline);

  // Pulsed after every batch of incoming packets and once a second.
  rt::Event &progress() { return progress_; }
  // Pulsed whenever the writer got output onto the transport.
  rt::Event &flushed() { return flushed_; }
  bool alive() const { return alive_; }
  const std::string &death_reason() const { return death_reason_; }
  rt::Event &dead_event() { return dead_; }
  // Sends DISCONNECT if still alive, lets the writer deliver it (<= 1 s), stops the tasks.
  rt::Task<void> shutdown(const char *why);
  size_t channel_count() const { return channels_.size(); }
  rt::Scope &tasks() { return tasks_; }
  // Bytes queued for the transport: sealed, in flight, or held during a key exchange (so
  // channel writers stop at the high-water mark during a re-key too).
  size_t pending_output() const { return wire_.output_size() + wire_.held_size() + in_flight_; }
  void kick() { kick_.set(); }

 private:
  friend class Channel;
  friend class ChannelOpen;
  friend class GlobalRequest;

  rt::Task<void> reader();
  rt::Task<void> writer();
  rt::Task<void> ticker();
  void die(std::string why);
  void dispatch(std::span<const uint8_t> payload);
  void dispatch_connection(std::span<const uint8_t> payload);
  void on_open(conn::Open m);
  void on_global(conn::GlobalRequest m);
  uint32_t register_channel(Channel *c);
  void forget_channel(uint32_t local_id);
  void pulse(rt::Event &e) {
    e.set();
    e.reset();
  }

  std::unique_ptr<stream::Stream> transport_;
  PacketTransport wire_;
  rt::Scope tasks_;
  rt::Event progress_, flushed_, kick_, dead_;
  bool alive_ = true, started_ = false, authenticated_ = false;
  std::string death_reason_;
  size_t in_flight_ = 0;
  conn::PacketSizer sizer_;
  std::deque<std::vector<uint8_t>> inbox_;
  // Channels holding pieces of the current read batch for their relay's sink (forward_to()):
  // handed over once the batch is dispatched, while the pieces still sit in the input buffer.
  std::vector<Channel *> forwarding_;
  void flush_forwards();
  // Channels by our id. A null entry: closed on our side, waiting for the peer's CLOSE.
  std::unordered_map<uint32_t, Channel *> channels_;
  uint32_t next_id_ = 0;
  struct PendingGlobal {
    int result = -1;  // -1 waiting, 0 failure, 1 success
    rt::Event done;
  };
  std::deque<std::shared_ptr<PendingGlobal>> globals_;
  // Replies to the peer's global requests go out in request order (RFC 4254 §4), however
  // late each one is answered.
  struct ReplySlot {
    bool ready = false;
    std::vector<uint8_t> payload;
  };
  std::deque<std::shared_ptr<ReplySlot>> replies_;
  void flush_replies();
};


// One SSH channel as a Stream. Incoming data waits in the channel's buffer, bounded by the
// window we grant: reads take from it and grant the window back in large steps. Writes stay
// within the peer's window and maximum packet, and wait while the session's output is full.
class Channel final : public stream::Stream {
 public:
  ~Channel() override;
  rt::Task<ssize_t> read(std::span<std::byte> buf) override;
  rt::Task<ssize_t> write(std::span<const std::byte> buf) override;
  rt::Task<int> shutdown_write() override;
  rt::Task<int> wait_readable() override;
  std::span<const std::byte> peek() override;
  void consume(size_t n) override;
  std::span<std::byte> write_room(size_t max) override;
  rt::Task<int> wait_writable() override;
  void commit_room(size_t n) override;
  void forward_to(stream::Stream *sink, uint64_t *count) override;
  void close() override;
  // Set by an exit-status request from the peer (alknet's open-status signal).
  int exit_status() const { return exit_status_; }
  rt::Event &status_event() { return status_; }
  bool remote_closed() const { return remote_closed_; }

 private:
  friend class SessionCore;
  friend class ChannelOpen;
  explicit Channel(SessionCore &core);
  void orphan();
  void on_data(std::span<const uint8_t> d);
  void on_close();
  void send_close();

  SessionCore *core_;
  uint32_t local_id_ = 0, remote_id_ = 0;
  uint32_t remote_window_ = 0, remote_max_packet_ = 0;
  uint8_t *room_ = nullptr;  // write_room(): the CHANNEL_DATA payload being filled
  uint32_t local_window_ = kChannelWindow;  // what the peer may still send
  uint32_t consumed_ = 0;                   // read since the last WINDOW_ADJUST
  // Received data not yet read: fixed-size chunks leased from a per-thread pool, so a busy
  // channel never reallocates or faults in fresh pages and an idle one holds none.
  struct RxChunk {
    std::unique_ptr<uint8_t[]> data;
    uint32_t begin = 0, end = 0;
  };
  std::vector<RxChunk> rx_;
  size_t rx_bytes_ = 0;
  void queue_rx(std::span<const uint8_t> d);
  void release_rx();
  // forward_to(): where received data goes while rx_ is empty, and the pieces of this read
  // batch on their way there (still in the session's input buffer).
  stream::Stream *fwd_ = nullptr;
  uint64_t *fwd_count_ = nullptr;
  static constexpr size_t kMaxPieces = 16;
  std::array<std::span<const std::byte>, kMaxPieces> pieces_;
  size_t n_pieces_ = 0;
  bool listed_ = false;  // in SessionCore::forwarding_
  void flush_forward();
  void took(size_t n);  // n received bytes were read: grant window back when due
  rt::Event rx_event_, tx_event_, status_;
  int exit_status_ = -1;
  bool eof_received_ = false, eof_sent_ = false, remote_closed_ = false, close_sent_ = false;
  // open_channel(): the answer to our CHANNEL_OPEN.
  int open_state_ = 1;  // 0 waiting, 1 open, -1 refused
  SessionCore::OpenRefused refused_;
};

// An incoming CHANNEL_OPEN (direct-tcpip or forwarded-tcpip) waiting for its answer.
class ChannelOpen {
 public:
  ChannelOpen(ChannelOpen &&o) noexcept;
  ChannelOpen &operator=(ChannelOpen &&) = delete;
  ~ChannelOpen() { refuse(); }
  const std::string &type() const { return type_; }
  const std::string &destination() const { return dest_; }
  uint16_t port() const { return port_; }
  const std::string &originator() const { return orig_; }
  uint16_t originator_port() const { return orig_port_; }
  // Confirms the open; nullptr if the session is gone.
  std::unique_ptr<Channel> accept();
  void refuse(OpenFailure reason = OpenFailure::Prohibited, std::string_view description = "");
  // Answers with the outcome of the dial (or internal service) behind the open, as a SOCKS5
  // REP code: for the alknet-status originator, confirms and sends the status (the channel
  // then closes again when rep != 0); for others, confirms on 0 and otherwise refuses with the
  // matching reason code and text. The channel only when rep == 0 and the session lives.
  std::unique_ptr<Channel> answer(int rep);

 private:
  friend class SessionCore;
  ChannelOpen(SessionCore &core, uint32_t peer_id, uint32_t window, uint32_t max_packet);
  SessionCore *core_;
  bool pending_ = true;
  uint32_t peer_id_, window_, max_packet_;
  std::string type_, dest_, orig_;
  uint16_t port_ = 0, orig_port_ = 0;
};

// An incoming global request waiting for its answer (if the peer wants one).
class GlobalRequest {
 public:
  GlobalRequest(GlobalRequest &&o) noexcept;
  GlobalRequest &operator=(GlobalRequest &&) = delete;
  ~GlobalRequest() { fail(); }
  const std::string &name() const { return name_; }
  // The request-specific data after the name and want_reply.
  std::span<const uint8_t> data() const { return data_; }
  // SSH_MSG_REQUEST_SUCCESS with optional response data.
  void succeed(std::span<const uint8_t> response = {});
  void fail();

 private:
  friend class SessionCore;
  explicit GlobalRequest(SessionCore &core) : core_(&core) {}
  void answer(std::vector<uint8_t> payload);
  SessionCore *core_;
  std::shared_ptr<SessionCore::ReplySlot> slot_;  // null when no reply is wanted
  bool pending_ = true;
  std::string name_;
  std::vector<uint8_t> data_;
};

// Loads an OpenSSH-format Ed25519 private key file. Refuses missing, unreadable, PEM,
// passphrase-protected and non-Ed25519 keys with a message that says what to do; `role` names
// the key in it ("key", "host key").
rt::Result<Ed25519PrivateKey> load_private_key(const std::string &path, const std::string &role);

}  // namespace alk::ssh
