#include "transport/quic/transport.hpp"

#include <netinet/in.h>
#include <netinet/udp.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hkdf.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/event.hpp"
#include "runtime/scope.hpp"
#include "transport/quic/crypto.hpp"
#include "transport/tls/tls.hpp"

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

namespace alk::quic {

namespace {

constexpr size_t kCidLen = 16;  // every CID we issue has this length: short headers carry no length
constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint64_t kStreamWindow = 8 * kMiB;
constexpr uint64_t kConnWindow = 16 * kMiB;
constexpr uint64_t kMaxStreamWindow = 16 * kMiB;
constexpr uint64_t kMaxConnWindow = 32 * kMiB;
// write() suspends once this much is queued but not yet acknowledged: about one stream window,
constexpr size_t kTxLimit = 8 * kMiB;
// or once this much of it has not been handed to ngtcp2 yet (what TCP_NOTSENT_LOWAT does on
// tcp). Without it a session with a few bulk channels keeps megabytes unsent: ngtcp2's copy
// into packets reads them back from beyond the cache, and a reply queues behind them. 128 KiB
// like TCP_NOTSENT_LOWAT on tcp: a request during a bulk download on loopback, p50 2.18-2.50 ms
// vs 2.61-4.01 with 256 KiB (4 interleaved rounds), bulk rate the same through the noise.
constexpr size_t kUnsentLimit = 128 * 1024;
// After close(), how long unacknowledged data may still be delivered before CONNECTION_CLOSE.
constexpr rt::Duration kLinger = 3s;
// One GSO send: at most 64 segments and under the 64 KiB UDP payload limit.
constexpr size_t kBatchBytes = 65000;
constexpr size_t kMaxBatchPackets = 64;
constexpr size_t kRecvBufSize = 65536;
// Provided receive buffers: header + source address + room for one cmsg + one datagram (or
// one GRO run) each. Our transport parameter max_udp_payload_size keeps peers' datagrams
// within a slot.
constexpr size_t kRxCmsgSpace = CMSG_SPACE(sizeof(int));
constexpr size_t kRxSlotHeader = sizeof(io_uring_recvmsg_out) + sizeof(sockaddr_storage) + kRxCmsgSpace;
// Receive offload (UDP_GRO): the kernel hands over a run of one sender's equal-sized datagrams
// as one buffer of up to 64 KiB (a GSO batch that crossed loopback or a veth intact, or what
// the NIC's GRO merged) and says the segment size in a cmsg; we split it again. One recvmsg
// then brings up to 45 network-size datagrams instead of one.
constexpr size_t kGroBytes = 65535;
// Datagrams on paths through a network: ngtcp2's PMTUD finds the size (it probes up to 1444).
constexpr uint64_t kMaxUdpPayload = 2048 - kRxSlotHeader;
// Same-host paths (loopback) have the route MTU the kernel reports and nothing in between,
// so there we send datagrams up to this size at once (RFC 9000 §14.2: the kernel's PMTU)
// instead of ~1.4 KB ones: per-packet costs (ngtcp2, AEAD setup, skb handling) shrink
// with the packet count.
// (Measured on loopback, 2 cores, bulk upload through the SSH layer: 1444-byte datagrams
// ~1.6 Gbit/s at ~4.5 s CPU per GB and side; 16 KB ~2.2 Gbit/s at 2.4 s; 65000 bytes ~4 Gbit/s
// at ~1.9 s.) One datagram per send then (kBatchBytes), so no GSO is needed.
constexpr uint64_t kLocalUdpPayload = 65000;
// The provided-buffer ring of one endpoint: at most this many bytes, at most 256 slots.
// Slots are only touched as far as datagrams fill them (a server's ring is sized for
// same-host clients, but remote ones only ever touch the first page of a slot).
constexpr size_t kRxRingBytes = 5 * 1024 * 1024;
int g_next_bgid = 0;
constexpr int kSocketBuf = 4 * 1024 * 1024;
constexpr ngtcp2_tstamp kNever = UINT64_MAX;

size_t g_live_endpoints = 0;
uint64_t g_gro_runs = 0;

ngtcp2_tstamp now_ts() {
  return static_cast<ngtcp2_tstamp>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(rt::Clock::now().time_since_epoch()).count());
}

uint64_t ns(rt::Duration d) { return d.count() > 0 ? static_cast<uint64_t>(d.count()) : 0; }

ngtcp2_cid random_cid() {
  ngtcp2_cid cid;
  uint8_t buf[kCidLen];
  RAND_bytes(buf, sizeof buf);
  ngtcp2_cid_init(&cid, buf, sizeof buf);
  return cid;
}

std::string cid_key(const uint8_t *data, size_t len) { return std::string(reinterpret_cast<const char *>(data), len); }
std::string cid_key(const ngtcp2_cid &cid) { return cid_key(cid.data, cid.datalen); }

bool same_ip(const net::Endpoint &a, const net::Endpoint &b) {
  if (a.family() != b.family()) return false;
  if (a.family() == AF_INET)
    return reinterpret_cast<const sockaddr_in *>(&a.ss)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in *>(&b.ss)->sin_addr.s_addr;
  if (a.family() == AF_INET6)
    return std::memcmp(&reinterpret_cast<const sockaddr_in6 *>(&a.ss)->sin6_addr,
                       &reinterpret_cast<const sockaddr_in6 *>(&b.ss)->sin6_addr, sizeof(in6_addr)) == 0;
  return false;
}

bool is_loopback(const net::Endpoint &e) {
  if (e.family() == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in *>(&e.ss)->sin_addr.s_addr) >> 24) == 127;
  if (e.family() == AF_INET6) {
    const in6_addr &a = reinterpret_cast<const sockaddr_in6 *>(&e.ss)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
    return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
  }
  return false;
}

// For a UDP socket connected to |remote|: the datagram payload size to use when the path
// never leaves this host (a loopback address, or one of our own addresses, which the kernel
// routes over lo), from the route MTU the kernel knows. 0 for paths through a network.
// The segment size of a GRO run (every datagram but the last has it), or 0: one datagram.
size_t gro_segment_size(io_uring_recvmsg_out *o, msghdr &m) {
  for (cmsghdr *cm = io_uring_recvmsg_cmsg_firsthdr(o, &m); cm != nullptr; cm = io_uring_recvmsg_cmsg_nexthdr(o, &m, cm)) {
    if (cm->cmsg_level != SOL_UDP || cm->cmsg_type != UDP_GRO || cm->cmsg_len < CMSG_LEN(sizeof(int))) continue;
    int v = 0;
    std::memcpy(&v, CMSG_DATA(cm), sizeof v);
    return v > 0 ? size_t(v) : 0;
  }
  return 0;
}

uint64_t same_host_payload(int connected_fd, const net::Endpoint &remote) {
  const net::Endpoint local = net::Endpoint::of_socket_local(connected_fd);
  if (!is_loopback(remote) && !same_ip(local, remote)) return 0;
  int mtu = 0;
  socklen_t len = sizeof mtu;
  const bool v6 = remote.family() == AF_INET6;
  if (::getsockopt(connected_fd, v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_MTU : IP_MTU, &mtu, &len) != 0) return 0;
  const int headers = v6 ? 40 + 8 : 20 + 8;
  if (mtu - headers <= static_cast<int>(kMaxUdpPayload)) return 0;  // nothing to gain over PMTUD
  return std::min<uint64_t>({static_cast<uint64_t>(mtu - headers), kLocalUdpPayload, kBatchBytes});
}

// The same for an unconnected socket's peer: asks the kernel through a throwaway connected
// socket (connect() on UDP only looks up the route; nothing is sent).
uint64_t same_host_payload(const net::Endpoint &remote) {
  if (remote.family() != AF_INET && remote.family() != AF_INET6) return 0;
  rt::UniqueFd fd(::socket(remote.family(), SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP));
  if (!fd || ::connect(fd.get(), remote.sa(), remote.len) != 0) return 0;
  return same_host_payload(fd.get(), remote);
}

