// stream: FdStream semantics and the pump (byte exactness, half-close, errors, backpressure,
// fairness, cancellation), plus a 1,000-connection loopback echo server on the reactor.
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "runtime_test_helpers.hpp"
#include "stream/stream.hpp"

using namespace alk;
using namespace std::chrono_literals;
using stream::FdStream;

namespace {

std::pair<rt::UniqueFd, rt::UniqueFd> unix_pair() {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  return {rt::UniqueFd(sv[0]), rt::UniqueFd(sv[1])};
}

// A connected loopback TCP pair, made with plain syscalls before the reactor runs.
std::pair<rt::UniqueFd, rt::UniqueFd> tcp_pair() {
  auto l = net::listen_tcp(*net::Endpoint::from_ip("127.0.0.1", 0), 4);
  REQUIRE(l.ok());
  auto ep = net::Endpoint::of_socket_local(l->get());
  int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(c >= 0);
  REQUIRE(::connect(c, ep.sa(), ep.len) == 0);
  int s = ::accept4(l->get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  REQUIRE(s >= 0);
  int fl = 1;
  REQUIRE(::ioctl(c, FIONBIO, &fl) == 0);
  net::set_nodelay(c);
  net::set_nodelay(s);
  return {rt::UniqueFd(c), rt::UniqueFd(s)};
}

std::span<const std::byte> bytes(const std::string &s) { return std::as_bytes(std::span(s.data(), s.size())); }

// A deterministic byte stream: the writer and the checker regenerate it from the seed, so
// megabytes can be verified without being held in memory.
struct Pattern {
  std::mt19937_64 rng;
  explicit Pattern(uint64_t seed) : rng(seed) {}
  void fill(std::byte *p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = std::byte(rng() >> 56);
  }
};

// Sends `total` pattern bytes on fd in chunks, then shuts the write side.
rt::Task<void> send_pattern(int fd, uint64_t seed, size_t total, size_t chunk = 16 * 1024) {
  Pattern pat(seed);
  std::vector<std::byte> buf(chunk);
  size_t sent = 0;
  while (sent < total) {
    size_t n = std::min(chunk, total - sent);
    pat.fill(buf.data(), n);
    size_t off = 0;
    while (off < n) {
      int r = co_await rt::send(fd, std::span<const std::byte>(buf.data() + off, n - off));
      if (r <= 0) co_return;
      off += size_t(r);
    }
    sent += n;
  }
  ::shutdown(fd, SHUT_WR);
}

struct Received {
  size_t bytes = 0;
  size_t mismatches = 0;
  int error = 0;
  bool eof = false;
};

// Reads fd to end of stream, comparing every byte with the pattern.
rt::Task<void> check_pattern(int fd, uint64_t seed, Received &out) {
  Pattern pat(seed);
  std::vector<std::byte> buf(32 * 1024), want(32 * 1024);
  for (;;) {
    int r = co_await rt::recv(fd, buf);
    if (r < 0) {
      out.error = -r;
      co_return;
    }
    if (r == 0) {
      out.eof = true;
      co_return;
    }
    pat.fill(want.data(), size_t(r));
    if (std::memcmp(buf.data(), want.data(), size_t(r)) != 0) ++out.mismatches;
    out.bytes += size_t(r);
  }
}

rt::Task<std::string> read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    int r = co_await rt::recv(fd, std::as_writable_bytes(std::span(buf)));
    if (r <= 0) co_return out;
    out.append(buf, size_t(r));
  }
}

