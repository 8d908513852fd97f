#include "ssh/session.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <type_traits>
#include <variant>

#include "runtime/reactor.hpp"
#include "ssh/connection.hpp"
#include "ssh/kex.hpp"
#include "ssh/keys.hpp"

namespace alk::ssh {

using namespace std::chrono_literals;

namespace {

// One read takes up to this much from the transport: a quarter of a megabyte per syscall
// instead of libssh's 4 KiB.
constexpr size_t kReadChunk = 256 * 1024;
// Unanswered handshake-phase messages we hold before calling the peer abusive.
constexpr size_t kMaxInbox = 64;
// Peer global requests waiting for our (ordered) answers.
constexpr size_t kMaxPendingReplies = 64;

// Channel receive chunks: 64 KiB each, at most 64 parked per thread (4 MiB) for reuse.
constexpr uint32_t kRxChunk = 64 * 1024;
constexpr size_t kRxPoolMax = 64;
thread_local std::vector<std::unique_ptr<uint8_t[]>> rx_pool;

std::unique_ptr<uint8_t[]> lease_chunk() {
  if (rx_pool.empty()) return std::make_unique_for_overwrite<uint8_t[]>(kRxChunk);
  auto c = std::move(rx_pool.back());
  rx_pool.pop_back();
  return c;
}

void return_chunk(std::unique_ptr<uint8_t[]> c) {
  if (rx_pool.size() < kRxPoolMax) rx_pool.push_back(std::move(c));
}

}  // namespace

SessionCore::SessionCore(std::unique_ptr<stream::Stream> transport, TransportConfig cfg)
    : transport_(std::move(transport)), wire_(std::move(cfg)) {
  wire_.config().channel_binding = transport_->channel_binding();
  if (int fd = transport_->native_fd(); fd >= 0) {
    // Every channel shares this one socket, so whatever waits unsent in its send buffer delays
    // every other channel's next packet: keep at most this much unsent in the kernel (the rest
    // stays in the source sockets, behind the channel windows).
    constexpr int kNotSentLowat = 128 * 1024;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &kNotSentLowat, sizeof kNotSentLowat);
  }
}

SessionCore::~SessionCore() {
  alive_ = false;
  for (auto &[id, c] : std::vector<std::pair<uint32_t, Channel *>>(channels_.begin(), channels_.end()))
    if (c) c->orphan();
  channels_.clear();
  if (!tasks_.empty()) {
    tasks_.cancel();
    rt::Reactor::current().run_until([this] { return tasks_.empty(); });
  }
  if (transport_) transport_->close();
}

void SessionCore::start() {
  if (started_) return;
  started_ = true;
  wire_.start();
  tasks_.spawn(reader());
  tasks_.spawn(writer());
  tasks_.spawn(ticker());
  kick();
}

void SessionCore::die(std::string why) {
  if (!alive_) return;
  alive_ = false;
  death_reason_ = std::move(why);
  for (auto &[id, c] : std::vector<std::pair<uint32_t, Channel *>>(channels_.begin(), channels_.end()))
    if (c) c->orphan();
  channels_.clear();
  for (auto &g : globals_) g->done.set();
  globals_.clear();
  progress_.set();
  flushed_.set();
  kick_.set();
  dead_.set();
}

void SessionCore::send(std::span<const uint8_t> payload) {
  if (!alive_) return;
  wire_.send(payload);
  kick();
}

rt::Task<void> SessionCore::reader() {
  while (alive_) {
    auto space = wire_.input_space(kReadChunk);
    ssize_t n = co_await transport_->read(std::as_writable_bytes(space.first(std::min(space.size(), kReadChunk))));
    if (n == -ECANCELED) co_return;
    if (n <= 0) {
      die(n == 0 ? "connection closed by peer" : "transport: " + std::string(std::strerror(int(-n))));
      break;
    }
    wire_.commit_input(size_t(n));
    while (alive_) {
      auto p = wire_.next_payload();
      if (!p) break;
      dispatch(*p);
    }
    flush_forwards();  // before the next read may move the input buffer
    if (wire_.failed() && alive_) {
      die(wire_.error());
      kick_.set();  // a DISCONNECT or UNIMPLEMENTED may still want out
      break;
    }
    kick();
    pulse(progress_);
  }
}