std::string ssl_error_text() {
  const uint32_t e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Bytes in blocks whose storage never moves, so ngtcp2 may keep pointing into sent but
// unacknowledged data (it retransmits from our buffer). Offsets are absolute stream offsets.
// A block is filled up to its capacity and never grown; written bytes are copied into 64 KiB
// blocks, or a whole buffer becomes a block of its own (give(): no copy).
class ByteQueue {
 public:
  static constexpr size_t kBlock = 64 * 1024;

  uint64_t begin() const { return begin_; }
  uint64_t end() const { return end_; }
  size_t size() const { return static_cast<size_t>(end_ - begin_); }
  bool empty() const { return end_ == begin_; }

  void append(const uint8_t *p, size_t n) {
    while (n > 0) {
      if (blocks_.empty() || blocks_.back().size() == blocks_.back().capacity()) blocks_.push_back(new_block(kBlock));
      stream::Bytes &b = blocks_.back();
      const size_t k = std::min(n, b.capacity() - b.size());
      const size_t at = b.size();
      b.resize(at + k);  // within capacity: the storage stays where it is
      std::memcpy(b.data() + at, p, k);
      p += k;
      n -= k;
      end_ += k;
    }
  }

  // Takes buf's bytes by taking its storage; buf gets an emptied block to fill next (a spare
  // one, else a new one as big). A small buffer is copied instead: a block per few bytes
  // would cost more.
  void give(stream::Bytes &buf) {
    if (buf.size() < kBlock / 4) {
      append(buf.data(), buf.size());
      buf.clear();
      return;
    }
    if (!blocks_.empty() && blocks_.back().empty()) {  // the kept one: no empty block in between
      release(std::move(blocks_.back()));
      blocks_.pop_back();
      head_ = 0;
    }
    const size_t n = buf.size();
    end_ += n;
    blocks_.push_back(std::move(buf));
    buf = largest_spare();
    if (buf.capacity() < n) buf.reserve(n);  // its next filling then grows it without copying
  }

  // Forgets every byte before absolute offset |upto|.
  void drop_until(uint64_t upto) {
    upto = std::min(upto, end_);
    if (upto <= begin_) return;
    head_ += static_cast<size_t>(upto - begin_);
    begin_ = upto;
    while (!blocks_.empty()) {
      const size_t blen = blocks_.front().size();
      if (head_ < blen) break;
      if (blocks_.size() == 1) {  // all of it: keep it for the next append
        blocks_.front().clear();
        head_ = 0;
        break;
      }
      head_ -= blen;
      release(std::move(blocks_.front()));
      blocks_.pop_front();
    }
  }

  // Up to maxv spans covering [from, end()).
  size_t gather(uint64_t from, ngtcp2_vec *v, size_t maxv) const {
    if (from >= end_ || from < begin_) return 0;
    size_t off = static_cast<size_t>(from - begin_) + head_;  // into blocks_[idx]
    size_t idx = 0;
    while (off >= blocks_[idx].size()) off -= blocks_[idx++].size();
    size_t cnt = 0;
    for (; idx < blocks_.size() && cnt < maxv; ++idx, off = 0) {
      v[cnt].base = const_cast<uint8_t *>(blocks_[idx].data()) + off;
      v[cnt].len = blocks_[idx].size() - off;
      ++cnt;
    }
    return cnt;
  }

  size_t read(uint8_t *out, size_t n) {
    ngtcp2_vec v[8];
    const size_t cnt = gather(begin_, v, 8);
    size_t done = 0;
    for (size_t i = 0; i < cnt && done < n; ++i) {
      const size_t k = std::min(n - done, v[i].len);
      std::memcpy(out + done, v[i].base, k);
      done += k;
    }
    drop_until(begin_ + done);
    return done;
  }

 private:
  // Emptied blocks are kept (at most kSpares) rather than freed and allocated again; new
  // ones are not zero-filled (make_unique would memset each one: 2.5% of a bulk sender's
  // CPU). The largest spare goes first, so a given buffer comes back as big as it went.
  static constexpr size_t kSpares = 2;
  std::vector<stream::Bytes>::iterator first_spare_holding(size_t capacity) {
    return std::lower_bound(spares_.begin(), spares_.end(), capacity,
                            [](const stream::Bytes &x, size_t c) { return x.capacity() < c; });
  }
  stream::Bytes new_block(size_t capacity) {  // the smallest spare that holds capacity
    auto at = first_spare_holding(capacity);
    stream::Bytes b;
    if (at != spares_.end()) {
      b = std::move(*at);
      spares_.erase(at);
    } else {
      b.reserve(capacity);
    }
    return b;
  }
  stream::Bytes largest_spare() {
    stream::Bytes b;
    if (!spares_.empty()) {
      b = std::move(spares_.back());
      spares_.pop_back();
    }
    return b;
  }
  void release(stream::Bytes b) {
    b.clear();
    spares_.insert(first_spare_holding(b.capacity()), std::move(b));
    if (spares_.size() > kSpares) spares_.erase(spares_.begin());  // the smallest
  }

  std::vector<stream::Bytes> spares_;  // by capacity, ascending
  std::deque<stream::Bytes> blocks_;   // none empty but maybe the last
  size_t head_ = 0;                     // bytes of blocks_.front() already dropped
  uint64_t begin_ = 0, end_ = 0;
};

}  // namespace

class Connection;

// Owner of one UDP socket and the coroutines that drive every connection on it. The
// coroutines hold a shared_ptr to it, so it lives exactly as long as they run.
class Core : public std::enable_shared_from_this<Core> {
 public:
  // |max_rx_payload|: the largest datagram any connection on this socket lets its peer send.
  Core(rt::UniqueFd fd, bool connected, uint64_t max_rx_payload) : fd_(std::move(fd)), connected_(connected) {
    RAND_bytes(reset_secret_.data(), reset_secret_.size());
    size_ring(static_cast<size_t>(max_rx_payload));
    local_ = net::Endpoint::of_socket_local(fd_.get());
    ++g_live_endpoints;
  }
  virtual ~Core() {
    if (bgid_ >= 0) io_uring_unregister_buf_ring(rt::Reactor::current().ring(), bgid_);
    --g_live_endpoints;
  }
  Core(const Core &) = delete;
  Core &operator=(const Core &) = delete;

  void start() {
    recv_cqe_.core = this;
    // GRO only with the ring: its slots are sized for a whole run (the fallback reads one
    // datagram at a time and would see a run as one oversized datagram).
    const int one = 1;
    gro_ = ::setsockopt(fd_.get(), SOL_UDP, UDP_GRO, &one, sizeof one) == 0;
    if (gro_) size_ring(std::max(rx_slot_size_ - kRxSlotHeader, kGroBytes));
    if (setup_buf_ring()) {
      tasks_.spawn(recv_loop(shared_from_this()));
    } else {
      const int zero = 0;
      if (gro_) (void)::setsockopt(fd_.get(), SOL_UDP, UDP_GRO, &zero, sizeof zero);
      gro_ = false;
      tasks_.spawn(recv_loop_single(shared_from_this()));
    }
    tasks_.spawn(send_loop(shared_from_this()));
    tasks_.spawn(timer_loop(shared_from_this()));
  }
  // Non-blocking: wakes every loop; each ends once nothing of the kernel's points into us.
  void stop_loops() {
    if (stopping_) return;
    stopping_ = true;
    if (recv_armed_) rt::Reactor::current().cancel(&recv_cqe_);
    if (sleeping_recv_ != nullptr) rt::Reactor::current().cancel(sleeping_recv_);
    if (sleeping_ != nullptr) rt::Reactor::current().cancel(sleeping_);
    sleeping_ = nullptr;
    recv_ev_.set();
    send_ev_.set();
    timer_ev_.set();
  }
  rt::Scope &tasks() { return tasks_; }
  const net::Endpoint &local() const { return local_; }
  std::span<const uint8_t> reset_secret() const { return reset_secret_; }
  // A secret that survives restarts, so that clients of a previous run get stateless resets
  // they can verify (their tokens came from the same secret) and reconnect at once.
  void derive_reset_secret(std::span<const uint8_t> ikm) {
    static constexpr uint8_t kInfo[] = "alknet quic stateless reset v1";
    (void)HKDF(reset_secret_.data(), reset_secret_.size(), EVP_sha256(), ikm.data(), ikm.size(), nullptr, 0, kInfo,
               sizeof kInfo - 1);
  }