size_t rss_bytes() {
  long pages = 0, resident = 0;
  if (FILE *f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return size_t(resident) * size_t(sysconf(_SC_PAGESIZE));
}

int sockbuf(int fd, int opt) {
  int v = 0;
  socklen_t len = sizeof v;
  getsockopt(fd, SOL_SOCKET, opt, &v, &len);
  return v;
}

void set_bufs(int fd, int size) {
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

// The relay under test sits between two connections: x <-> [a  pump  b] <-> y.
// x and y are the outside peers the test drives.
struct Relay {
  rt::UniqueFd x, y;
  FdStream a, b;
  Relay(std::pair<rt::UniqueFd, rt::UniqueFd> xa, std::pair<rt::UniqueFd, rt::UniqueFd> by)
      : x(std::move(xa.first)), y(std::move(by.second)), a(std::move(xa.second)), b(std::move(by.first)) {}
};

rt::Task<void> run_pump(stream::Stream &a, stream::Stream &b, stream::PumpStats &out, size_t buf, bool &done) {
  out = co_await stream::pump(a, b, buf);
  done = true;
}

}  // namespace

// ---- FdStream ------------------------------------------------------------------------------

TEST_CASE("FdStream: write then read moves bytes; shutdown_write gives the peer EOF while reading goes on") {
  rt::Reactor r;
  auto [p, q] = unix_pair();
  FdStream s(std::move(p));
  int qfd = q.get();
  rt::run_blocking([](FdStream &st, int peer) -> rt::Task<void> {
    ssize_t w = co_await st.write(bytes("hello"));
    CHECK(w == 5);
    int sh = co_await st.shutdown_write();
    CHECK(sh == 0);
    std::string got = co_await read_all(peer);
    CHECK(got == "hello");  // and then EOF, since read_all returned
    // The other direction is still open.
    int n = co_await rt::send(peer, bytes("back"));
    CHECK(n == 4);
    std::byte buf[16];
    ssize_t m = co_await st.read(buf);
    CHECK(m == 4);
    ::shutdown(peer, SHUT_WR);
    ssize_t e = co_await st.read(buf);
    CHECK(e == 0);
  }(s, qfd));
}

TEST_CASE("FdStream::write writes all of a large buffer across many partial sends") {
  rt::Reactor r;
  auto [p, q] = unix_pair();
  set_bufs(p.get(), 16 * 1024);
  FdStream s(std::move(p));
  const size_t total = 4 << 20;
  std::vector<std::byte> data(total);
  Pattern(7).fill(data.data(), total);
  Received got;
  ssize_t wrote = 0;
  rt::run_blocking([](FdStream &st, int peer, std::vector<std::byte> &d, Received &g, ssize_t &w) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(check_pattern(peer, 7, g));
    w = co_await st.write(d);
    co_await st.shutdown_write();
    co_await sc.join();
  }(s, q.get(), data, got, wrote));
  CHECK(wrote == ssize_t(total));
  CHECK(got.bytes == total);
  CHECK(got.mismatches == 0);
  CHECK(got.eof);
}

TEST_CASE("FdStream::write to a closed peer reports EPIPE (and no SIGPIPE kills us)") {
  rt::Reactor r;
  auto [p, q] = unix_pair();
  FdStream s(std::move(p));
  q.reset();
  ssize_t w = rt::run_blocking_value([](FdStream &st) -> rt::Task<ssize_t> { co_return co_await st.write(bytes("x")); }(s));
  CHECK(w == -EPIPE);
}

TEST_CASE("FdStream::try_write takes pieces in order without waiting: all, part, none, or the error") {
  auto [p, q] = unix_pair();
  set_bufs(p.get(), 16 * 1024);
  FdStream s(std::move(p));
  const std::string a = "first,", b = "second,", c = "third";
  const std::span<const std::byte> pieces[] = {std::as_bytes(std::span(a)), std::as_bytes(std::span(b)),
                                                std::as_bytes(std::span(c))};
  CHECK(s.try_write(pieces) == ssize_t(a.size() + b.size() + c.size()));
  char got[64] = {};
  CHECK(::recv(q.get(), got, sizeof got, 0) == 18);
  CHECK(std::string(got) == "first,second,third");
  // Full: part of a large piece goes, then nothing until the peer reads.
  std::vector<std::byte> big(1 << 20, std::byte{1});
  const std::span<const std::byte> one[] = {big};
  const ssize_t part = s.try_write(one);
  CHECK(part > 0);
  CHECK(part < ssize_t(big.size()));
  CHECK(s.try_write(one) == -EAGAIN);
  q.reset();
  CHECK(s.try_write(pieces) == -EPIPE);  // and no SIGPIPE
}

TEST_CASE("FdStream: native_fd, release and close") {
  auto before = test::open_fd_count();
  {
    auto [p, q] = unix_pair();
    int raw = p.get();
    FdStream s(std::move(p));
    CHECK(s.native_fd() == raw);
    rt::UniqueFd back = s.release();
    CHECK(back.get() == raw);
    CHECK(s.native_fd() == -1);
    FdStream t(std::move(back));
    t.close();
    CHECK(t.native_fd() == -1);
    CHECK(fcntl(raw, F_GETFD) == -1);
  }
  CHECK(test::open_fd_count() == before);
}

// ---- the echo server ------------------------------------------------------------------------

