#include "ssh/packet_transport.hpp"

#include <openssl/rand.h>

#include <cstring>

#include "ssh/keys.hpp"

namespace alk::ssh {

namespace {

// RFC 4253 §4.2: lines before the server's version line are allowed (a client must skip them);
// bound them so a peer cannot feed us text forever.
constexpr size_t kMaxVersionLine = 255;
constexpr size_t kMaxPreVersionBytes = 16 * 1024;
// Input buffer: one maximum packet plus room for the socket read that delivered it.
constexpr size_t kMinInputCapacity = kMaxPacketLength + 4 + 64;

bool is_kex_message(uint8_t t) { return t >= msg::kKexInit && t <= 49; }

}  // namespace

PacketTransport::PacketTransport(TransportConfig cfg) : cfg_(std::move(cfg)) {}

void PacketTransport::fail(std::string why) {
  if (error_.empty()) error_ = std::move(why);
  finished_ = true;
}

void PacketTransport::start() {
  const std::string line = cfg_.version + "\r\n";
  out_.insert(out_.end(), line.begin(), line.end());
  send_kexinit();
}

std::span<uint8_t> PacketTransport::input_space(size_t min) {
  // Move the unconsumed tail to the front when that makes room; grow only up to what one
  // packet plus one read needs.
  if (in_pos_ > 0 && (in_cap_ - in_end_ < min || in_pos_ == in_end_)) {
    std::memmove(in_.get(), in_.get() + in_pos_, in_end_ - in_pos_);
    in_end_ -= in_pos_;
    in_pos_ = 0;
  }
  if (in_cap_ - in_end_ < min) {
    const size_t cap = std::max(in_end_ + min, kMinInputCapacity);
    auto bigger = std::make_unique_for_overwrite<uint8_t[]>(cap);
    if (in_end_ > 0) std::memcpy(bigger.get(), in_.get(), in_end_);
    in_ = std::move(bigger);
    in_cap_ = cap;
  }
  return {in_.get() + in_end_, in_cap_ - in_end_};
}

void PacketTransport::commit_input(size_t n) { in_end_ += std::min(n, in_cap_ - in_end_); }

bool PacketTransport::take_version() {
  while (true) {
    const size_t avail = in_end_ - in_pos_;
    if (avail == 0) return false;  // (memchr on an empty, never-allocated buffer is UB)
    const uint8_t* begin = in_.get() + in_pos_;
    const void* nl = std::memchr(begin, '\n', avail);
    if (!nl) {
      if (avail > kMaxVersionLine) fail("identification line too long");
      return false;
    }
    size_t len = size_t(static_cast<const uint8_t*>(nl) - begin);
    std::string line(reinterpret_cast<const char*>(begin), len);
    in_pos_ += len + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.size() > kMaxVersionLine) {
      fail("identification line too long");
      return false;
    }
    if (line.starts_with("SSH-")) {
      if (!line.starts_with("SSH-2.0-") && !line.starts_with("SSH-1.99-")) {
        fail("peer does not speak SSH protocol 2.0");
        return false;
      }
      peer_version_ = std::move(line);
      version_done_ = true;
      return true;
    }
    // Only a server may send other lines first; a client must open with its version.
    if (cfg_.role == Role::Server || in_pos_ > kMaxPreVersionBytes) {
      fail("peer did not send an SSH identification string");
      return false;
    }
  }
}

std::optional<std::span<const uint8_t>> PacketTransport::next_payload() {
  while (!finished_) {
    if (!version_done_ && !take_version()) return std::nullopt;
    auto r = opener_.open(std::span<uint8_t>(in_.get() + in_pos_, in_end_ - in_pos_));
    if (r.status == Opened::NeedMore) return std::nullopt;
    if (r.status == Opened::Error) {
      fail(std::string(r.error));
      return std::nullopt;
    }
    in_pos_ += r.consumed;
    if (r.payload.empty()) {
      fail("empty packet");
      return std::nullopt;
    }
    count_and_maybe_rekey(r.consumed);
    const uint8_t type = r.payload[0];
    // Strict kex: during the first exchange only kex messages may arrive; anything else (an
    // IGNORE injected before NEWKEYS included) means someone is tampering with the stream.
    if (!established() && strict_ && !is_kex_message(type)) {
      fail("unexpected message during strict key exchange");
      return std::nullopt;
    }
    if (type < msg::kServiceRequest || type == msg::kExtInfo || is_kex_message(type)) {
      handle_transport(r.payload);
      continue;
    }
    if (!established()) {
      fail("message before key exchange completed");
      return std::nullopt;
    }
    if (kex_ == KexState::AwaitNewKeys || kex_ == KexState::AwaitEcdh) {
      // The peer has sent its KEXINIT, so until its NEWKEYS only kex messages may come.
      fail("non-kex message during key exchange");
      return std::nullopt;
    }
    return r.payload;
  }
  return std::nullopt;
}