  void want_send(Connection &c);
  void update_timer(Connection &c);
  void remove_timer(Connection &c);
  // Best-effort immediate datagram for teardown paths that cannot wait (CONNECTION_CLOSE):
  // MSG_DONTWAIT, so it never blocks the reactor.
  void send_now(const uint8_t *data, size_t len, const ngtcp2_addr &to) {
    msghdr msg{};
    iovec iov{const_cast<uint8_t *>(data), len};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!connected_) {
      msg.msg_name = to.addr;
      msg.msg_namelen = to.addrlen;
    }
    (void)::sendmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  }

  virtual void on_datagram(std::span<const uint8_t> pkt, const net::Endpoint &from) = 0;
  virtual void on_conn_dead(Connection &c) = 0;
  virtual void on_conn_ready(Connection &) {}
  virtual void register_cid(const ngtcp2_cid &, Connection &) {}
  virtual void unregister_cid(const ngtcp2_cid &) {}

 protected:
  rt::UniqueFd fd_;
  bool connected_;
  bool stopping_ = false;

 private:
  // Multishot recvmsg into a provided-buffer ring: one SQE receives datagram after datagram
  // in arrival order, and every datagram that arrived during a reactor turn is handled in
  // one go (so their ACKs coalesce) before the send loop runs.
  struct RecvCompletion final : rt::Completion {
    Core *core = nullptr;
    void complete(int32_t res, uint32_t flags) override { core->on_recv_cqe(res, flags); }
  };
  void size_ring(size_t max_payload) {
    rx_slot_size_ = (max_payload + kRxSlotHeader + 63) & ~size_t{63};
    rx_slots_ = 256;
    while (rx_slots_ > 16 && rx_slots_ * rx_slot_size_ > kRxRingBytes) rx_slots_ /= 2;
  }
  bool setup_buf_ring();
  void arm_recv();
  void on_recv_cqe(int32_t res, uint32_t flags);
  void give_back(uint16_t bid);
  static rt::Task<void> recv_loop(std::shared_ptr<Core> self);
  static rt::Task<void> recv_loop_single(std::shared_ptr<Core> self);
  static rt::Task<void> send_loop(std::shared_ptr<Core> self);
  static rt::Task<void> timer_loop(std::shared_ptr<Core> self);
  rt::Task<void> flush(std::shared_ptr<Connection> c);
  rt::Task<void> send_batch(const uint8_t *data, size_t len, size_t gso_size, const sockaddr_storage &to,
                            socklen_t tolen);

  net::Endpoint local_;
  std::array<uint8_t, 32> reset_secret_{};
  RecvCompletion recv_cqe_;
  int bgid_ = -1;
  size_t rx_slot_size_ = 0;
  unsigned rx_slots_ = 0;  // power of two
  struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
  };
  std::unique_ptr<io_uring_buf_ring, FreeDeleter> buf_ring_;
  std::unique_ptr<uint8_t[]> rx_bufs_;
  msghdr recv_msg_{};
  bool recv_armed_ = false;
  int recv_error_ = 0;
  std::deque<std::pair<uint16_t, int32_t>> rx_done_;  // buffer id, CQE result
  rt::Event recv_ev_;
  rt::Completion *sleeping_recv_ = nullptr;  // the single-shot fallback's pending recvmsg
  bool gso_ = true;
  bool gro_ = false;
  std::deque<std::shared_ptr<Connection>> send_q_;
  rt::Event send_ev_;
  std::set<std::pair<ngtcp2_tstamp, Connection *>> timers_;
  rt::Event timer_ev_;
  rt::SleepOp *sleeping_ = nullptr;
  ngtcp2_tstamp sleep_deadline_ = kNever;
  std::unique_ptr<uint8_t[]> txbuf_ = std::make_unique_for_overwrite<uint8_t[]>(kBatchBytes + NGTCP2_MAX_UDP_PAYLOAD_SIZE);
  rt::Scope tasks_;  // last member: nothing above may be used by a task after it is gone
};

// One QUIC connection carrying one bidirectional stream. Passive: the core's loops feed it
// datagrams, timer expiries and write opportunities.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Core *core, bool server) : core_(core), server_(server) {
    ref_.get_conn = [](ConnRef *r) { return static_cast<Connection *>(r->user_data)->conn_; };
    ref_.user_data = this;
    ngtcp2_connection_close_error_default(&ccerr_);
  }
  ~Connection() {
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
  }
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  bool init_client(const QuicClientConfig &cfg, SSL_CTX *ctx, const net::Endpoint &local,
                   const net::Endpoint &remote, const std::string &name);
  bool init_server(const QuicServerConfig &cfg, SSL_CTX *ctx, const ngtcp2_pkt_hd &hd, const net::Endpoint &local,
                   const net::Endpoint &remote, ngtcp2_cid &scid_out);

  void on_datagram(std::span<const uint8_t> pkt, const net::Endpoint &from);
  void expire(ngtcp2_tstamp now);
  // One packet into dest (0 = nothing to send now), or a fatal ngtcp2 error.
  ngtcp2_ssize write_one(uint8_t *dest, size_t destlen, ngtcp2_path_storage &ps, ngtcp2_tstamp ts,
                         bool &stream_blocked);
  void handle_error(int liberr);
  void fail(int err, bool send_close, std::string text);
  void close();
  ngtcp2_tstamp deadline() const {
    ngtcp2_tstamp t = ngtcp2_conn_get_expiry(conn_);
    if (!ready_) t = std::min(t, setup_deadline_);
    if (closing_) t = std::min(t, linger_deadline_);
    return t;
  }
  bool linger_done() const { return closing_ && tx_.empty(); }
  size_t unsent() const { return static_cast<size_t>(tx_.end() - sent_); }
  // The send queue is under both its limits: a writer waiting on tx_ev_ may go on.
  bool tx_room() const { return tx_.size() < kTxLimit && unsent() < kUnsentLimit; }

  // Client: opens the stream once the handshake is done and announces it with an empty
  // STREAM frame, so the server can accept it before either side has data.
  bool open_stream() {
    if (ngtcp2_conn_open_bidi_stream(conn_, &sid_, nullptr) != 0) return false;
    announce_ = true;
    ready_ = true;
    if (core_ != nullptr) {
      core_->want_send(*this);
      core_->update_timer(*this);
    }
    return true;
  }

  void maybe_ready() {
    if (!server_ || ready_ || sid_ < 0 || !handshake_done_) return;
    ready_ = true;
    if (core_ != nullptr) core_->on_conn_ready(*this);
  }

  // Stream side, used by QuicStream.
  void consumed(size_t n) {
    if (dead_ || sid_ < 0) return;
    ngtcp2_conn_extend_max_stream_offset(conn_, sid_, n);
    ngtcp2_conn_extend_max_offset(conn_, n);
    if (core_ != nullptr) core_->want_send(*this);
  }

  Core *core_;
  ngtcp2_conn *conn_ = nullptr;
  bssl::UniquePtr<SSL> ssl_;
  ConnRef ref_{};
  uint64_t local_payload_ = 0;  // same-host path: datagram size both ways (0 = ngtcp2's PMTUD)
  net::Endpoint local_, remote_;
  bool server_;
  bool handshake_done_ = false, ready_ = false, dead_ = false, closing_ = false;
  int error_ = 0;  // -errno once dead
  std::string error_text_;
  ngtcp2_tstamp setup_deadline_ = kNever, linger_deadline_ = kNever, timer_key_ = kNever;
  bool send_queued_ = false;
  ngtcp2_connection_close_error ccerr_{};
  std::vector<ngtcp2_cid> cids_;  // server: every CID registered for us in the core's map

  int64_t sid_ = -1;
  bool announce_ = false;
  ByteQueue rx_;
  std::span<uint8_t> rx_direct_;  // the buffer of a read() waiting for data, if any
  size_t rx_direct_len_ = 0;      // bytes already delivered into it (all before rx_'s)
  bool rx_fin_ = false, rx_reset_ = false;
  ByteQueue tx_;  // written but not yet acknowledged
  uint64_t sent_ = 0;
  bool fin_requested_ = false, fin_sent_ = false, tx_reset_ = false;
  rt::Event rx_ev_, tx_ev_, state_ev_;

 private:
  void fill_params(ngtcp2_settings &s, ngtcp2_transport_params &p, rt::Duration idle, rt::Duration hs, int cc,
                   ngtcp2_tstamp now);
  ngtcp2_callbacks callbacks();
};

// ---------------------------------------------------------------------------------
// ngtcp2 callbacks (user_data = Connection*).