namespace {

rt::Task<void> echo_conn(rt::UniqueFd fd) {
  FdStream s(std::move(fd));
  std::vector<std::byte> buf(16 * 1024);
  for (;;) {
    ssize_t n = co_await s.read(buf);
    if (n <= 0) break;
    ssize_t w = co_await s.write(std::span<const std::byte>(buf.data(), size_t(n)));
    if (w < 0) co_return;
  }
  co_await s.shutdown_write();
}

rt::Task<void> accept_loop(net::Acceptor &acc, rt::Scope &conns, int &accepted) {
  for (;;) {
    auto c = co_await acc.accept();
    if (!c.ok()) co_return;
    ++accepted;
    conns.spawn(echo_conn(std::move(c).value()));
  }
}

struct EchoTotals {
  int ok = 0, connect_failed = 0, bad = 0;
};

rt::Task<void> echo_client(net::Endpoint ep, uint64_t seed, size_t size, EchoTotals &t) {
  auto c = co_await net::connect_tcp(ep, 20s);
  if (!c.ok()) {
    ++t.connect_failed;
    co_return;
  }
  Received got;
  rt::Scope writer;
  writer.spawn(send_pattern(c->get(), seed, size, 8 * 1024));
  co_await check_pattern(c->get(), seed, got);
  co_await writer.join();
  if (got.eof && got.error == 0 && got.mismatches == 0 && got.bytes == size)
    ++t.ok;
  else
    ++t.bad;
}

}  // namespace