rt::Task<void> SessionCore::writer() {
  Bytes buf;
  while (true) {
    if (wire_.output_size() == 0) {
      if (!alive_) co_return;
      bool woke = co_await kick_.wait();
      kick_.reset();
      if (!woke) co_return;
      continue;
    }
    wire_.take_output(buf);
    in_flight_ = buf.size();
    ssize_t n = co_await transport_->write_owned(buf);
    in_flight_ = 0;
    if (n < 0) {
      if (n != -ECANCELED) die("transport: " + std::string(std::strerror(int(-n))));
      co_return;
    }
    pulse(flushed_);
  }
}

rt::Task<void> SessionCore::ticker() {
  while (alive_) {
    int r = co_await rt::sleep_for(1s);
    if (r < 0) co_return;
    pulse(progress_);
  }
}

rt::Task<int> SessionCore::wait_established(rt::Clock::time_point deadline) {
  while (!wire_.established()) {
    if (!alive_) co_return -ECONNRESET;
    auto left = deadline - rt::Clock::now();
    if (left <= rt::Duration::zero()) co_return -ETIMEDOUT;
    bool woke = co_await progress_.wait();
    if (!woke) co_return -ECANCELED;
  }
  co_return 0;
}

rt::Task<rt::Result<std::vector<uint8_t>>> SessionCore::next_message(rt::Clock::time_point deadline) {
  while (inbox_.empty()) {
    if (!alive_) co_return rt::Error{ECONNRESET, death_reason_};
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "timed out"};
    bool woke = co_await progress_.wait();  // pulsed per packet batch and once a second
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  auto m = std::move(inbox_.front());
  inbox_.pop_front();
  co_return m;
}

void SessionCore::set_authenticated() {
  authenticated_ = true;
  // Whatever the peer sent right behind its last auth message (OpenSSH's hostkeys-00 global
  // request comes in the same flight as USERAUTH_SUCCESS) is handled now, in order.
  auto queued = std::move(inbox_);
  inbox_.clear();
  for (auto &m : queued) {
    if (!alive_) break;
    dispatch(m);
  }
  flush_forwards();  // before `queued` goes
  kick();
}

void SessionCore::flush_forwards() {
  for (Channel *c : forwarding_) {
    c->listed_ = false;
    c->flush_forward();
  }
  forwarding_.clear();
}

void SessionCore::dispatch(std::span<const uint8_t> p) {
  const uint8_t type = p[0];
  if (!authenticated_) {
    if (inbox_.size() >= kMaxInbox) return die("too many unanswered messages during authentication");
    inbox_.emplace_back(p.begin(), p.end());
    return;
  }
  if (type < msg::kGlobalRequest) return;  // e.g. a late USERAUTH_REQUEST: ignored (RFC 4252 §5.1)
  dispatch_connection(p);
}