namespace {

Connection *self_of(void *user_data) { return static_cast<Connection *>(user_data); }

int cb_recv_stream_data(ngtcp2_conn *, uint32_t flags, int64_t stream_id, uint64_t, const uint8_t *data,
                        size_t datalen, void *user_data, void *) {
  auto *c = self_of(user_data);
  if (stream_id != c->sid_) return 0;
  // A reader waiting with an empty queue gets the bytes straight into its buffer (one copy
  // instead of two); what does not fit, and everything after it, queues in order.
  if (datalen > 0 && c->rx_.empty() && c->rx_direct_len_ < c->rx_direct_.size()) {  // (a FIN may come with no data)
    const size_t k = std::min(datalen, c->rx_direct_.size() - c->rx_direct_len_);
    std::memcpy(c->rx_direct_.data() + c->rx_direct_len_, data, k);
    c->rx_direct_len_ += k;
    data += k;
    datalen -= k;
  }
  if (datalen > 0) c->rx_.append(data, datalen);
  if (flags & NGTCP2_STREAM_DATA_FLAG_FIN) c->rx_fin_ = true;
  c->rx_ev_.set();
  return 0;
}

int cb_acked_stream_data_offset(ngtcp2_conn *, int64_t stream_id, uint64_t offset, uint64_t datalen,
                                void *user_data, void *) {
  auto *c = self_of(user_data);
  if (stream_id != c->sid_) return 0;
  // ngtcp2 reports the contiguously acknowledged prefix, so everything before it is free.
  c->tx_.drop_until(offset + datalen);
  if (c->tx_room()) c->tx_ev_.set();
  if (c->linger_done() && c->core_ != nullptr) c->core_->want_send(*c);
  return 0;
}

int cb_stream_open(ngtcp2_conn *, int64_t stream_id, void *user_data) {
  auto *c = self_of(user_data);
  // Only the client's first bidirectional stream is ours (the server allows just one).
  if (c->server_ && c->sid_ < 0 && ngtcp2_is_bidi_stream(stream_id) && (stream_id & 1) == 0) {
    c->sid_ = stream_id;
    c->maybe_ready();
  }
  return 0;
}

int cb_stream_close(ngtcp2_conn *, uint32_t, int64_t stream_id, uint64_t, void *user_data, void *) {
  auto *c = self_of(user_data);
  if (stream_id != c->sid_) return 0;
  if (!c->rx_fin_) c->rx_reset_ = true;
  if (!c->fin_sent_) c->tx_reset_ = true;
  c->rx_ev_.set();
  c->tx_ev_.set();
  return 0;
}

int cb_stream_reset(ngtcp2_conn *, int64_t stream_id, uint64_t, uint64_t, void *user_data, void *) {
  auto *c = self_of(user_data);
  if (stream_id != c->sid_) return 0;
  c->rx_reset_ = true;
  c->rx_ev_.set();
  return 0;
}

int cb_stream_stop_sending(ngtcp2_conn *, int64_t stream_id, uint64_t, void *user_data, void *) {
  auto *c = self_of(user_data);
  if (stream_id != c->sid_) return 0;
  c->tx_reset_ = true;
  c->tx_ev_.set();
  return 0;
}

int cb_extend_max_stream_data(ngtcp2_conn *, int64_t, uint64_t, void *user_data, void *) {
  auto *c = self_of(user_data);
  if (c->core_ != nullptr) c->core_->want_send(*c);
  return 0;
}

int cb_handshake_completed(ngtcp2_conn *, void *user_data) {
  auto *c = self_of(user_data);
  c->handshake_done_ = true;
  c->state_ev_.set();
  c->maybe_ready();
  return 0;
}

int cb_get_new_connection_id(ngtcp2_conn *, ngtcp2_cid *cid, uint8_t *token, size_t, void *user_data) {
  auto *c = self_of(user_data);
  if (c->core_ == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
  *cid = random_cid();
  if (!generate_stateless_reset_token(std::span<uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN>(token, 16),
                                      c->core_->reset_secret(), *cid))
    return NGTCP2_ERR_CALLBACK_FAILURE;
  c->core_->register_cid(*cid, *c);
  return 0;
}

int cb_remove_connection_id(ngtcp2_conn *, const ngtcp2_cid *cid, void *user_data) {
  auto *c = self_of(user_data);
  if (c->core_ != nullptr) c->core_->unregister_cid(*cid);
  return 0;
}

}  // namespace

ngtcp2_callbacks Connection::callbacks() {
  ngtcp2_callbacks cb{};
  if (server_) set_server_crypto_callbacks(cb);
  else set_client_crypto_callbacks(cb);
  cb.rand = rand_cb;
  cb.get_new_connection_id = cb_get_new_connection_id;
  cb.remove_connection_id = cb_remove_connection_id;
  cb.recv_stream_data = cb_recv_stream_data;
  cb.acked_stream_data_offset = cb_acked_stream_data_offset;
  cb.stream_open = cb_stream_open;
  cb.stream_close = cb_stream_close;
  cb.stream_reset = cb_stream_reset;
  cb.stream_stop_sending = cb_stream_stop_sending;
  cb.extend_max_stream_data = cb_extend_max_stream_data;
  cb.handshake_completed = cb_handshake_completed;
  return cb;
}

void Connection::fill_params(ngtcp2_settings &s, ngtcp2_transport_params &p, rt::Duration idle, rt::Duration hs,
                             int cc, ngtcp2_tstamp now) {
  ngtcp2_settings_default(&s);
  s.initial_ts = now;
  s.cc_algo = static_cast<ngtcp2_cc_algo>(cc);
  s.max_window = kMaxConnWindow;
  s.max_stream_window = kMaxStreamWindow;
  if (ns(hs) > 0) s.handshake_timeout = ns(hs);
  if (local_payload_ > 0) {
    s.max_tx_udp_payload_size = local_payload_;
    s.no_tx_udp_payload_size_shaping = 1;  // full size at once: the kernel knows this path's MTU
    s.no_pmtud = 1;
  }
  ngtcp2_transport_params_default(&p);
  p.initial_max_stream_data_bidi_local = kStreamWindow;
  p.initial_max_stream_data_bidi_remote = kStreamWindow;
  p.initial_max_stream_data_uni = 0;
  p.initial_max_data = kConnWindow;
  p.initial_max_streams_bidi = server_ ? 1 : 0;  // the one stream, always opened by the client
  p.initial_max_streams_uni = 0;
  p.max_idle_timeout = ns(idle);
  p.max_udp_payload_size = local_payload_ > 0 ? local_payload_ : kMaxUdpPayload;
  setup_deadline_ = now + (ns(hs) > 0 ? ns(hs) : 10 * NGTCP2_SECONDS);
}

bool Connection::init_client(const QuicClientConfig &cfg, SSL_CTX *ctx, const net::Endpoint &local,
                             const net::Endpoint &remote, const std::string &name) {
  local_ = local;
  remote_ = remote;
  const ngtcp2_tstamp now = now_ts();
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  fill_params(s, p, cfg.idle_timeout, cfg.handshake_timeout, cfg.cc_algo, now);
  const auto cb = callbacks();
  const ngtcp2_cid dcid = random_cid(), scid = random_cid();
  ngtcp2_path path{{const_cast<sockaddr *>(local_.sa()), local_.len},
                   {const_cast<sockaddr *>(remote_.sa()), remote_.len},
                   nullptr};
  if (ngtcp2_conn_client_new(&conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &s, &p, nullptr, this) != 0) {
    error_text_ = "ngtcp2_conn_client_new failed";
    return false;
  }
  ssl_.reset(SSL_new(ctx));
  if (!ssl_) return false;
  SSL_set_app_data(ssl_.get(), &ref_);
  if (!setup_client_session(ssl_.get(), name)) {
    error_text_ = "bad TLS server name: " + name;
    return false;
  }
  ngtcp2_conn_set_tls_native_handle(conn_, ssl_.get());
  if (ns(cfg.keepalive) > 0) ngtcp2_conn_set_keep_alive_timeout(conn_, ns(cfg.keepalive));
  return true;
}

bool Connection::init_server(const QuicServerConfig &cfg, SSL_CTX *ctx, const ngtcp2_pkt_hd &hd,
                             const net::Endpoint &local, const net::Endpoint &remote, ngtcp2_cid &scid_out) {
  local_ = local;
  remote_ = remote;
  const ngtcp2_tstamp now = now_ts();
  ngtcp2_settings s;
  ngtcp2_transport_params p;
  fill_params(s, p, cfg.idle_timeout, cfg.handshake_timeout, cfg.cc_algo, now);
  p.original_dcid = hd.dcid;
  p.disable_active_migration = 1;
  scid_out = random_cid();
  p.stateless_reset_token_present = 1;
  if (!generate_stateless_reset_token(p.stateless_reset_token, core_->reset_secret(), scid_out)) return false;
  const auto cb = callbacks();
  ngtcp2_path path{{const_cast<sockaddr *>(local_.sa()), local_.len},
                   {const_cast<sockaddr *>(remote_.sa()), remote_.len},
                   nullptr};
  if (ngtcp2_conn_server_new(&conn_, &hd.scid, &scid_out, &path, hd.version, &cb, &s, &p, nullptr, this) != 0)
    return false;
  ssl_.reset(SSL_new(ctx));
  if (!ssl_) return false;
  SSL_set_app_data(ssl_.get(), &ref_);
  if (!setup_server_session(ssl_.get())) return false;
  ngtcp2_conn_set_tls_native_handle(conn_, ssl_.get());
  if (ns(cfg.keepalive) > 0) ngtcp2_conn_set_keep_alive_timeout(conn_, ns(cfg.keepalive));
  return true;
}

void Connection::on_datagram(std::span<const uint8_t> pkt, const net::Endpoint &from) {
  if (dead_) return;
  ngtcp2_path path{{const_cast<sockaddr *>(local_.sa()), local_.len},
                   {const_cast<sockaddr *>(from.sa()), from.len},
                   nullptr};
  const int rv = ngtcp2_conn_read_pkt(conn_, &path, nullptr, pkt.data(), pkt.size(), now_ts());
  if (rv != 0) {
    handle_error(rv);
    return;
  }
  if (core_ != nullptr) core_->want_send(*this);
}

void Connection::expire(ngtcp2_tstamp now) {
  if (dead_) return;
  if (closing_ && now >= linger_deadline_) {
    fail(-ECONNABORTED, true, "closed");
    return;
  }
  if (!ready_ && now >= setup_deadline_) {
    fail(-ETIMEDOUT, true, "QUIC handshake timed out");
    return;
  }
  const int rv = ngtcp2_conn_handle_expiry(conn_, now);
  if (rv != 0) handle_error(rv);
}

void Connection::handle_error(int liberr) {
  switch (liberr) {
    case NGTCP2_ERR_IDLE_CLOSE:
      fail(-ETIMEDOUT, false, "QUIC idle timeout");
      return;
    case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
      ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr_, liberr, nullptr, 0);
      fail(-ETIMEDOUT, true, "QUIC handshake timed out");
      return;
    case NGTCP2_ERR_DRAINING:
      fail(-ECONNRESET, false, "connection closed by peer");
      return;
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:
      fail(-ECONNABORTED, false, "connection dropped");
      return;
    case NGTCP2_ERR_CRYPTO: {
      const uint8_t alert = ngtcp2_conn_get_tls_alert(conn_);
      ngtcp2_connection_close_error_set_transport_error_tls_alert(&ccerr_, alert, nullptr, 0);
      std::string text = "TLS handshake failed";
      const long vr = ssl_ ? SSL_get_verify_result(ssl_.get()) : X509_V_OK;
      if (vr != X509_V_OK) {
        text = std::string("certificate verify failed: ") + X509_verify_cert_error_string(vr);
      } else if (alert != 0) {
        text += std::string(" (alert ") + SSL_alert_desc_string_long(alert) + ")";
      }
      fail(-EPROTO, true, text);
      return;
    }
    default:
      ngtcp2_connection_close_error_set_transport_error_liberr(&ccerr_, liberr, nullptr, 0);
      fail(-EPROTO, true, std::string("QUIC error: ") + ngtcp2_strerror(liberr));
      return;
  }
}