TEST_CASE("echo server: 1,000 concurrent loopback clients x 64 KiB, every byte checked, fds back to baseline") {
  rlimit rl{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  if (rl.rlim_cur < 4096) {
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, 8192);
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  REQUIRE(rl.rlim_cur >= 2100);
  rt::Reactor r;
  auto before = test::open_fd_count();
  constexpr int kClients = 1000;
  constexpr size_t kSize = 64 * 1024;
  EchoTotals totals;
  int accepted = 0;
  {
    auto l = net::listen_tcp(*net::Endpoint::from_ip("127.0.0.1", 0), 4096);
    REQUIRE(l.ok());
    net::Acceptor acc(std::move(l).value());
    auto ep = acc.local();
    rt::run_blocking([](net::Acceptor &a, net::Endpoint e, EchoTotals &t, int &acc_n) -> rt::Task<void> {
      rt::Scope conns, server, clients;
      server.spawn(accept_loop(a, conns, acc_n));
      for (int i = 0; i < kClients; ++i) clients.spawn(echo_client(e, 0x9e3779b97f4a7c15ull * (i + 1), kSize, t));
      co_await clients.join();
      co_await a.stop();
      co_await server.join();
      co_await conns.join();
    }(acc, ep, totals, accepted));
  }
  CHECK(totals.connect_failed == 0);
  CHECK(totals.bad == 0);
  CHECK(totals.ok == kClients);
  CHECK(accepted == kClients);
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

// ---- pump -----------------------------------------------------------------------------------

namespace {

struct BothWays {
  Received x_got, y_got;
  stream::PumpStats st;
};

rt::Task<void> pump_both_ways(Relay &rel, size_t each, size_t buf, BothWays &out) {
  rt::Scope sc;
  bool done = false;
  sc.spawn(run_pump(rel.a, rel.b, out.st, buf, done));
  sc.spawn(send_pattern(rel.x.get(), 1, each));
  sc.spawn(send_pattern(rel.y.get(), 2, each));
  sc.spawn(check_pattern(rel.y.get(), 1, out.y_got));
  sc.spawn(check_pattern(rel.x.get(), 2, out.x_got));
  co_await sc.join();
  CHECK(done);
}

void check_both_ways(const BothWays &o, size_t each) {
  CHECK(o.st.error == 0);
  CHECK(o.st.a_to_b == each);
  CHECK(o.st.b_to_a == each);
  for (const Received *g : {&o.x_got, &o.y_got}) {
    CHECK(g->bytes == each);
    CHECK(g->mismatches == 0);
    CHECK(g->eof);
    CHECK(g->error == 0);
  }
}

}  // namespace

TEST_CASE("pump: 8 MiB each way at once over socketpairs, byte-exact, both ends see EOF") {
  rt::Reactor r;
  Relay rel(unix_pair(), unix_pair());
  BothWays o;
  rt::run_blocking(pump_both_ways(rel, 8 << 20, 64 * 1024, o));
  check_both_ways(o, 8 << 20);
  CHECK(r.inflight() == 0);
}

TEST_CASE("pump: 8 MiB each way at once over loopback TCP, byte-exact") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    Relay rel(tcp_pair(), tcp_pair());
    BothWays o;
    rt::run_blocking(pump_both_ways(rel, 8 << 20, 64 * 1024, o));
    check_both_ways(o, 8 << 20);
  }
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

namespace {

// A source that keeps what it receives in a buffer of its own and lends it (peek/consume),
// like an SSH channel: it fills the buffer, in sizes cycling 1..4999 bytes, when the relay
// waits for it to become readable.
// Pumps a <-> b while total pattern bytes go in at x (a's peer) and are checked at y (b's peer),
// whose own direction carries nothing but EOF; checks the relay moved exactly that.
void one_way_pump(stream::Stream &a, stream::Stream &b, int x, int y, uint64_t seed, size_t total) {
  stream::PumpStats st;
  Received got;
  bool done = false;
  ::shutdown(y, SHUT_WR);
  rt::run_blocking([](stream::Stream &a, stream::Stream &b, int x, int y, uint64_t seed, size_t total,
                      stream::PumpStats &st, Received &got, bool &done) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(run_pump(a, b, st, 64 * 1024, done));
    sc.spawn(send_pattern(x, seed, total));
    sc.spawn(check_pattern(y, seed, got));
    co_await sc.join();
  }(a, b, x, y, seed, total, st, got, done));
  CHECK(done);
  CHECK(st.error == 0);
  CHECK(st.a_to_b == total);
  CHECK((got.bytes == total && got.mismatches == 0 && got.eof));
}

class LendingStream final : public stream::Stream {
 public:
  explicit LendingStream(rt::UniqueFd fd) : inner_(std::move(fd)) {}
  rt::Task<ssize_t> read(std::span<std::byte> buf) override {
    if (!held_.empty()) {
      const size_t n = std::min(buf.size(), held_.size());
      std::memcpy(buf.data(), held_.data(), n);
      held_.erase(held_.begin(), held_.begin() + std::ptrdiff_t(n));
      copied += n;
      co_return ssize_t(n);
    }
    if (eof_) co_return 0;
    co_return co_await inner_.read(buf);
  }
  rt::Task<int> wait_readable() override {
    if (!held_.empty() || eof_) co_return 0;
    next_ = next_ % 4999 + 1;
    held_.resize(next_);
    const ssize_t n = co_await inner_.read(held_);
    if (n < 0) co_return int(n);
    held_.resize(size_t(n));
    if (n == 0) eof_ = true;
    co_return 0;
  }
  std::span<const std::byte> peek() override { return held_; }
  void consume(size_t n) override {
    n = std::min(n, held_.size());
    held_.erase(held_.begin(), held_.begin() + std::ptrdiff_t(n));
    consumed += n;
  }
  rt::Task<ssize_t> write(std::span<const std::byte> buf) override { co_return co_await inner_.write(buf); }
  rt::Task<int> shutdown_write() override { co_return co_await inner_.shutdown_write(); }
  void close() override { inner_.close(); }
  size_t consumed = 0, copied = 0;  // bytes that left by consume() / by read()

 private:
  FdStream inner_;
  std::vector<std::byte> held_;
  size_t next_ = 0;
  bool eof_ = false;
};

}  // namespace

TEST_CASE("pump: a source that lends its buffer (peek/consume) relays byte-exact without a copy") {
  rt::Reactor r;
  auto [x, a] = unix_pair();
  auto [b, y] = unix_pair();
  LendingStream la(std::move(a));
  FdStream fb(std::move(b));
  constexpr size_t kTotal = 4 << 20;
  one_way_pump(la, fb, x.get(), y.get(), 7, kTotal);
  CHECK(la.consumed == kTotal);  // every byte went out of the lent buffer
  CHECK(la.copied == 0);
}