void SessionCore::dispatch_connection(std::span<const uint8_t> p) {
  std::string err;
  auto m = conn::decode(p, &err);
  if (!m) return die("protocol error: " + err);
  if (auto *g = std::get_if<conn::GlobalRequest>(&*m)) return on_global(std::move(*g));
  if (auto *o = std::get_if<conn::Open>(&*m)) return on_open(std::move(*o));
  if (auto *g = std::get_if<conn::GlobalReply>(&*m)) {
    if (globals_.empty()) return die("protocol error: reply to no global request");
    auto pending = globals_.front();
    globals_.pop_front();
    pending->result = g->success ? 1 : 0;
    pending->done.set();
    return;
  }
  const auto id = conn::recipient(*m);
  if (!id) return;  // outside the connection protocol: ignored
  auto it = channels_.find(*id);
  if (it == channels_.end()) return die("protocol error: message for unknown channel " + std::to_string(*id));
  Channel *c = it->second;
  if (!c) {
    // Closed on our side; only the peer's CLOSE matters now.
    if (std::holds_alternative<conn::Close>(*m)) channels_.erase(it);
    return;
  }
  if (auto *k = std::get_if<conn::OpenConfirmation>(&*m)) {
    if (c->open_state_ != 0) return die("protocol error: CHANNEL_OPEN_CONFIRMATION for an open channel");
    c->remote_id_ = k->sender;
    c->remote_window_ = k->window;
    c->remote_max_packet_ = std::clamp<uint32_t>(k->max_packet, 1, kMaxPayload - 64);
    c->open_state_ = 1;
    c->status_.set();
    c->tx_event_.set();
    return;
  }
  if (auto *f = std::get_if<conn::OpenFailure>(&*m)) {
    if (c->open_state_ != 0) return die("protocol error: CHANNEL_OPEN_FAILURE for an open channel");
    c->open_state_ = -1;
    c->refused_ = {f->reason, f->description.substr(0, 200)};
    channels_.erase(it);
    c->local_id_ = UINT32_MAX;
    c->remote_closed_ = true;
    c->status_.set();
    c->rx_event_.set();
    return;
  }
  if (c->open_state_ != 1) return die("protocol error: channel message before confirmation");
  std::visit(
      [&](auto &&v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, conn::WindowAdjust>) {
          c->remote_window_ = uint32_t(std::min<uint64_t>(uint64_t(c->remote_window_) + v.bytes, UINT32_MAX));
          c->tx_event_.set();
        } else if constexpr (std::is_same_v<T, conn::Data>) {
          if (v.data.size() > c->local_window_) return die("protocol error: peer exceeded the channel window");
          sizer_.data(*id, v.data.size());
          c->on_data(v.data);
        } else if constexpr (std::is_same_v<T, conn::ExtendedData>) {
          if (v.data.size() > c->local_window_) return die("protocol error: peer exceeded the channel window");
          // stderr-like data has no place in a tunnel: dropped, but its window is given back.
          c->local_window_ -= uint32_t(v.data.size());
          c->consumed_ += uint32_t(v.data.size());
        } else if constexpr (std::is_same_v<T, conn::Eof>) {
          c->eof_received_ = true;
          c->rx_event_.set();
        } else if constexpr (std::is_same_v<T, conn::Close>) {
          c->on_close();
        } else if constexpr (std::is_same_v<T, conn::Request>) {
          if (v.name == "exit-status") {
            if (auto status = conn::decode_exit_status(v.data)) {
              c->exit_status_ = int(std::min<uint32_t>(*status, 255));
              c->status_.set();
            }
          }
          if (v.want_reply && !c->close_sent_) send(conn::encode(conn::RequestReply{c->remote_id_, false}));
        }
        // RequestReply: we never ask for channel request replies.
      },
      *m);
}

void SessionCore::on_open(conn::Open o) {
  sizer_.opened();
  ChannelOpen op(*this, o.sender, o.window, std::clamp<uint32_t>(o.max_packet, 1, kMaxPayload - 64));
  op.type_ = o.type.substr(0, 64);
  if (o.type == "direct-tcpip" || o.type == "forwarded-tcpip") {
    auto e = conn::decode_tcpip(o.data);
    if (!e) return op.refuse(OpenFailure::ConnectFailed, "malformed request");
    op.dest_ = std::move(e->host);
    op.port_ = e->port;
    op.orig_ = std::move(e->orig_host);
    op.orig_port_ = e->orig_port;
    if (on_channel_open) return on_channel_open(std::move(op));
    return op.refuse(OpenFailure::Prohibited, "not allowed");
  }
  op.refuse(OpenFailure::UnknownType, "unknown channel type");
}

void SessionCore::on_global(conn::GlobalRequest m) {
  GlobalRequest g(*this);
  g.name_ = std::move(m.name);
  g.data_.assign(m.data.begin(), m.data.end());
  if (m.want_reply) {
    if (replies_.size() >= kMaxPendingReplies) return die("too many unanswered global requests");
    g.slot_ = std::make_shared<ReplySlot>();
    replies_.push_back(g.slot_);
  }
  if (on_global_request && (g.name_ == "tcpip-forward" || g.name_ == "cancel-tcpip-forward"))
    return on_global_request(std::move(g));
  // keepalive@openssh.com, hostkeys-00@openssh.com, ...: failure (the peer only wants an answer).
}

void SessionCore::flush_replies() {
  while (!replies_.empty() && replies_.front()->ready) {
    if (alive_) send(replies_.front()->payload);
    replies_.pop_front();
  }
}

uint32_t SessionCore::register_channel(Channel *c) {
  while (channels_.count(next_id_)) ++next_id_;
  uint32_t id = next_id_++;
  channels_[id] = c;
  return id;
}