void Connection::fail(int err, bool send_close, std::string text) {
  if (dead_) return;
  auto keep = shared_from_this();  // the core may drop its reference below
  dead_ = true;
  error_ = err;
  error_text_ = std::move(text);
  if (send_close && core_ != nullptr && conn_ != nullptr && !ngtcp2_conn_is_in_closing_period(conn_) &&
      !ngtcp2_conn_is_in_draining_period(conn_)) {
    std::array<uint8_t, NGTCP2_MAX_UDP_PAYLOAD_SIZE> buf;
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    const ngtcp2_ssize n =
        ngtcp2_conn_write_connection_close(conn_, &ps.path, &pi, buf.data(), buf.size(), &ccerr_, now_ts());
    if (n > 0) core_->send_now(buf.data(), static_cast<size_t>(n), ps.path.remote);
  }
  rx_ev_.set();
  tx_ev_.set();
  state_ev_.set();
  if (core_ != nullptr) {
    Core *core = core_;
    core->on_conn_dead(*this);
    core_ = nullptr;
  }
}

void Connection::close() {
  if (dead_ || closing_) return;
  if (!tx_.empty() && core_ != nullptr && handshake_done_) {
    // Like TCP's close(): what was written still gets delivered, for a bounded time.
    closing_ = true;
    linger_deadline_ = now_ts() + ns(kLinger);
    core_->update_timer(*this);
    core_->want_send(*this);
    return;
  }
  ngtcp2_connection_close_error_set_application_error(&ccerr_, 0, nullptr, 0);
  fail(-ECONNABORTED, true, "closed");
}

ngtcp2_ssize Connection::write_one(uint8_t *dest, size_t destlen, ngtcp2_path_storage &ps, ngtcp2_tstamp ts,
                                   bool &stream_blocked) {
  for (;;) {
    ngtcp2_vec vec[16];
    size_t cnt = 0;
    int64_t sid = -1;
    uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_NONE;
    const bool fin_pending = fin_requested_ && !fin_sent_;
    if (sid_ >= 0 && !stream_blocked && !tx_reset_ && (sent_ < tx_.end() || fin_pending || announce_)) {
      sid = sid_;
      cnt = tx_.gather(sent_, vec, 16);
      uint64_t len = 0;
      for (size_t i = 0; i < cnt; ++i) len += vec[i].len;
      if (fin_pending && sent_ + len == tx_.end()) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
    }
    ngtcp2_ssize ndatalen = -1;
    ngtcp2_pkt_info pi{};
    const ngtcp2_ssize n =
        ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, dest, destlen, &ndatalen, flags, sid, vec, cnt, ts);
    if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) {
      stream_blocked = true;
      continue;
    }
    if (n < 0) return n;
    if (ndatalen >= 0) {
      sent_ += static_cast<uint64_t>(ndatalen);
      if (ndatalen > 0 && tx_room()) tx_ev_.set();
      announce_ = false;
      if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && sent_ == tx_.end()) fin_sent_ = true;
    }
    return n;
  }
}

// ---------------------------------------------------------------------------------
// Core loops.

void Core::want_send(Connection &c) {
  if (c.send_queued_ || c.dead_ || stopping_) return;
  c.send_queued_ = true;
  send_q_.push_back(c.shared_from_this());
  send_ev_.set();
}

void Core::remove_timer(Connection &c) {
  if (c.timer_key_ != kNever) timers_.erase({c.timer_key_, &c});
  c.timer_key_ = kNever;
}

void Core::update_timer(Connection &c) {
  if (c.dead_) {
    remove_timer(c);
    return;
  }
  const ngtcp2_tstamp t = c.deadline();
  if (t == c.timer_key_) return;
  remove_timer(c);
  if (t == kNever) return;
  c.timer_key_ = t;
  timers_.insert({t, &c});
  if (t < sleep_deadline_) {
    if (sleeping_ != nullptr) {
      // Wake the timer early; it recomputes the earliest deadline.
      rt::Reactor::current().cancel(sleeping_);
      sleeping_ = nullptr;
    }
    sleep_deadline_ = t;
    timer_ev_.set();
  }
}

// Fallback for kernels without provided-buffer rings: one recvmsg at a time.
rt::Task<void> Core::recv_loop_single(std::shared_ptr<Core> self) {
  auto buf = std::make_unique<uint8_t[]>(kRecvBufSize);
  sockaddr_storage from{};
  iovec iov{buf.get(), kRecvBufSize};
  unsigned budget = 0;
  for (;;) {
    msghdr msg{};
    msg.msg_name = &from;
    msg.msg_namelen = sizeof from;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    auto op = rt::recvmsg(self->fd_.get(), &msg, 0);
    self->sleeping_recv_ = &op;
    const int n = co_await op;
    self->sleeping_recv_ = nullptr;
    if (self->stopping_ || n == -ECANCELED) break;
    if (n < 0) {
      // ICMP errors surface on connected UDP sockets; they are no reason to stop listening.
      if (n == -EBADF || n == -ENOTSOCK || n == -EINVAL || n == -EFAULT) break;
      continue;
    }
    // Empty and truncated datagrams are never QUIC (and ngtcp2 asserts on empty input).
    if (n == 0 || (msg.msg_flags & MSG_TRUNC)) continue;
    net::Endpoint ep;
    std::memcpy(&ep.ss, &from, sizeof from);
    ep.len = msg.msg_namelen;
    self->on_datagram(std::span<const uint8_t>(buf.get(), static_cast<size_t>(n)), ep);
    if (++budget % 64 == 0) co_await rt::yield();
  }
}

bool Core::setup_buf_ring() {
  void *mem = nullptr;
  if (posix_memalign(&mem, 4096, rx_slots_ * sizeof(io_uring_buf)) != 0) return false;
  buf_ring_.reset(static_cast<io_uring_buf_ring *>(mem));
  rx_bufs_ = std::make_unique_for_overwrite<uint8_t[]>(rx_slots_ * rx_slot_size_);
  io_uring_buf_ring_init(buf_ring_.get());
  const int bgid = 0x4000 + (g_next_bgid++ % 0x4000);  // our own range of group ids
  io_uring_buf_reg reg{};
  reg.ring_addr = reinterpret_cast<uint64_t>(buf_ring_.get());
  reg.ring_entries = rx_slots_;
  reg.bgid = static_cast<uint16_t>(bgid);
  if (io_uring_register_buf_ring(rt::Reactor::current().ring(), &reg, 0) != 0) {
    buf_ring_.reset();
    rx_bufs_.reset();
    return false;
  }
  bgid_ = bgid;
  for (unsigned i = 0; i < rx_slots_; ++i)
    io_uring_buf_ring_add(buf_ring_.get(), rx_bufs_.get() + i * rx_slot_size_, rx_slot_size_, static_cast<uint16_t>(i),
                          io_uring_buf_ring_mask(rx_slots_), static_cast<int>(i));
  io_uring_buf_ring_advance(buf_ring_.get(), rx_slots_);
  recv_msg_.msg_namelen = sizeof(sockaddr_storage);
  recv_msg_.msg_controllen = gro_ ? kRxCmsgSpace : 0;
  return true;
}

void Core::arm_recv() {
  if (recv_armed_ || stopping_) return;
  io_uring_sqe *sqe = rt::Reactor::current().sqe();
  io_uring_prep_recvmsg_multishot(sqe, fd_.get(), &recv_msg_, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = static_cast<uint16_t>(bgid_);
  io_uring_sqe_set_data(sqe, static_cast<rt::Completion *>(&recv_cqe_));
  recv_armed_ = true;
}

void Core::on_recv_cqe(int32_t res, uint32_t flags) {
  if (!(flags & IORING_CQE_F_MORE)) recv_armed_ = false;
  if (flags & IORING_CQE_F_BUFFER) {
    rx_done_.emplace_back(static_cast<uint16_t>(flags >> IORING_CQE_BUFFER_SHIFT), res);
  } else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
    recv_error_ = res;
  }
  recv_ev_.set();
}

void Core::give_back(uint16_t bid) {
  io_uring_buf_ring_add(buf_ring_.get(), rx_bufs_.get() + size_t(bid) * rx_slot_size_, rx_slot_size_, bid,
                        io_uring_buf_ring_mask(rx_slots_), 0);
  io_uring_buf_ring_advance(buf_ring_.get(), 1);
}