// A sink that lends room the way an SSH channel does (each commit_room is one packet), with
// room sizes that vary, and now and then no room at all: every 10th call its output is full
// (wait_writable() waits that out), and now and then it stays without room after that (no
// window), so the relay falls back to read() + write().
class RoomStream final : public stream::Stream {
 public:
  explicit RoomStream(rt::UniqueFd fd, bool window_stalls = true)
      : inner_(std::move(fd)), window_stalls_(window_stalls) {}
  rt::Task<ssize_t> read(std::span<std::byte> buf) override { co_return co_await inner_.read(buf); }
  rt::Task<ssize_t> write(std::span<const std::byte> buf) override {
    written += buf.size();
    co_return co_await inner_.write(buf);
  }
  std::span<std::byte> write_room(size_t max) override {
    REQUIRE_FALSE(open_);  // one room at a time
    ++calls_;
    if (full_ || (window_stalls_ && calls_ % 50 == 1)) return {};
    if (calls_ % 10 == 0) {
      full_ = true;
      return {};
    }
    room_.resize(std::min(max, calls_ % 3 == 0 ? calls_ % 4999 + 1 : 32 * 1024));  // packets of up to 32 KiB
    open_ = true;
    return room_;
  }
  void commit_room(size_t n) override {
    REQUIRE(open_);
    REQUIRE(n <= room_.size());
    open_ = false;
    if (n == 0) return;
    // Synchronous, like sealing a packet: this test's peer has room for everything.
    size_t off = 0;
    while (off < n) {
      const ssize_t w = ::send(inner_.native_fd(), room_.data() + off, n - off, MSG_NOSIGNAL);
      REQUIRE(w > 0);
      off += size_t(w);
    }
    committed += n;
  }
  rt::Task<int> wait_writable() override {
    co_await rt::yield();  // the session's writer drains the output
    waits += full_;
    full_ = false;
    co_return 0;
  }
  rt::Task<int> shutdown_write() override { co_return co_await inner_.shutdown_write(); }
  void close() override { inner_.close(); }
  size_t committed = 0, written = 0;  // bytes that came in through commit_room() / write()
  size_t waits = 0;                   // full outputs waited out

 private:
  FdStream inner_;
  std::vector<std::byte> room_;
  size_t calls_ = 0;
  bool open_ = false, full_ = false;
  const bool window_stalls_;
};

TEST_CASE("pump: a sink that lends room is filled straight from the source, byte-exact") {
  rt::Reactor r;
  auto [x, a] = unix_pair();
  auto [b, y] = unix_pair();
  int big = 8 << 20;  // commit_room sends synchronously: the far end's buffer must take it all
  REQUIRE(::setsockopt(b.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) == 0);
  FdStream fa(std::move(a));
  RoomStream rb(std::move(b));
  constexpr size_t kTotal = 4 << 20;
  one_way_pump(fa, rb, x.get(), y.get(), 11, kTotal);
  CHECK(rb.committed + rb.written == kTotal);
  CHECK(rb.committed > kTotal / 2);  // most of it without the relay's buffer
  CHECK(rb.written > 0);             // and the fallback was taken when there was no room
  CHECK(rb.waits > 0);
  CHECK(stream::relay_buffers_in_use() == 0);
}

TEST_CASE("pump: while a room-lending sink's output is full the relay waits, then fills room again") {
  // Taking the copying path whenever the session's output filled up cost a read into a relay
  // buffer and a copy into the packets each time: the smaller the output limit, the more.
  rt::Reactor r;
  auto [x, a] = unix_pair();
  auto [b, y] = unix_pair();
  int big = 8 << 20;
  REQUIRE(::setsockopt(b.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) == 0);
  FdStream fa(std::move(a));
  RoomStream rb(std::move(b), /*window_stalls=*/false);
  constexpr size_t kTotal = 4 << 20;
  one_way_pump(fa, rb, x.get(), y.get(), 13, kTotal);
  CHECK(rb.waits > 10);
  CHECK(rb.committed == kTotal);  // every byte straight into room
  CHECK(rb.written == 0);
}

TEST_CASE("pump: a source that fails before the other direction started still stops both") {
  // The room path reads without waiting, so a reset source fails inside pump()'s first
  // spawn, before the other direction exists; that one must still be cancelled, not left
  // waiting on a silent peer.
  rt::Reactor r;
  auto [x, a] = unix_pair();
  auto [b, y] = unix_pair();
  REQUIRE(::send(a.get(), "unread", 6, 0) == 6);
  x.reset();  // closed with unread data: a's next recv is ECONNRESET
  FdStream fa(std::move(a));
  RoomStream rb(std::move(b));  // its peer y stays open and silent
  stream::PumpStats st;
  bool done = false, in_time = false;
  rt::run_blocking([](FdStream &fa, RoomStream &rb, stream::PumpStats &st, bool &done, bool &in_time) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(run_pump(fa, rb, st, 64 * 1024, done));
    for (int i = 0; i < 200 && !done; ++i) {
      const int s = co_await rt::sleep_for(10ms);
      (void)s;
    }
    in_time = done;
    co_await sc.close();  // a hung pump is cancelled here
  }(fa, rb, st, done, in_time));
  CHECK(in_time);
  CHECK(st.error == ECONNRESET);
}