void SessionCore::forget_channel(uint32_t local_id) {
  auto it = channels_.find(local_id);
  if (it == channels_.end()) return;
  it->second = nullptr;
}

rt::Task<rt::Result<std::unique_ptr<Channel>>> SessionCore::open_channel(std::string_view type,
                                                                         std::span<const uint8_t> extra,
                                                                         rt::Clock::time_point deadline, OpenRefused *refused) {
  if (!alive_) co_return rt::Error{ECONNRESET, "SSH session is down"};
  std::unique_ptr<Channel> ch(new Channel(*this));
  ch->open_state_ = 0;
  ch->local_id_ = register_channel(ch.get());
  const std::vector<uint8_t> m = conn::encode(conn::Open{std::string(type), ch->local_id_, kChannelWindow, kChannelMaxPacket, extra});
  sizer_.opened();
  send(m);
  while (ch->open_state_ == 0) {
    if (!alive_ || !ch->core_) co_return rt::Error{ECONNRESET, "SSH session lost"};
    auto left = deadline - rt::Clock::now();
    if (left <= rt::Duration::zero()) co_return rt::Error{ETIMEDOUT, "channel open timed out"};
    bool woke = co_await progress_.wait();  // pulsed per packet batch and once a second
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  if (ch->open_state_ < 0) {
    if (refused) *refused = ch->refused_;
    co_return rt::Error{int(ch->refused_.reason), ch->refused_.description};
  }
  co_return std::move(ch);
}

rt::Task<rt::Result<bool>> SessionCore::global_request(std::string_view name, std::span<const uint8_t> extra,
                                                       rt::Clock::time_point deadline) {
  if (!alive_) co_return rt::Error{ECONNRESET, "SSH session is down"};
  auto g = std::make_shared<PendingGlobal>();
  globals_.push_back(g);
  const std::vector<uint8_t> m = conn::encode(conn::GlobalRequest{std::string(name), true, extra});
  send(m);
  while (g->result < 0) {
    if (!alive_) co_return rt::Error{ECONNRESET, "SSH session lost"};
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "request timed out"};
    bool woke = co_await progress_.wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  co_return g->result == 1;
}

rt::Task<void> SessionCore::shutdown(const char *why) {
  if (alive_ && started_) {
    for (auto &[id, c] : std::vector<std::pair<uint32_t, Channel *>>(channels_.begin(), channels_.end()))
      if (c) c->orphan();
    channels_.clear();
    wire_.disconnect(11, "bye");  // SSH_DISCONNECT_BY_APPLICATION
    kick();
    // Let the writer deliver the DISCONNECT (and whatever was sealed before it), for at most
    // a second: a peer that stopped reading must not hold the shutdown. (Payloads held for a
    // key exchange in progress are dropped: the exchange cannot finish any more.)
    auto deadline = rt::Clock::now() + 1s;
    while (wire_.output_size() + in_flight_ > 0 && rt::Clock::now() < deadline && alive_) {
      int r = co_await rt::sleep_for(5ms);
      if (r == -ECANCELED) break;
    }
  }
  die(why);
  co_await tasks_.close();
}

// -- Channel ------------------------------------------------------------------------------

Channel::Channel(SessionCore &core) : core_(&core) {}

Channel::~Channel() {
  close();
  release_rx();
}

void Channel::release_rx() {
  for (auto &c : rx_) return_chunk(std::move(c.data));
  rx_.clear();
  rx_.shrink_to_fit();
  rx_bytes_ = 0;
}

void Channel::orphan() {
  flush_forward();  // what arrived before the session ended is still delivered
  core_ = nullptr;  // the session may be destroyed before this channel
  remote_closed_ = true;
  if (open_state_ == 0) open_state_ = -1;
  rx_event_.set();
  tx_event_.set();
  status_.set();
}

void Channel::on_data(std::span<const uint8_t> d) {
  local_window_ -= uint32_t(d.size());
  if (d.empty()) return;
  rx_bytes_ += d.size();
  if (fwd_ && rx_.empty() && core_) {
    // Nothing of ours waits to be read: the piece stays where it was decrypted and goes to the
    // relay's sink with the rest of this read batch, in one write, without a copy here.
    if (!listed_) {
      listed_ = true;
      core_->forwarding_.push_back(this);
    }
    pieces_[n_pieces_++] = std::as_bytes(d);
    if (n_pieces_ == kMaxPieces) flush_forward();
    return;
  }
  queue_rx(d);
  rx_event_.set();
}

void Channel::queue_rx(std::span<const uint8_t> d) {
  while (!d.empty()) {
    if (rx_.empty() || rx_.back().end == kRxChunk) rx_.push_back({lease_chunk(), 0, 0});
    auto &c = rx_.back();
    const size_t n = std::min<size_t>(d.size(), kRxChunk - c.end);
    std::memcpy(c.data.get() + c.end, d.data(), n);
    c.end += uint32_t(n);
    d = d.subspan(n);
  }
}

void Channel::forward_to(stream::Stream *sink, uint64_t *count) {
  flush_forward();
  fwd_ = sink;
  fwd_count_ = count;
}

void Channel::flush_forward() {
  if (n_pieces_ == 0) return;
  const std::span<const std::span<const std::byte>> pieces(pieces_.data(), std::exchange(n_pieces_, 0));
  ssize_t n = fwd_ ? fwd_->try_write(pieces) : -EOPNOTSUPP;
  if (n < 0) {
    if (n != -EAGAIN) fwd_ = nullptr;  // cannot, or failed: the relay's own write meets the error
    n = 0;
  }
  if (n > 0) {
    *fwd_count_ += size_t(n);
    took(size_t(n));
  }
  // What the sink did not take waits in rx_ like any received data, in order.
  size_t skip = size_t(n);
  for (auto p : pieces) {
    if (skip >= p.size()) {
      skip -= p.size();
      continue;
    }
    queue_rx({reinterpret_cast<const uint8_t *>(p.data()) + skip, p.size() - skip});
    skip = 0;
    rx_event_.set();
  }
}

void Channel::on_close() {
  remote_closed_ = true;
  rx_event_.set();
  tx_event_.set();
  status_.set();
  if (!close_sent_) send_close();
  if (core_) core_->channels_.erase(local_id_);
  local_id_ = UINT32_MAX;
}

void Channel::send_close() {
  if (close_sent_ || !core_) return;
  close_sent_ = true;
  core_->send(conn::encode(conn::Close{remote_id_}));
}

void Channel::close() {
  if (!core_) return;
  if (open_state_ == 1 && !close_sent_) send_close();
  if (local_id_ != UINT32_MAX) {
    if (remote_closed_ || open_state_ != 1)
      core_->channels_.erase(local_id_);
    else
      core_->forget_channel(local_id_);  // the id stays taken until the peer's CLOSE
  }
  local_id_ = UINT32_MAX;
  core_ = nullptr;
  fwd_ = nullptr;
  n_pieces_ = 0;  // dropped with the rest of what was received
  release_rx();
  rx_event_.set();
}

rt::Task<ssize_t> Channel::read(std::span<std::byte> buf) {
  forward_to(nullptr, nullptr);  // what read() copies out could be overtaken by forwarded data
  for (;;) {
    if (rx_bytes_ > 0) {
      // A copy of what peek() lends, chunk by chunk.
      size_t n = 0;
      for (auto lent = peek(); n < buf.size() && !lent.empty(); lent = peek()) {
        const size_t take = std::min(buf.size() - n, lent.size());
        std::memcpy(buf.data() + n, lent.data(), take);
        consume(take);
        n += take;
      }
      co_return ssize_t(n);
    }
    if (eof_received_ || remote_closed_) co_return 0;
    if (!core_ || !core_->alive()) co_return -ECONNRESET;
    rx_event_.reset();
    bool woke = co_await rx_event_.wait();
    if (!woke) co_return -ECANCELED;
  }
}

void Channel::took(size_t n) {
  rx_bytes_ -= n;
  consumed_ += uint32_t(n);
  // Grant the window back once half of it was read (OpenSSH's rule): few adjusts, and
  // the peer never stalls on a full window while we have taken its data.
  if (core_ && core_->alive() && !close_sent_ && !remote_closed_ && consumed_ >= kChannelWindow / 2) {
    const std::vector<uint8_t> adj = conn::encode(conn::WindowAdjust{remote_id_, consumed_});
    local_window_ += consumed_;
    consumed_ = 0;
    core_->send(adj);
  }
}

std::span<const std::byte> Channel::peek() {
  if (rx_.empty()) return {};
  const auto &c = rx_.front();
  return {reinterpret_cast<const std::byte *>(c.data.get()) + c.begin, size_t(c.end - c.begin)};
}

void Channel::consume(size_t n) {
  // The chunks stay in place while lent (only consume, read and close release them; the
  // relay calls close only after it has ended).
  if (rx_.empty()) return;
  auto &c = rx_.front();
  n = std::min<size_t>(n, c.end - c.begin);
  c.begin += uint32_t(n);
  if (c.begin == c.end) {  // drained: an idle channel holds no chunk
    return_chunk(std::move(c.data));
    rx_.erase(rx_.begin());
  }
  took(n);
}

rt::Task<int> Channel::wait_readable() {
  for (;;) {
    if (rx_bytes_ > 0 || eof_received_ || remote_closed_ || !core_ || !core_->alive()) co_return 0;
    rx_event_.reset();
    bool woke = co_await rx_event_.wait();
    if (!woke) co_return -ECANCELED;
  }
}

rt::Task<int> Channel::wait_writable() {
  for (;;) {
    if (!core_ || !core_->alive()) co_return -ECONNRESET;
    if (remote_closed_ || eof_sent_ || close_sent_) co_return -EPIPE;
    if (core_->pending_output() < kOutputHighWater) co_return 0;
    core_->kick();
    bool woke = co_await core_->flushed().wait();
    if (!woke) co_return -ECANCELED;
  }
}

rt::Task<ssize_t> Channel::write(std::span<const std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    const int r = co_await wait_writable();
    if (r < 0) co_return r;
    if (remote_window_ == 0) {
      tx_event_.reset();
      bool woke = co_await tx_event_.wait();
      if (!woke) co_return -ECANCELED;
      continue;
    }
    auto room = write_room(buf.size() - done);  // every reason for none was waited out above
    if (room.empty()) co_return -ECONNRESET;   // but the transport's own failure
    std::memcpy(room.data(), buf.data() + done, room.size());
    commit_room(room.size());
    done += room.size();
  }
  co_return ssize_t(done);
}