rt::Task<void> Core::recv_loop(std::shared_ptr<Core> self) {
  Core &c = *self;
  for (;;) {
    if (c.recv_error_ == -EBADF || c.recv_error_ == -ENOTSOCK || c.recv_error_ == -EINVAL) c.stop_loops();
    c.recv_error_ = 0;  // ICMP errors on connected sockets end a multishot: just re-arm
    // Re-armed only here, after buffers went back, so ENOBUFS cannot spin.
    c.arm_recv();
    if (c.rx_done_.empty()) {
      if (c.stopping_ && !c.recv_armed_) break;  // nothing in the kernel points at us any more
      c.recv_ev_.reset();
      const bool ok = co_await c.recv_ev_.wait();
      (void)ok;
      continue;
    }
    while (!c.rx_done_.empty()) {
      const auto [bid, res] = c.rx_done_.front();
      c.rx_done_.pop_front();
      uint8_t *buf = c.rx_bufs_.get() + size_t(bid) * c.rx_slot_size_;
      io_uring_recvmsg_out *o = io_uring_recvmsg_validate(buf, res, &c.recv_msg_);
      // Empty and truncated datagrams are never QUIC (and ngtcp2 asserts on empty input).
      if (o != nullptr && !c.stopping_ && !(o->flags & MSG_TRUNC)) {
        const unsigned len = io_uring_recvmsg_payload_length(o, res, &c.recv_msg_);
        if (len > 0 && o->namelen <= sizeof(sockaddr_storage)) {
          net::Endpoint ep;
          std::memcpy(&ep.ss, io_uring_recvmsg_name(o), o->namelen);
          ep.len = o->namelen;
          const std::span<const uint8_t> run(static_cast<uint8_t *>(io_uring_recvmsg_payload(o, &c.recv_msg_)), len);
          const size_t seg = c.gro_ ? gro_segment_size(o, c.recv_msg_) : 0;
          const size_t step = seg > 0 ? seg : run.size();
          if (step < run.size()) ++g_gro_runs;
          for (size_t off = 0; off < run.size() && !c.stopping_; off += step)
            c.on_datagram(run.subspan(off, std::min(step, run.size() - off)), ep);
        }
      }
      c.give_back(bid);
    }
  }
}

rt::Task<void> Core::send_loop(std::shared_ptr<Core> self) {
  for (;;) {
    if (self->stopping_) break;
    if (self->send_q_.empty()) {
      self->send_ev_.reset();
      const bool ok = co_await self->send_ev_.wait();
      if (!ok) break;
      continue;
    }
    auto c = std::move(self->send_q_.front());
    self->send_q_.pop_front();
    c->send_queued_ = false;
    co_await self->flush(std::move(c));
  }
  self->send_q_.clear();
}

rt::Task<void> Core::send_batch(const uint8_t *data, size_t len, size_t gso_size, const sockaddr_storage &to,
                                socklen_t tolen) {
  msghdr msg{};
  iovec iov{const_cast<uint8_t *>(data), len};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (!connected_) {
    msg.msg_name = const_cast<sockaddr_storage *>(&to);
    msg.msg_namelen = tolen;
  }
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(uint16_t))] = {};
  const bool segmented = len > gso_size;
  if (segmented && gso_) {
    msg.msg_control = ctrl;
    msg.msg_controllen = sizeof ctrl;
    cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    const uint16_t seg = static_cast<uint16_t>(gso_size);
    std::memcpy(CMSG_DATA(cm), &seg, sizeof seg);
    const int r = co_await rt::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    if (r != -EIO && r != -EINVAL && r != -EOPNOTSUPP) co_return;  // lost datagrams are QUIC's business
    gso_ = false;  // no GSO on this path: send the segments one by one
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
  }
  if (!segmented) {
    const int r = co_await rt::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    (void)r;
    co_return;
  }
  for (size_t off = 0; off < len && !stopping_; off += gso_size) {
    iov.iov_base = const_cast<uint8_t *>(data + off);
    iov.iov_len = std::min(gso_size, len - off);
    const int r = co_await rt::sendmsg(fd_.get(), &msg, MSG_NOSIGNAL);
    (void)r;
  }
}

rt::Task<void> Core::flush(std::shared_ptr<Connection> cp) {
  Connection &c = *cp;
  bool stream_blocked = false;
  bool more = false;
  // A few bursts per turn, then the connection goes to the back of the queue.
  for (int round = 0; round < 8; ++round) {
    if (c.dead_ || stopping_) co_return;
    if (c.linger_done()) {
      ngtcp2_connection_close_error_set_application_error(&c.ccerr_, 0, nullptr, 0);
      c.fail(-ECONNABORTED, true, "closed");
      co_return;
    }
    const ngtcp2_tstamp ts = now_ts();
    // Room for the largest datagram we may send (ngtcp2 shapes ordinary packets down to the
    // path's current size itself). Not NGTCP2_MAX_UDP_PAYLOAD_SIZE: that is the 1200-byte
    // minimum, and capping at it kept every packet at 1200 bytes and every PMTUD probe
    // (1232..1444 bytes) from ever being sent.
    const size_t max_udp = std::min<size_t>(ngtcp2_conn_get_max_tx_udp_payload_size(c.conn_), kBatchBytes);
    size_t max_pkts = ngtcp2_conn_get_send_quantum(c.conn_) / max_udp;
    max_pkts = std::clamp<size_t>(max_pkts, 1, std::max<size_t>(1, std::min(kMaxBatchPackets, kBatchBytes / max_udp)));
    if (!gso_) max_pkts = std::min<size_t>(max_pkts, 16);

    uint8_t *buf = txbuf_.get();
    size_t off = 0, gso_size = 0, npkts = 0;
    sockaddr_storage to{};
    socklen_t tolen = 0;
    bool idle = false;
    while (npkts < max_pkts) {
      ngtcp2_path_storage ps;
      ngtcp2_path_storage_zero(&ps);
      const ngtcp2_ssize n = c.write_one(buf + off, max_udp, ps, ts, stream_blocked);
      if (n < 0) {
        c.handle_error(static_cast<int>(n));
        co_return;
      }
      if (n == 0) {
        idle = true;
        break;
      }
      const size_t len = static_cast<size_t>(n);
      if (npkts == 0) {
        gso_size = len;
        std::memcpy(&to, ps.path.remote.addr, std::min<size_t>(ps.path.remote.addrlen, sizeof to));
        tolen = ps.path.remote.addrlen;
      } else if (len > gso_size) {
        // Segments must not grow: send what we have, then start over with this packet.
        co_await send_batch(buf, off, gso_size, to, tolen);
        if (c.dead_ || stopping_) co_return;
        std::memmove(buf, buf + off, len);
        off = 0;
        npkts = 0;
        gso_size = len;
      }
      off += len;
      ++npkts;
      if (len < gso_size) break;  // a short packet ends a GSO batch
    }
    // Without GSO, send_batch sends the same buffer as one datagram per segment.
    if (npkts > 0) co_await send_batch(buf, off, gso_size, to, tolen);
    if (c.dead_ || stopping_) co_return;
    ngtcp2_conn_update_pkt_tx_time(c.conn_, ts);
    if (idle) {
      more = false;
      break;
    }
    more = true;
  }
  update_timer(c);
  if (more) want_send(c);
}

rt::Task<void> Core::timer_loop(std::shared_ptr<Core> self) {
  for (;;) {
    if (self->stopping_) break;
    if (self->timers_.empty()) {
      self->sleep_deadline_ = kNever;
      self->timer_ev_.reset();
      const bool ok = co_await self->timer_ev_.wait();
      if (!ok) break;
      continue;
    }
    const ngtcp2_tstamp now = now_ts();
    const auto [deadline, conn] = *self->timers_.begin();
    if (deadline <= now) {
      // Out of the timer set until its next flush recomputes the deadline (which needs a
      // write first, e.g. for pacing): no busy loop on a deadline only a send can clear.
      auto keep = conn->shared_from_this();
      self->remove_timer(*keep);
      keep->expire(now);
      if (!keep->dead_) self->want_send(*keep);
      continue;
    }
    self->timer_ev_.reset();
    auto op = rt::sleep_for(rt::Duration(static_cast<int64_t>(deadline - now)));
    self->sleeping_ = &op;
    self->sleep_deadline_ = deadline;
    const int slept = co_await op;
    (void)slept;
    self->sleeping_ = nullptr;
    self->sleep_deadline_ = kNever;
  }
  self->timers_.clear();
}

// ---------------------------------------------------------------------------------
// Client and server cores.

namespace {

rt::Result<rt::UniqueFd> udp_socket(int family) {
  // Blocking mode on purpose: io_uring then waits for buffer space itself; the one
  // synchronous send (send_now) passes MSG_DONTWAIT.
  rt::UniqueFd fd(::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, IPPROTO_UDP));
  if (!fd) return rt::errno_error(errno, "udp socket");
  const int size = kSocketBuf;
  // FORCE works with CAP_NET_ADMIN beyond rmem_max/wmem_max; otherwise take what we get.
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) != 0)
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size) != 0)
    (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  // Don't fragment: QUIC packetization owns the path MTU (PMTUD probes need DF).
  if (family == AF_INET) {
    const int v = IP_PMTUDISC_DO;
    (void)::setsockopt(fd.get(), IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof v);
  } else {
    const int v = IPV6_PMTUDISC_DO;
    (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v, sizeof v);
  }
  return fd;
}

}  // namespace