void PacketTransport::handle_transport(std::span<const uint8_t> p) {
  const uint8_t type = p[0];
  if (is_kex_message(type) && skip_next_kex_packet_ && type != msg::kKexInit && type != msg::kNewKeys) {
    skip_next_kex_packet_ = false;  // the peer's wrong guess (RFC 4253 §7)
    return;
  }
  switch (type) {
    case msg::kDisconnect: {
      WireReader r(p.subspan(1));
      uint32_t code = 0;
      std::string text;
      r.u32(code);
      r.string(text);
      std::string clean;
      for (char c : text.substr(0, 200)) clean += (c >= ' ' && c < 127) ? c : '?';
      fail("peer disconnected: " + (clean.empty() ? "reason " + std::to_string(code) : clean));
      return;
    }
    case msg::kIgnore:
    case msg::kDebug:
    case msg::kUnimplemented:
    case msg::kExtInfo:
      return;
    case msg::kKexInit:
      on_kexinit(p);
      return;
    case msg::kKexEcdhInit:
      if (cfg_.role != Role::Server || kex_ != KexState::AwaitEcdh) return fail("unexpected KEX_ECDH_INIT");
      on_ecdh_init(p);
      return;
    case msg::kKexEcdhReply:
      if (cfg_.role != Role::Client || kex_ != KexState::AwaitEcdh) return fail("unexpected KEX_ECDH_REPLY");
      on_ecdh_reply(p);
      return;
    case msg::kNewKeys:
      if (kex_ != KexState::AwaitNewKeys) return fail("unexpected NEWKEYS");
      on_newkeys();
      return;
    default: {
      if (strict_ && !established()) return fail("unexpected message during strict key exchange");
      // RFC 4253 §11.4: answer unknown transport messages with their sequence number.
      std::vector<uint8_t> reply{msg::kUnimplemented};
      wire_put_u32(reply, opener_.sequence() - 1);
      send(reply);
      return;
    }
  }
}

void PacketTransport::send_kexinit() {
  std::array<uint8_t, 16> cookie{};
  RAND_bytes(cookie.data(), cookie.size());
  our_kexinit_ = encode_kexinit(our_kexinit(cfg_.role, initial_, cookie, cfg_.ciphers, cfg_.channel_binding));
  // State first: sealing counts bytes, and the count must not start another re-key.
  we_sent_kexinit_ = true;
  if (kex_ == KexState::Idle) kex_ = KexState::SentInit;
  seal_now(our_kexinit_);
}

void PacketTransport::on_kexinit(std::span<const uint8_t> p) {
  if (kex_ == KexState::AwaitEcdh || kex_ == KexState::AwaitNewKeys) return fail("KEXINIT during key exchange");
  if (initial_ && strict_) return fail("second KEXINIT during strict key exchange");
  auto peer = parse_kexinit(p);
  if (!peer) return fail("malformed KEXINIT");
  if (!we_sent_kexinit_) send_kexinit();
  peer_kexinit_.assign(p.begin(), p.end());
  auto ours = parse_kexinit(our_kexinit_);
  std::string why;
  const bool client = cfg_.role == Role::Client;
  auto n = negotiate(client ? *ours : *peer, client ? *peer : *ours, initial_, &why);
  if (!n) return fail(why);
  neg_ = *n;
  if (initial_) {
    strict_ = n->strict;
    // Strict kex: KEXINIT must have been the very first packet the peer sent.
    if (strict_ && opener_.sequence() != 1) return fail("strict key exchange: KEXINIT was not the first packet");
  }
  skip_next_kex_packet_ = client ? n->server_guessed_wrong : n->client_guessed_wrong;
  kex_ = KexState::AwaitEcdh;
  if (client) {
    ecdh_ = X25519Key::generate();
    std::vector<uint8_t> init{msg::kKexEcdhInit};
    wire_put_string(init, std::span<const uint8_t>(ecdh_.pub));
    seal_now(init);
  }
}