std::span<std::byte> Channel::write_room(size_t max) {
  if (!core_ || !core_->alive() || remote_closed_ || eof_sent_ || close_sent_ || remote_window_ == 0 ||
      core_->pending_output() >= kOutputHighWater || room_)
    return {};  // write() knows how to wait for each of these
  const size_t n = std::min({max, size_t(remote_window_), size_t(remote_max_packet_), core_->sizer_.limit()});
  auto area = core_->wire().begin_payload(9 + n);
  if (area.size() != 9 + n) {  // the transport failed
    core_->wire().cancel_payload();
    return {};
  }
  room_ = area.data();
  room_[0] = msg::kChannelData;
  put_u32(room_ + 1, remote_id_);
  return std::as_writable_bytes(area.subspan(9));
}

void Channel::commit_room(size_t n) {
  if (!room_) return;
  uint8_t *p = std::exchange(room_, nullptr);
  if (n == 0) {
    core_->wire().cancel_payload();
    return;
  }
  put_u32(p + 5, uint32_t(n));
  core_->wire().finish_payload(9 + n);
  core_->sizer_.data(local_id_, n);
  core_->kick();
  remote_window_ -= uint32_t(n);
}

rt::Task<int> Channel::shutdown_write() {
  if (!core_ || !core_->alive()) co_return -ENOTCONN;
  if (!eof_sent_ && !close_sent_ && open_state_ == 1) {
    eof_sent_ = true;
    core_->send(conn::encode(conn::Eof{remote_id_}));
  }
  co_return 0;
}