TEST_CASE("pump: a tiny buffer (7 bytes) still relays exactly") {
  rt::Reactor r;
  Relay rel(unix_pair(), unix_pair());
  BothWays o;
  rt::run_blocking(pump_both_ways(rel, 100 * 1000, 7, o));
  check_both_ways(o, 100 * 1000);
}

TEST_CASE("pump: 200 idle relays hold no buffers; data takes one, and it is given back") {
  rt::Reactor r;
  rt::run_blocking([]() -> rt::Task<void> {
    std::vector<std::unique_ptr<Relay>> rels;
    std::vector<stream::PumpStats> stats(200);
    auto done = std::make_unique<bool[]>(200);
    rt::Scope pumps;
    for (int i = 0; i < 200; ++i) {
      rels.push_back(std::make_unique<Relay>(unix_pair(), unix_pair()));
      pumps.spawn(run_pump(rels.back()->a, rels.back()->b, stats[size_t(i)], 64 * 1024, done[size_t(i)]));
    }
    const int s1 = co_await rt::sleep_for(20ms);
    (void)s1;
    CHECK(stream::relay_buffers_in_use() == 0);
    // One relay moves a message: the buffer comes back as soon as the source is drained.
    REQUIRE(::send(rels[7]->x.get(), "ping", 4, 0) == 4);
    char got[8] = {};
    for (int i = 0; i < 100 && ::recv(rels[7]->y.get(), got, sizeof got, MSG_DONTWAIT) <= 0; ++i) {
      const int s2 = co_await rt::sleep_for(5ms);
      (void)s2;
    }
    CHECK(std::string(got, 4) == "ping");
    const int s3 = co_await rt::sleep_for(5ms);
    (void)s3;
    CHECK(stream::relay_buffers_in_use() == 0);
    for (auto &rel : rels) {
      ::shutdown(rel->x.get(), SHUT_WR);
      ::shutdown(rel->y.get(), SHUT_WR);
    }
    const bool j = co_await pumps.join();
    (void)j;
    CHECK(stream::relay_buffers_in_use() == 0);
    for (auto &st : stats) CHECK(st.error == 0);
  }());
}

TEST_CASE("pump: both sides at EOF at once ends with zero counts and no error") {
  rt::Reactor r;
  Relay rel(unix_pair(), unix_pair());
  ::shutdown(rel.x.get(), SHUT_WR);
  ::shutdown(rel.y.get(), SHUT_WR);
  auto st = rt::run_blocking_value(stream::pump(rel.a, rel.b, 1024));
  CHECK(st.a_to_b == 0);
  CHECK(st.b_to_a == 0);
  CHECK(st.error == 0);
  // Each outside peer saw EOF passed through.
  char c;
  CHECK(::recv(rel.x.get(), &c, 1, MSG_DONTWAIT) == 0);
  CHECK(::recv(rel.y.get(), &c, 1, MSG_DONTWAIT) == 0);
}

TEST_CASE("pump half-close (nc -N): request then FIN; the reply still comes back, then both directions end") {
  rt::Reactor r;
  Relay rel(tcp_pair(), tcp_pair());
  std::string server_got, client_got;
  bool server_saw_eof_before_reply = false;
  stream::PumpStats st;
  bool pumped = false;
  rt::run_blocking([](Relay &rl, std::string &sg, std::string &cg, bool &order, stream::PumpStats &s,
                      bool &done) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(run_pump(rl.a, rl.b, s, 64 * 1024, done));
    // The "server" behind y answers only once it has read the whole request (EOF).
    sc.spawn([](int fd, std::string &got, bool &ord) -> rt::Task<void> {
      got = co_await read_all(fd);
      ord = true;
      int n = co_await rt::send(fd, bytes("HTTP/1.0 200 OK\r\n\r\nbody"));
      CHECK(n == 23);
      ::shutdown(fd, SHUT_WR);
    }(rl.y.get(), sg, order));
    // The client (nc -N): send, shut the write side, read the reply to the end.
    int n = co_await rt::send(rl.x.get(), bytes("GET / HTTP/1.0\r\n\r\n"));
    CHECK(n == 18);
    ::shutdown(rl.x.get(), SHUT_WR);
    cg = co_await read_all(rl.x.get());
    co_await sc.join();
  }(rel, server_got, client_got, server_saw_eof_before_reply, st, pumped));
  CHECK(pumped);
  CHECK(server_got == "GET / HTTP/1.0\r\n\r\n");
  CHECK(server_saw_eof_before_reply);
  CHECK(client_got == "HTTP/1.0 200 OK\r\n\r\nbody");
  CHECK(st.a_to_b == 18);
  CHECK(st.b_to_a == 23);
  CHECK(st.error == 0);
}