void PacketTransport::on_ecdh_init(std::span<const uint8_t> p) {
  WireReader r(p.subspan(1));
  std::span<const uint8_t> q_c;
  if (!r.bytes(q_c) || r.remaining() != 0) return fail("malformed KEX_ECDH_INIT");
  ecdh_ = X25519Key::generate();
  auto shared = x25519_shared(ecdh_, q_c);
  if (!shared) return fail("bad client key exchange value");
  KexHashInput hi;
  hi.client_version = peer_version_;
  hi.server_version = cfg_.version;
  hi.client_kexinit = peer_kexinit_;
  hi.server_kexinit = our_kexinit_;
  hi.host_key_blob = cfg_.host_key_blob;
  hi.client_pub = q_c;
  hi.server_pub = ecdh_.pub;
  hi.shared_secret = *shared;
  auto h = exchange_hash(hi);
  if (session_id_.empty()) session_id_.assign(h.begin(), h.end());
  pending_keys_ = derive_keys(*shared, h, session_id_, neg_.c2s, neg_.s2c);
  std::vector<uint8_t> reply{msg::kKexEcdhReply};
  wire_put_string(reply, std::span<const uint8_t>(cfg_.host_key_blob));
  wire_put_string(reply, std::span<const uint8_t>(ecdh_.pub));
  wire_put_string(reply, ed25519_signature_blob(h, cfg_.host_private));
  seal_now(reply);
  send_newkeys();
}

void PacketTransport::on_ecdh_reply(std::span<const uint8_t> p) {
  WireReader r(p.subspan(1));
  std::span<const uint8_t> k_s, q_s, sig;
  if (!r.bytes(k_s) || !r.bytes(q_s) || !r.bytes(sig) || r.remaining() != 0) return fail("malformed KEX_ECDH_REPLY");
  auto shared = x25519_shared(ecdh_, q_s);
  if (!shared) return fail("bad server key exchange value");
  KexHashInput hi;
  hi.client_version = cfg_.version;
  hi.server_version = peer_version_;
  hi.client_kexinit = our_kexinit_;
  hi.server_kexinit = peer_kexinit_;
  hi.host_key_blob = k_s;
  hi.client_pub = ecdh_.pub;
  hi.server_pub = q_s;
  hi.shared_secret = *shared;
  auto h = exchange_hash(hi);
  if (!ed25519_verify_blob(sig, h, k_s)) return fail("server host key signature does not verify");
  if (!cfg_.accept_host_key || !cfg_.accept_host_key(k_s)) return fail("server host key not accepted");
  if (session_id_.empty()) session_id_.assign(h.begin(), h.end());
  pending_keys_ = derive_keys(*shared, h, session_id_, neg_.c2s, neg_.s2c);
  send_newkeys();
}

void PacketTransport::send_newkeys() {
  const uint8_t nk = msg::kNewKeys;
  seal_now(std::span<const uint8_t>(&nk, 1));
  const auto& keys = cfg_.role == Role::Client ? pending_keys_.c2s : pending_keys_.s2c;
  if (!sealer_.set_keys(keys)) return fail("cannot set up the cipher");
  if (strict_) sealer_.reset_sequence();
  kex_ = KexState::AwaitNewKeys;
  flush_held();
}

void PacketTransport::on_newkeys() {
  const auto& keys = cfg_.role == Role::Client ? pending_keys_.s2c : pending_keys_.c2s;
  if (!opener_.set_keys(keys)) return fail("cannot set up the cipher");
  if (strict_) opener_.reset_sequence();
  const bool first = initial_;
  kex_ = KexState::Idle;
  initial_ = false;
  we_sent_kexinit_ = false;
  bytes_since_kex_ = 0;
  ++kex_count_;
  pending_keys_ = {};
  if (first && cfg_.role == Role::Server && neg_.peer_wants_ext_info) {
    // RFC 8308: tell the client which signature algorithms we verify for user auth.
    std::vector<uint8_t> ext{msg::kExtInfo};
    wire_put_u32(ext, 1);
    wire_put_string(ext, std::string_view("server-sig-algs"));
    wire_put_string(ext, std::string_view("ssh-ed25519"));
    send(ext);
  }
}