class ClientCore final : public Core {
 public:
  using Core::Core;
  void on_datagram(std::span<const uint8_t> pkt, const net::Endpoint &from) override {
    if (!conn_) return;
    auto keep = conn_;
    keep->on_datagram(pkt, from);
  }
  void on_conn_dead(Connection &c) override {
    remove_timer(c);
    conn_.reset();
    stop_loops();  // one connection per client socket: nothing left to drive
  }
  std::shared_ptr<Connection> conn_;
};

class ServerCore final : public Core {
 public:
  ServerCore(rt::UniqueFd fd, QuicServerConfig cfg, bssl::UniquePtr<SSL_CTX> ctx)
      : Core(std::move(fd), false, cfg.same_host_datagrams ? std::max(kMaxUdpPayload, kLocalUdpPayload) : kMaxUdpPayload),
        cfg_(std::move(cfg)),
        ctx_(std::move(ctx)) {}
  ~ServerCore() override {
    for (auto &[p, c] : all_) c->core_ = nullptr;
  }

  void on_datagram(std::span<const uint8_t> pkt, const net::Endpoint &from) override {
    if (pkt.empty() || stopped_) return;
    ngtcp2_version_cid vc;
    const int rv = ngtcp2_pkt_decode_version_cid(&vc, pkt.data(), pkt.size(), kCidLen);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
      send_version_negotiation(vc, pkt.size(), from);
      return;
    }
    if (rv != 0 || vc.dcidlen > NGTCP2_MAX_CIDLEN) return;
    if (auto it = by_cid_.find(cid_key(vc.dcid, vc.dcidlen)); it != by_cid_.end()) {
      auto c = it->second;
      c->on_datagram(pkt, from);
      return;
    }
    if ((pkt[0] & 0x80) == 0) {  // short header for no connection of ours (we restarted, or it is gone)
      send_stateless_reset(vc, pkt.size(), from);
      return;
    }
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, pkt.data(), pkt.size()) != 0 || hd.type != NGTCP2_PKT_INITIAL) return;
    if (all_.size() >= cfg_.max_connections) return;
    auto c = std::make_shared<Connection>(this, true);
    if (cfg_.same_host_datagrams) c->local_payload_ = same_host_payload(from);
    ngtcp2_cid scid;
    if (!c->init_server(cfg_, ctx_.get(), hd, local(), from, scid)) return;
    all_.emplace(c.get(), c);
    register_cid(hd.dcid, *c);  // the client's retransmitted Initials still carry it
    register_cid(scid, *c);
    c->on_datagram(pkt, from);
  }

  // RFC 9000 §6.1: answer a client's first flight in a version we do not speak, so it can fail
  // fast (or pick v1) instead of timing out. Only for datagrams big enough to start a connection
  // (§14.1), so the reply never amplifies: it is far smaller than what it answers.
  void send_version_negotiation(const ngtcp2_version_cid &vc, size_t pktlen, const net::Endpoint &from) {
    if (pktlen < NGTCP2_MAX_UDP_PAYLOAD_SIZE || !reply_budget()) return;
    const uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
    uint8_t buf[256];
    uint8_t unused;
    RAND_bytes(&unused, 1);
    const ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof buf, unused, vc.scid, vc.scidlen, vc.dcid,
                                                                vc.dcidlen, versions, std::size(versions));
    if (n > 0) send_to(buf, static_cast<size_t>(n), from);
  }

  // RFC 9000 §10.3: a peer still talking to a connection we no longer have (a server restart)
  // learns it at once from a stateless reset instead of waiting out its idle timeout. The token
  // comes from the same secret and CID as the one we advertised, so it only matches CIDs we
  // issued. Always shorter than the packet it answers (no reset loops between two endpoints),
  // never shorter than a plausible short-header packet, and rate-limited.
  void send_stateless_reset(const ngtcp2_version_cid &vc, size_t pktlen, const net::Endpoint &from) {
    constexpr size_t kMin = 1 + kCidLen + NGTCP2_STATELESS_RESET_TOKENLEN + 4;  // looks like a real packet
    if (vc.dcidlen != kCidLen || pktlen <= kMin || !reply_budget()) return;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, vc.dcid, vc.dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    if (!generate_stateless_reset_token(std::span<uint8_t, NGTCP2_STATELESS_RESET_TOKENLEN>(token), reset_secret(), cid))
      return;
    const size_t len = std::min<size_t>(pktlen - 1, 64);
    uint8_t rnd[64];
    RAND_bytes(rnd, sizeof rnd);
    uint8_t buf[64];
    const ngtcp2_ssize n =
        ngtcp2_pkt_write_stateless_reset(buf, len, token, rnd, len - NGTCP2_STATELESS_RESET_TOKENLEN);
    if (n > 0) send_to(buf, static_cast<size_t>(n), from);
  }

  // Stateless replies cost us nothing to trigger: at most kRepliesPerSecond of them.
  bool reply_budget() {
    constexpr unsigned kRepliesPerSecond = 100;
    const auto now = std::chrono::steady_clock::now();
    if (now - budget_start_ >= std::chrono::seconds(1)) {
      budget_start_ = now;
      budget_used_ = 0;
    }
    return budget_used_++ < kRepliesPerSecond;
  }

  void send_to(const uint8_t *data, size_t len, const net::Endpoint &to) {
    ngtcp2_addr a{const_cast<sockaddr *>(to.sa()), to.len};
    send_now(data, len, a);
  }

  void register_cid(const ngtcp2_cid &cid, Connection &c) override {
    by_cid_[cid_key(cid)] = c.shared_from_this();
    c.cids_.push_back(cid);
  }
  void unregister_cid(const ngtcp2_cid &cid) override { by_cid_.erase(cid_key(cid)); }

  void on_conn_dead(Connection &c) override {
    remove_timer(c);
    for (const auto &cid : c.cids_) {
      auto it = by_cid_.find(cid_key(cid));
      if (it != by_cid_.end() && it->second.get() == &c) by_cid_.erase(it);
    }
    c.cids_.clear();
    all_.erase(&c);
  }

  void on_conn_ready(Connection &c) override {
    ready_.push_back(c.weak_from_this());
    ready_ev_.set();
  }

  // Synchronous part of QuicListener::stop.
  void stop() {
    if (stopped_) return;
    stopped_ = true;
    std::vector<std::shared_ptr<Connection>> conns;
    conns.reserve(all_.size());
    for (auto &[p, c] : all_) conns.push_back(c);
    for (auto &c : conns) {
      ngtcp2_connection_close_error_set_application_error(&c->ccerr_, 0, nullptr, 0);
      c->fail(-ECONNABORTED, true, "listener stopped");
    }
    ready_.clear();
    ready_ev_.set();
    stop_loops();
  }

  QuicServerConfig cfg_;
  bssl::UniquePtr<SSL_CTX> ctx_;
  std::unordered_map<std::string, std::shared_ptr<Connection>> by_cid_;
  std::unordered_map<Connection *, std::shared_ptr<Connection>> all_;
  std::deque<std::weak_ptr<Connection>> ready_;
  rt::Event ready_ev_;
  bool stopped_ = false;
  std::chrono::steady_clock::time_point budget_start_{};
  unsigned budget_used_ = 0;
};

// ---------------------------------------------------------------------------------
// The Stream.

namespace {

class QuicStream final : public stream::Stream {
 public:
  explicit QuicStream(std::shared_ptr<Connection> c) : c_(std::move(c)) {}
  ~QuicStream() override { close(); }

  rt::Task<ssize_t> read(std::span<std::byte> buf) override {
    auto c = c_;
    if (!c) co_return -EBADF;
    if (buf.empty()) co_return 0;
    for (;;) {
      if (!c->rx_.empty()) {
        const size_t n = c->rx_.read(reinterpret_cast<uint8_t *>(buf.data()), buf.size());
        c->consumed(n);
        co_return static_cast<ssize_t>(n);
      }
      if (c->rx_fin_) co_return 0;
      if (c->dead_) co_return c->error_;
      if (c->rx_reset_) co_return -ECONNRESET;
      c->rx_ev_.reset();
      c->rx_direct_ = {reinterpret_cast<uint8_t *>(buf.data()), buf.size()};
      c->rx_direct_len_ = 0;
      const bool ok = co_await c->rx_ev_.wait();
      const size_t direct = c->rx_direct_len_;
      c->rx_direct_ = {};
      c->rx_direct_len_ = 0;
      if (direct > 0) {  // even when cancelled: these bytes are in the caller's buffer now
        c->consumed(direct);
        co_return static_cast<ssize_t>(direct);
      }
      if (!ok) co_return -ECANCELED;
    }
  }

  rt::Task<ssize_t> write(std::span<const std::byte> buf) override {
    auto c = c_;
    size_t done = 0;
    while (done < buf.size()) {
      const int r = co_await room(c.get());
      if (r < 0) co_return r;
      const size_t n = std::min({buf.size() - done, kTxLimit - c->tx_.size(), kUnsentLimit - c->unsent()});
      c->tx_.append(reinterpret_cast<const uint8_t *>(buf.data() + done), n);
      done += n;
      if (c->core_ != nullptr) c->core_->want_send(*c);
    }
    co_return static_cast<ssize_t>(done);
  }