// -- incoming opens and global requests -----------------------------------------------------

ChannelOpen::ChannelOpen(SessionCore &core, uint32_t peer_id, uint32_t window, uint32_t max_packet)
    : core_(&core), peer_id_(peer_id), window_(window), max_packet_(max_packet) {}

ChannelOpen::ChannelOpen(ChannelOpen &&o) noexcept
    : core_(o.core_),
      pending_(std::exchange(o.pending_, false)),
      peer_id_(o.peer_id_),
      window_(o.window_),
      max_packet_(o.max_packet_),
      type_(std::move(o.type_)),
      dest_(std::move(o.dest_)),
      orig_(std::move(o.orig_)),
      port_(o.port_),
      orig_port_(o.orig_port_) {}

std::unique_ptr<Channel> ChannelOpen::accept() {
  if (!pending_) return nullptr;
  pending_ = false;
  if (!core_->alive()) return nullptr;
  std::unique_ptr<Channel> ch(new Channel(*core_));
  ch->remote_id_ = peer_id_;
  ch->remote_window_ = window_;
  ch->remote_max_packet_ = max_packet_;
  ch->local_id_ = core_->register_channel(ch.get());
  core_->send(conn::encode(conn::OpenConfirmation{peer_id_, ch->local_id_, kChannelWindow, kChannelMaxPacket}));
  return ch;
}