void PacketTransport::seal_now(std::span<const uint8_t> payload) {
  if (payload.size() > kMaxPayload) return fail("payload too large");
  const size_t start = out_.size();
  out_.resize(start + sealer_.sealed_size(payload.size()));
  if (!payload.empty()) std::memcpy(out_.data() + start + kPacketHeader, payload.data(), payload.size());
  count_and_maybe_rekey(sealer_.seal_in_place(std::span<uint8_t>(out_).subspan(start), payload.size()));
}

void PacketTransport::send(std::span<const uint8_t> payload) {
  auto area = begin_payload(payload.size());
  if (area.size() == payload.size() && !payload.empty()) std::memcpy(area.data(), payload.data(), payload.size());
  finish_payload();
}

std::span<uint8_t> PacketTransport::begin_payload(size_t n) {
  // While our KEXINIT is out and NEWKEYS not yet sent, only kex messages may go (RFC 4253 §7.1).
  if (n > kMaxPayload) {
    fail("payload too large");
    n = 0;
  }
  payload_held_ = kex_ == KexState::SentInit || kex_ == KexState::AwaitEcdh;
  payload_len_ = n;
  if (payload_held_) {
    const size_t at = held_.size();
    held_.resize(at + 4 + n);
    put_u32(held_.data() + at, uint32_t(n));
    payload_start_ = at + 4;
    return {held_.data() + payload_start_, n};
  }
  payload_start_ = out_.size();
  out_.resize(out_.size() + sealer_.sealed_size(n));
  return {out_.data() + payload_start_ + kPacketHeader, n};
}

void PacketTransport::finish_payload(size_t used) {
  used = std::min(used, payload_len_);
  if (payload_held_) {
    if (used != payload_len_) {
      put_u32(held_.data() + payload_start_ - 4, uint32_t(used));
      held_.resize(payload_start_ + used);
    }
    return;
  }
  if (used != payload_len_) out_.resize(payload_start_ + sealer_.sealed_size(used));
  const size_t sealed = sealer_.seal_in_place(std::span<uint8_t>(out_).subspan(payload_start_), used);
  count_and_maybe_rekey(sealed);
}

void PacketTransport::cancel_payload() {
  if (payload_held_)
    held_.resize(payload_start_ - 4);
  else
    out_.resize(payload_start_);
}

void PacketTransport::flush_held() {
  size_t pos = 0;
  Bytes held;
  held.swap(held_);
  while (pos + 4 <= held.size()) {
    const uint32_t n = get_u32(held.data() + pos);
    seal_now(std::span<const uint8_t>(held.data() + pos + 4, n));
    pos += 4 + n;
  }
}

void PacketTransport::consume_output(size_t n) {
  out_pos_ += std::min(n, out_.size() - out_pos_);
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
  }
}

void PacketTransport::take_output(Bytes& into) {
  into.clear();
  if (out_pos_ > 0) out_.erase(out_.begin(), out_.begin() + std::ptrdiff_t(out_pos_));
  out_pos_ = 0;
  into.swap(out_);
}

void PacketTransport::disconnect(uint32_t reason, std::string_view description) {
  if (finished_) return;
  std::vector<uint8_t> d{msg::kDisconnect};
  wire_put_u32(d, reason);
  wire_put_string(d, description);
  wire_put_string(d, std::string_view(""));
  if (kex_ == KexState::Idle || kex_ == KexState::AwaitNewKeys) seal_now(d);
  finished_ = true;
}

void PacketTransport::count_and_maybe_rekey(size_t bytes) {
  bytes_since_kex_ += bytes;
  if (established() && kex_ == KexState::Idle && bytes_since_kex_ >= cfg_.rekey_bytes) send_kexinit();
}

}  // namespace alk::ssh