  // The send queue keeps written bytes until they are acknowledged: it takes the buffer.
  rt::Task<ssize_t> write_owned(stream::Bytes &buf) override {
    auto c = c_;
    const size_t n = buf.size();
    if (n == 0) co_return 0;
    const int r = co_await room(c.get());
    if (r < 0) co_return r;
    c->tx_.give(buf);  // may go past the limits by this one buffer, which its writer bounds
    if (c->core_ != nullptr) c->core_->want_send(*c);
    co_return static_cast<ssize_t>(n);
  }

  rt::Task<int> shutdown_write() override {
    auto c = c_;
    if (!c) co_return -EBADF;
    if (c->dead_) co_return c->error_;
    if (!c->fin_requested_) {
      c->fin_requested_ = true;
      if (c->core_ != nullptr) c->core_->want_send(*c);
    }
    co_return 0;
  }

  void close() override {
    if (!c_) return;
    c_->close();
    c_.reset();
  }

  std::optional<stream::ChannelBinding> channel_binding() const override {
    return c_ ? transport::tls_channel_binding(c_->ssl_.get()) : std::nullopt;
  }

 private:
  // Waits until the send queue is under its limit: 0, or -errno when writing cannot go on.
  static rt::Task<int> room(Connection *c) {
    for (;;) {
      if (c == nullptr) co_return -EBADF;
      if (c->dead_) co_return c->error_;
      if (c->fin_requested_ || c->closing_ || c->tx_reset_) co_return -EPIPE;
      if (c->tx_room()) co_return 0;
      c->tx_ev_.reset();
      const bool ok = co_await c->tx_ev_.wait();
      if (!ok) co_return -ECANCELED;
    }
  }

  std::shared_ptr<Connection> c_;
};

}  // namespace

// ---------------------------------------------------------------------------------
// Public API.

size_t live_endpoints() { return g_live_endpoints; }
uint64_t gro_runs() { return g_gro_runs; }

int cc_algo(std::string_view name) {
  if (name == "bbr") return NGTCP2_CC_ALGO_BBR;
  if (name == "bbr2") return NGTCP2_CC_ALGO_BBR2;
  if (name == "reno") return NGTCP2_CC_ALGO_RENO;
  return NGTCP2_CC_ALGO_CUBIC;
}

rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> quic_connect(const QuicClientConfig &cfg,
                                                                    const net::Endpoint &server) {
  using R = rt::Result<std::unique_ptr<stream::Stream>>;
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx || !configure_client_context(ctx.get())) co_return R(rt::Error{rt::kErrProtocol, "TLS context setup failed"});
  if (cfg.insecure) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  } else {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    int ok;
    if (!cfg.ca_file.empty()) {
      ok = SSL_CTX_load_verify_locations(ctx.get(), cfg.ca_file.c_str(), nullptr);
    } else if (::access("/etc/ssl/certs/ca-certificates.crt", R_OK) == 0) {
      // This BoringSSL build's default paths are Android's; Debian keeps the store here.
      ok = SSL_CTX_load_verify_locations(ctx.get(), "/etc/ssl/certs/ca-certificates.crt", nullptr);
    } else {
      ok = SSL_CTX_set_default_verify_paths(ctx.get());
    }
    if (ok != 1) {
      const std::string what = cfg.ca_file.empty() ? "system CA store" : cfg.ca_file;
      co_return R(rt::Error{ENOENT, "cannot load " + what + ": " + ssl_error_text()});
    }
  }

  auto fdr = udp_socket(server.family());
  if (!fdr) co_return R(fdr.error());
  rt::UniqueFd fd = std::move(fdr.value());
  const int cr = co_await rt::connect(fd.get(), server.sa(), server.len);
  if (cr < 0) co_return R(rt::errno_error(-cr, "udp connect " + server.to_string()));

  const uint64_t local_payload = cfg.same_host_datagrams ? same_host_payload(fd.get(), server) : 0;
  auto core = std::make_shared<ClientCore>(std::move(fd), true, local_payload > 0 ? local_payload : kMaxUdpPayload);
  auto conn = std::make_shared<Connection>(core.get(), false);
  conn->local_payload_ = local_payload;
  const std::string name = cfg.server_name.empty() ? server.ip() : cfg.server_name;
  if (!conn->init_client(cfg, ctx.get(), core->local(), server, name)) {
    std::string text = conn->error_text_.empty() ? "QUIC client setup failed" : conn->error_text_;
    co_return R(rt::Error{EINVAL, text});
  }
  core->conn_ = conn;
  core->start();
  core->want_send(*conn);  // the first flight (ClientHello)
  core->update_timer(*conn);

  while (!conn->handshake_done_ && !conn->dead_) {
    conn->state_ev_.reset();
    const bool ok = co_await conn->state_ev_.wait();
    if (!ok) {
      conn->fail(-ECANCELED, true, "cancelled");
      co_return R(rt::Error{ECANCELED, "QUIC connect cancelled"});
    }
  }
  if (conn->dead_) {
    const int code = conn->error_ == -EPROTO ? rt::kErrProtocol : -conn->error_;
    co_return R(rt::Error{code, "QUIC connect to " + server.to_string() + ": " + conn->error_text_});
  }
  if (!conn->open_stream()) {
    conn->fail(-EPROTO, true, "cannot open stream");
    co_return R(rt::Error{rt::kErrProtocol, "QUIC server allows no bidirectional stream"});
  }
  co_return R(std::unique_ptr<stream::Stream>(std::make_unique<QuicStream>(std::move(conn))));
}

rt::Result<void> QuicListener::use_certificate(std::string_view chain_pem, std::string_view key_pem) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx || !configure_server_context(ctx.get())) return rt::Error{rt::kErrProtocol, "TLS context setup failed"};
  std::string why;
  if (!transport::use_pem_certificate(ctx.get(), chain_pem, key_pem, &why)) return rt::Error{EINVAL, "quic: new " + why};
  core_->ctx_ = std::move(ctx);  // each connection's SSL holds its own reference to the old one
  return {};
}

rt::Result<std::unique_ptr<QuicListener>> QuicListener::create(const QuicServerConfig &cfg,
                                                              const net::Endpoint &bind) {
  using R = rt::Result<std::unique_ptr<QuicListener>>;
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (!ctx || !configure_server_context(ctx.get())) return R(rt::Error{rt::kErrProtocol, "TLS context setup failed"});
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.cert_file.c_str()) != 1)
    return R(rt::Error{ENOENT, "cannot load certificate " + cfg.cert_file + ": " + ssl_error_text()});
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return R(rt::Error{ENOENT, "cannot load key " + cfg.key_file + ": " + ssl_error_text()});
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return R(rt::Error{EINVAL, "key " + cfg.key_file + " does not match certificate " + cfg.cert_file});

  auto fdr = udp_socket(bind.family());
  if (!fdr) return R(fdr.error());
  rt::UniqueFd fd = std::move(fdr.value());
  if (bind.family() == AF_INET6) {
    const int one = 1;
    (void)::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd.get(), bind.sa(), bind.len) != 0) return R(rt::errno_error(errno, "udp bind " + bind.to_string()));
  // The TLS private key is the one secret this listener has that outlives the process.
  bssl::ScopedCBB der;
  const bool have_der =
      CBB_init(der.get(), 256) && EVP_marshal_private_key(der.get(), SSL_CTX_get0_privatekey(ctx.get()));
  if (!have_der) ERR_clear_error();  // a key type BoringSSL cannot serialize keeps the random secret
  auto core = std::make_shared<ServerCore>(std::move(fd), cfg, std::move(ctx));
  if (have_der) core->derive_reset_secret({CBB_data(der.get()), CBB_len(der.get())});
  core->start();
  const net::Endpoint local = core->local();
  return R(std::unique_ptr<QuicListener>(new QuicListener(std::move(core), local)));
}

QuicListener::~QuicListener() {
  if (core_) core_->stop();  // the loops end on their own; the socket closes with them
}

rt::Task<rt::Result<std::pair<std::unique_ptr<stream::Stream>, net::Endpoint>>> QuicListener::accept() {
  using R = rt::Result<std::pair<std::unique_ptr<stream::Stream>, net::Endpoint>>;
  auto core = core_;
  for (;;) {
    if (!core || core->stopped_) co_return R(rt::Error{EBADF, "QUIC listener stopped"});
    while (!core->ready_.empty()) {
      auto c = core->ready_.front().lock();
      core->ready_.pop_front();
      if (!c || c->dead_) continue;
      net::Endpoint remote = c->remote_;
      co_return R(std::make_pair(std::unique_ptr<stream::Stream>(std::make_unique<QuicStream>(std::move(c))), remote));
    }
    core->ready_ev_.reset();
    const bool ok = co_await core->ready_ev_.wait();
    if (!ok) co_return R(rt::Error{ECANCELED, "accept cancelled"});
  }
}

rt::Task<void> QuicListener::stop() {
  if (!core_) co_return;
  auto core = core_;
  core->stop();
  const bool joined = co_await core->tasks().join();
  (void)joined;
  core_.reset();
}

}  // namespace alk::quic