TEST_CASE("pump: a peer reset (SO_LINGER 0) stops both directions and reports ECONNRESET") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    Relay rel(tcp_pair(), tcp_pair());
    stream::PumpStats st;
    bool done = false;
    auto t0 = rt::Clock::now();
    rt::run_blocking([](Relay &rl, stream::PumpStats &s, bool &d) -> rt::Task<void> {
      rt::Scope sc;
      sc.spawn(run_pump(rl.a, rl.b, s, 64 * 1024, d));
      // Some traffic first, so the pump is mid-stream when the reset hits.
      int n = co_await rt::send(rl.x.get(), bytes("abc"));
      CHECK(n == 3);
      char buf[8];
      int m = co_await rt::recv(rl.y.get(), std::as_writable_bytes(std::span(buf)));
      CHECK(m == 3);
      linger lg{1, 0};
      setsockopt(rl.y.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
      rl.y.reset();  // RST towards b
      co_await sc.join();
    }(rel, st, done));
    CHECK(done);
    CHECK(rt::Clock::now() - t0 < 2s);
    CHECK(st.error == ECONNRESET);
    CHECK(st.a_to_b == 3);
    // The x->a direction was stopped too: x sees no FIN from a clean end, just silence; the
    // relay's owner closes a now.
  }
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("pump: a write error (sink peer gone) stops the pump with EPIPE") {
  rt::Reactor r;
  Relay rel(unix_pair(), unix_pair());
  rel.y.reset();  // b's peer is gone: reading b gives EOF, writing b gives EPIPE
  stream::PumpStats st;
  bool done = false;
  rt::run_blocking([](Relay &rl, stream::PumpStats &s, bool &d) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(run_pump(rl.a, rl.b, s, 4096, d));
    co_await rt::sleep_for(10ms);
    int n = co_await rt::send(rl.x.get(), bytes("data"));
    CHECK(n == 4);
    co_await sc.join();
  }(rel, st, done));
  CHECK(done);
  CHECK(st.error == EPIPE);
  CHECK(st.a_to_b == 0);
}

TEST_CASE("pump: backpressure: with the sink not reading, the source is held to socket buffers + one pump buffer") {
  rt::Reactor r;
  Relay rel(unix_pair(), unix_pair());
  for (int fd : {rel.x.get(), rel.a.native_fd(), rel.b.native_fd(), rel.y.get()}) set_bufs(fd, 64 * 1024);
  const size_t buf = 64 * 1024;
  size_t bound = buf;
  for (int fd : {rel.x.get(), rel.a.native_fd(), rel.b.native_fd(), rel.y.get()})
    bound += size_t(sockbuf(fd, SO_SNDBUF)) + size_t(sockbuf(fd, SO_RCVBUF));
  size_t sent = 0, sent_while_stalled = 0;
  size_t rss0 = rss_bytes(), rss_stalled = 0;
  Received got;
  stream::PumpStats st;
  bool done = false;
  rt::run_blocking([](Relay &rl, size_t bsz, size_t &snt, size_t &stalled, size_t &rss, Received &g,
                      stream::PumpStats &s, bool &d) -> rt::Task<void> {
    rt::Scope sc, writer;
    sc.spawn(run_pump(rl.a, rl.b, s, bsz, d));
    // The source never stops on its own: it sends until cancelled.
    writer.spawn([](int fd, size_t &n) -> rt::Task<void> {
      Pattern pat(42);
      std::vector<std::byte> chunk(32 * 1024);
      for (;;) {
        pat.fill(chunk.data(), chunk.size());
        size_t off = 0;
        while (off < chunk.size()) {
          int w = co_await rt::send(fd, std::span<const std::byte>(chunk).subspan(off));
          if (w <= 0) co_return;
          off += size_t(w);
          n += size_t(w);
        }
      }
    }(rl.x.get(), snt));
    co_await rt::sleep_for(300ms);  // nobody reads y meanwhile
    stalled = snt;
    rss = rss_bytes();
    co_await writer.close();
    ::shutdown(rl.x.get(), SHUT_WR);
    // Now the sink reads: everything the source managed to send arrives, in order.
    sc.spawn(check_pattern(rl.y.get(), 42, g));
    ::shutdown(rl.y.get(), SHUT_WR);
    co_await sc.join();
  }(rel, buf, sent, sent_while_stalled, rss_stalled, got, st, done));
  INFO("sent while stalled " << sent_while_stalled << ", bound " << bound);
  CHECK(sent_while_stalled > 0);
  CHECK(sent_while_stalled < bound);
  CHECK(rss_stalled < rss0 + 4 * 1024 * 1024);
  CHECK(done);
  CHECK(st.error == 0);
  CHECK(got.bytes == sent);
  CHECK(got.mismatches == 0);
  CHECK(st.a_to_b == sent);
}