void ChannelOpen::refuse(OpenFailure reason, std::string_view description) {
  if (!pending_) return;
  pending_ = false;
  if (!core_->alive()) return;
  core_->send(conn::encode(conn::OpenFailure{peer_id_, uint32_t(reason), std::string(description)}));
}

std::unique_ptr<Channel> ChannelOpen::answer(int rep) {
  const bool status_mode = orig_ == kStatusOriginator;
  if (rep != 0 && !status_mode) {
    // OpenSSH's wording, so any client (ours included) can map the text to a SOCKS reply.
    switch (rep) {
      case 2: refuse(OpenFailure::Prohibited, "administratively prohibited"); break;
      case 3: refuse(OpenFailure::ConnectFailed, "Network is unreachable"); break;
      case 4: refuse(OpenFailure::ConnectFailed, "No route to host"); break;
      case 5: refuse(OpenFailure::ConnectFailed, "Connection refused"); break;
      case 6: refuse(OpenFailure::ConnectFailed, "Connection timed out"); break;
      case 7: refuse(OpenFailure::UnknownType, "not supported"); break;
      default: refuse(OpenFailure::ConnectFailed, "connect failed"); break;
    }
    return nullptr;
  }
  auto ch = accept();
  if (!ch || !status_mode) return ch;
  const std::vector<uint8_t> status = conn::encode_exit_status(uint32_t(rep));
  core_->send(conn::encode(conn::Request{ch->remote_id_, "exit-status", false, status}));
  if (rep != 0) return nullptr;  // the channel closes as ch goes
  return ch;
}

GlobalRequest::GlobalRequest(GlobalRequest &&o) noexcept
    : core_(o.core_),
      slot_(std::move(o.slot_)),
      pending_(std::exchange(o.pending_, false)),
      name_(std::move(o.name_)),
      data_(std::move(o.data_)) {}

void GlobalRequest::answer(std::vector<uint8_t> payload) {
  if (!pending_) return;
  pending_ = false;
  if (!slot_) return;
  slot_->payload = std::move(payload);
  slot_->ready = true;
  core_->flush_replies();
}

void GlobalRequest::succeed(std::span<const uint8_t> response) {
  std::vector<uint8_t> m{msg::kRequestSuccess};
  m.insert(m.end(), response.begin(), response.end());
  answer(std::move(m));
}

void GlobalRequest::fail() { answer({msg::kRequestFailure}); }

// -- keys ----------------------------------------------------------------------------------

rt::Result<Ed25519PrivateKey> load_private_key(const std::string &path, const std::string &role) {
  std::string err;
  auto text = read_small_file(path, 64 * 1024, &err);
  if (!text) return rt::Error{ENOENT, err};  // "cannot read PATH: reason"
  switch (sniff_private_key(*text)) {
    case PrivateKeyFormat::OpenSSH:
      break;
    case PrivateKeyFormat::Pem:
      return rt::Error{EINVAL, path + " is a PEM private key; alknet needs an OpenSSH-format " + role +
                                   " (convert a copy with: ssh-keygen -p -f " + path + ")"};
    default:
      return rt::Error{EINVAL, path + " is not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----)"};
  }
  auto key = parse_openssh_ed25519_private(*text, &err);
  if (!key) return rt::Error{EINVAL, "cannot load " + role + " " + path + ": " + err};
  return std::move(*key);
}

}  // namespace alk::ssh
