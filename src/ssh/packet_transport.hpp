// The SSH transport layer (RFC 4253) as a sans-I/O state machine: version exchange, key
// exchange (initial and re-keys, either side may start one), NEWKEYS, strict kex, and the
// transport messages (IGNORE, DEBUG, UNIMPLEMENTED, DISCONNECT, EXT_INFO). Everything above it
// (user authentication, channels) reads and writes whole payloads through it.
//
// The caller owns the I/O: it reads socket bytes into input_space()/commit_input(), takes
// decrypted payloads from next_payload(), writes output() to the socket and drops what was
// written with consume_output(). Payloads are decrypted in place in the input buffer and outgoing
// packets are sealed in place in the output buffer: one copy per byte each way.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <memory>
#include <vector>

#include "ssh/kex.hpp"
#include "ssh/packet.hpp"
#include "stream/bytes.hpp"

namespace alk::ssh {

using Bytes = stream::Bytes;

struct TransportConfig {
  Role role = Role::Client;
  std::string version = "SSH-2.0-alknet";  // our identification string, without CR LF
  // Server: the Ed25519 host key (64-byte BoringSSL private key: seed || public) and its blob.
  std::array<uint8_t, 64> host_private{};
  std::vector<uint8_t> host_key_blob;
  // Client: decides whether the server's host key blob is acceptable (known_hosts, pinning).
  // Called once per key exchange, after the server proved it holds the key.
  std::function<bool(std::span<const uint8_t> host_key_blob)> accept_host_key;
  // Cipher names in preference order; empty = AES-GCM first when the CPU has AES instructions.
  std::vector<std::string> ciphers;
  // The binding of the TLS 1.3 / QUIC channel beneath, if any: offers the bound cipher (kex.hpp).
  std::optional<Binding> channel_binding;
  // Start a re-key after this many bytes in either direction since the last one.
  uint64_t rekey_bytes = uint64_t{1} << 30;
};

class PacketTransport {
 public:
  explicit PacketTransport(TransportConfig cfg);

  // Queues our identification string and first KEXINIT. Call once, before anything else.
  void start();
  // The configuration, adjustable until start() (e.g. the server's host key).
  TransportConfig& config() { return cfg_; }

  // Room to receive into (at least `min` bytes); then commit_input(n) for what arrived.
  std::span<uint8_t> input_space(size_t min = 64 * 1024);
  void commit_input(size_t n);

  // The next payload for the layer above (message number >= 5 other than EXT_INFO, or anything
  // we do not handle here), or nullopt when no whole packet is buffered. The span stays valid
  // until the next call to next_payload(), input_space() or commit_input(). Transport messages
  // are handled inside. After a fatal error it returns nullopt and failed() is true.
  std::optional<std::span<const uint8_t>> next_payload();

  // Sends one payload. During a key exchange it is held (in order) until NEWKEYS is sent.
  void send(std::span<const uint8_t> payload);
  // The zero-copy form: reserve room for a payload of up to n bytes, fill it, then finish with
  // the length used (default: all n), or cancel. Nothing else may be sent in between.
  std::span<uint8_t> begin_payload(size_t n);
  void finish_payload() { finish_payload(payload_len_); }
  void finish_payload(size_t used);
  void cancel_payload();

  // Bytes waiting to go out, and how to drop the part the socket took.
  std::span<const uint8_t> output() const { return {out_.data() + out_pos_, out_.size() - out_pos_}; }
  void consume_output(size_t n);
  // Hands every pending output byte to the caller by swapping buffers (no copy): `into` is
  // cleared and its capacity reused for what is sealed next. For writers that must keep the
  // bytes stable while an asynchronous send is in flight.
  void take_output(Bytes& into);
  size_t output_size() const { return out_.size() - out_pos_; }
  // Payloads sent during a key exchange, waiting for NEWKEYS (not in output() yet).
  size_t held_size() const { return held_.size(); }

  // Sends DISCONNECT (RFC 4253 §11.1) and marks the transport finished.
  void disconnect(uint32_t reason, std::string_view description);

  bool established() const { return !session_id_.empty(); }  // first key exchange done
  bool failed() const { return !error_.empty(); }
  const std::string& error() const { return error_; }
  std::span<const uint8_t> session_id() const { return session_id_; }
  const std::string& peer_version() const { return peer_version_; }
  const Negotiated& negotiated() const { return neg_; }
  uint64_t key_exchanges() const { return kex_count_; }

 private:
  enum class KexState { Idle, SentInit, AwaitEcdh, AwaitNewKeys };

  void fail(std::string why);
  bool take_version();
  void handle_transport(std::span<const uint8_t> payload);
  void send_kexinit();
  void on_kexinit(std::span<const uint8_t> payload);
  void on_ecdh_init(std::span<const uint8_t> payload);
  void on_ecdh_reply(std::span<const uint8_t> payload);
  void send_newkeys();
  void on_newkeys();
  void seal_now(std::span<const uint8_t> payload);
  void flush_held();
  void count_and_maybe_rekey(size_t bytes);

  TransportConfig cfg_;
  // Raw storage: a vector's per-byte construct/destroy loops survive in unoptimised and
  // instrumented builds and cost ~90% of a fuzz execution at 256 KiB.
  std::unique_ptr<uint8_t[]> in_;
  size_t in_cap_ = 0;
  size_t in_pos_ = 0;  // bytes before this were consumed
  size_t in_end_ = 0;  // bytes before this are valid
  Bytes out_;
  size_t out_pos_ = 0;
  Bytes held_;  // u32 length + payload, for payloads sent during a key exchange
  size_t payload_start_ = 0;   // begin_payload(): where the payload area starts (in out_ or held_)
  size_t payload_len_ = 0;
  bool payload_held_ = false;

  bool version_done_ = false;
  std::string peer_version_;
  std::string error_;
  bool finished_ = false;

  KexState kex_ = KexState::Idle;
  bool initial_ = true;
  bool we_sent_kexinit_ = false;
  bool skip_next_kex_packet_ = false;
  std::vector<uint8_t> our_kexinit_, peer_kexinit_;
  Negotiated neg_;
  X25519Key ecdh_;
  SessionKeys pending_keys_;
  std::vector<uint8_t> session_id_;
  PacketSealer sealer_;
  PacketOpener opener_;
  uint64_t bytes_since_kex_ = 0;
  uint64_t kex_count_ = 0;
  bool strict_ = false;
};

}  // namespace alk::ssh