TEST_CASE("pump fairness: a busy bulk relay does not starve a request/response relay on the same reactor") {
  rt::Reactor r;
  Relay bulk(unix_pair(), unix_pair());
  Relay chat(unix_pair(), unix_pair());
  size_t bulk_bytes = 0;
  int round_trips = 0;
  stream::PumpStats st1, st2;
  bool d1 = false, d2 = false;
  rt::run_blocking([](Relay &bk, Relay &ch, size_t &bb, int &rtt, stream::PumpStats &s1, stream::PumpStats &s2, bool &f1,
                      bool &f2) -> rt::Task<void> {
    rt::Scope pumps, load;
    pumps.spawn(run_pump(bk.a, bk.b, s1, 64 * 1024, f1));
    pumps.spawn(run_pump(ch.a, ch.b, s2, 64 * 1024, f2));
    // Bulk: always data to move.
    load.spawn([](int fd) -> rt::Task<void> {
      std::vector<std::byte> chunk(64 * 1024, std::byte{0x55});
      for (;;) {
        int w = co_await rt::send(fd, chunk);
        if (w <= 0) co_return;
      }
    }(bk.x.get()));
    load.spawn([](int fd, size_t &n) -> rt::Task<void> {
      std::vector<std::byte> buf(64 * 1024);
      for (;;) {
        int m = co_await rt::recv(fd, buf);
        if (m <= 0) co_return;
        n += size_t(m);
      }
    }(bk.y.get(), bb));
    // Chat: an echo behind y, and a client doing one byte out, one byte back.
    load.spawn([](int fd) -> rt::Task<void> {
      std::byte b[1];
      for (;;) {
        int m = co_await rt::recv(fd, b);
        if (m <= 0) co_return;
        int w = co_await rt::send(fd, b);
        if (w <= 0) co_return;
      }
    }(ch.y.get()));
    load.spawn([](int fd, int &n) -> rt::Task<void> {
      std::byte b[1] = {std::byte{'q'}};
      for (;;) {
        int w = co_await rt::send(fd, b);
        if (w <= 0) co_return;
        int m = co_await rt::recv(fd, b);
        if (m <= 0) co_return;
        ++n;
      }
    }(ch.x.get(), rtt));
    co_await rt::sleep_for(500ms);
    co_await load.close();
    co_await pumps.close();
  }(bulk, chat, bulk_bytes, round_trips, st1, st2, d1, d2));
  INFO("bulk bytes " << bulk_bytes << ", round trips " << round_trips);
  CHECK(bulk_bytes > 1024 * 1024);
  CHECK(round_trips > 0);
  CHECK(r.inflight() == 0);
}

TEST_CASE("pump cancelled by its scope: returns promptly, no op left in flight, no fd leak") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    Relay rel(tcp_pair(), tcp_pair());
    stream::PumpStats st;
    st.error = -1;
    bool done = false;
    rt::Scope s;
    s.spawn(run_pump(rel.a, rel.b, st, 64 * 1024, done));
    auto t0 = rt::Clock::now();
    rt::run_blocking([](rt::Scope &sc, int x) -> rt::Task<void> {
      int n = co_await rt::send(x, bytes("partial"));
      CHECK(n == 7);
      co_await rt::sleep_for(20ms);
      co_await sc.close();
    }(s, rel.x.get()));
    CHECK(rt::Clock::now() - t0 < 2s);
    CHECK(s.empty());
    CHECK(done);
    CHECK(st.a_to_b == 7);
    CHECK(st.error == ECANCELED);
    CHECK(r.inflight() == 0);
  }
  CHECK(test::open_fd_count() == before);
}
