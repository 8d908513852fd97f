// net/socket: address literals, listen/connect errors, and the multishot Acceptor's
// lifecycle (accept, cancel, stop, bounded queue), all on real loopback sockets.
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "runtime_test_helpers.hpp"

using namespace alk;
using namespace std::chrono_literals;

namespace {

net::Endpoint loopback(uint16_t port = 0) { return *net::Endpoint::from_ip("127.0.0.1", port); }

// A listener on an ephemeral loopback port.
rt::UniqueFd listener(int backlog = 128) {
  auto l = net::listen_tcp(loopback(), backlog);
  REQUIRE(l.ok());
  return std::move(l).value();
}

uint16_t port_of(int fd) { return net::Endpoint::of_socket_local(fd).port(); }

// A plain blocking client connect, done outside the reactor (the kernel completes the
// handshake against the listen queue without anyone calling accept).
rt::UniqueFd blocking_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  auto ep = loopback(port);
  REQUIRE(::connect(fd, ep.sa(), ep.len) == 0);
  return rt::UniqueFd(fd);
}

// A listener whose accept queue is full, so further SYNs are dropped and a connect hangs
// (the loopback stand-in for a non-routable address). Keeps the filler connections alive.
struct FullListener {
  rt::UniqueFd l;
  std::vector<rt::UniqueFd> fillers;
  uint16_t port = 0;
  FullListener() {
    l = listener(0);
    port = port_of(l.get());
    // backlog 0 admits one queued connection; a few more make sure the queue is full.
    for (int i = 0; i < 2; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      REQUIRE(fd >= 0);
      auto ep = loopback(port);
      ::connect(fd, ep.sa(), ep.len);
      fillers.emplace_back(fd);
    }
    ::usleep(50'000);  // let the handshakes land in the accept queue
  }
};

}  // namespace

TEST_CASE("Endpoint: IPv4 literal parses and formats") {
  auto ep = net::Endpoint::from_ip("192.0.2.7", 8080);
  REQUIRE(ep);
  CHECK(ep->family() == AF_INET);
  CHECK(ep->len == sizeof(sockaddr_in));
  CHECK(ep->port() == 8080);
  CHECK(ep->ip() == "192.0.2.7");
  CHECK(ep->to_string() == "192.0.2.7:8080");
  auto *sin = reinterpret_cast<const sockaddr_in *>(ep->sa());
  CHECK(ntohl(sin->sin_addr.s_addr) == 0xC0000207u);
}

TEST_CASE("Endpoint: IPv6 literal parses, is canonicalised and bracketed") {
  auto ep = net::Endpoint::from_ip("2001:0db8:0000:0000:0000:0000:0000:0001", 443);
  REQUIRE(ep);
  CHECK(ep->family() == AF_INET6);
  CHECK(ep->len == sizeof(sockaddr_in6));
  CHECK(ep->port() == 443);
  CHECK(ep->ip() == "2001:db8::1");
  CHECK(ep->to_string() == "[2001:db8::1]:443");
  auto lo = net::Endpoint::from_ip("::1", 0);
  REQUIRE(lo);
  CHECK(lo->to_string() == "[::1]:0");
  auto mapped = net::Endpoint::from_ip("::ffff:10.1.2.3", 65535);
  REQUIRE(mapped);
  CHECK(mapped->family() == AF_INET6);
  CHECK(mapped->to_string() == "[::ffff:10.1.2.3]:65535");
}

TEST_CASE("Endpoint: names, brackets and garbage are not IP literals") {
  for (const char *s : {"localhost", "", "1.2.3", "256.1.1.1", "[::1]", " 1.2.3.4", "1.2.3.4 ", "::1%lo", "1.2.3.4:80",
                        "::g", "example.com"})
    CHECK_FALSE(net::Endpoint::from_ip(s, 1));
  // A default Endpoint is empty, not a crash.
  net::Endpoint none;
  CHECK(none.port() == 0);
  CHECK(none.ip().empty());
}

TEST_CASE("listen_tcp on port 0 picks an ephemeral port; local() reports it") {
  rt::Reactor r;
  auto l = listener();
  auto local = net::Endpoint::of_socket_local(l.get());
  CHECK(local.ip() == "127.0.0.1");
  CHECK(local.port() != 0);
  net::Acceptor acc(std::move(l));
  CHECK(acc.local().port() == local.port());
}

TEST_CASE("listen_tcp on a port in use fails with EADDRINUSE and names the address") {
  auto first = listener();
  uint16_t port = port_of(first.get());
  auto second = net::listen_tcp(loopback(port));
  REQUIRE_FALSE(second.ok());
  CHECK(second.error().code == EADDRINUSE);
  const std::string &what = second.error().what;
  CHECK(what.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(what.find("in use") != std::string::npos);
}

TEST_CASE("listen_tcp: IPv6 sockets are v6-only, so v4 and v6 can share a port") {
  auto v4 = listener();
  uint16_t port = port_of(v4.get());
  auto v6 = net::listen_tcp(*net::Endpoint::from_ip("::1", port));
  if (!v6.ok() && v6.error().code == EADDRNOTAVAIL) {
    WARN("no IPv6 loopback here");
    return;
  }
  REQUIRE(v6.ok());
  CHECK(net::Endpoint::of_socket_local(v6->get()).to_string() == "[::1]:" + std::to_string(port));
  int v6only = 0;
  socklen_t len = sizeof v6only;
  REQUIRE(getsockopt(v6->get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &len) == 0);
  CHECK(v6only == 1);
}

TEST_CASE("connect_tcp + Acceptor: both ends see each other's addresses, TCP_NODELAY on both") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    net::Acceptor acc(listener());
    uint16_t port = acc.local().port();
    rt::run_blocking([](net::Acceptor &a, uint16_t p) -> rt::Task<void> {
      auto c = co_await net::connect_tcp(loopback(p), 2s);
      REQUIRE(c.ok());
      auto s = co_await a.accept();
      REQUIRE(s.ok());
      CHECK(net::Endpoint::of_socket_peer(c->get()).port() == p);
      CHECK(net::Endpoint::of_socket_peer(s->get()).port() == net::Endpoint::of_socket_local(c->get()).port());
      for (int fd : {c->get(), s->get()}) {
        int nd = 0;
        socklen_t len = sizeof nd;
        REQUIRE(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nd, &len) == 0);
        CHECK(nd != 0);
      }
      const char msg[] = "ping";
      int n = co_await rt::send(c->get(), std::as_bytes(std::span(msg, 4)));
      CHECK(n == 4);
      char buf[8] = {};
      int m = co_await rt::recv(s->get(), std::as_writable_bytes(std::span(buf)));
      CHECK(m == 4);
      CHECK(std::string(buf, 4) == "ping");
    }(acc, port));
    rt::run_blocking(acc.stop());
  }
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("connect_tcp to a closed port: ECONNREFUSED, message names the target, no fd leak") {
  rt::Reactor r;
  uint16_t port;
  {
    auto l = listener();
    port = port_of(l.get());
  }  // closed: nothing listens there now
  auto before = test::open_fd_count();
  auto res = rt::run_blocking_value([](uint16_t p) -> rt::Task<rt::Error> {
    auto c = co_await net::connect_tcp(loopback(p), 2s);
    co_return c.ok() ? rt::Error{0, "connected"} : c.error();
  }(port));
  CHECK(res.code == ECONNREFUSED);
  CHECK(res.what.find("connect to 127.0.0.1:" + std::to_string(port)) != std::string::npos);
  CHECK(test::open_fd_count() == before);
}

TEST_CASE("connect_tcp deadline: a listener with a full backlog makes connect time out") {
  rt::Reactor r;
  FullListener full;
  auto before = test::open_fd_count();
  auto t0 = rt::Clock::now();
  auto res = rt::run_blocking_value([](uint16_t p) -> rt::Task<rt::Error> {
    auto c = co_await net::connect_tcp(loopback(p), 200ms);
    co_return c.ok() ? rt::Error{0, "connected"} : c.error();
  }(full.port));
  auto took = rt::Clock::now() - t0;
  CHECK(res.code == ETIMEDOUT);
  CHECK(took >= 190ms);
  CHECK(took < 3s);
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("connect_tcp deadline does not fire when the connect completes") {
  rt::Reactor r;
  net::Acceptor acc(listener());
  auto t0 = rt::Clock::now();
  bool ok = rt::run_blocking_value([](uint16_t p) -> rt::Task<bool> {
    auto c = co_await net::connect_tcp(loopback(p), 300ms);
    if (!c.ok()) co_return false;
    // Outlive the deadline with the connection open: nothing may cancel or close it.
    co_await rt::sleep_for(400ms);
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->get(), SOL_SOCKET, SO_ERROR, &err, &len);
    co_return err == 0 && net::Endpoint::of_socket_peer(c->get()).port() == p;
  }(acc.local().port()));
  CHECK(ok);
  CHECK(rt::Clock::now() - t0 >= 400ms);
  rt::run_blocking(acc.stop());
}

TEST_CASE("a pending connect cancelled by scope close returns ECANCELED, no leaks") {
  rt::Reactor r;
  FullListener full;
  auto before = test::open_fd_count();
  int code = 0;
  {
    rt::Scope s;
    s.spawn([](uint16_t p, int &out) -> rt::Task<void> {
      auto c = co_await net::connect_tcp(loopback(p), 30s);
      out = c.ok() ? 0 : c.error().code;
    }(full.port, code));
    auto t0 = rt::Clock::now();
    rt::run_blocking([](rt::Scope &sc) -> rt::Task<void> {
      co_await rt::sleep_for(50ms);  // the connect is really in flight
      co_await sc.close();
    }(s));
    CHECK(rt::Clock::now() - t0 < 2s);
  }
  CHECK(code == ECANCELED);
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("Acceptor hands out many connections; each is distinct and usable") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    net::Acceptor acc(listener());
    uint16_t port = acc.local().port();
    std::vector<rt::UniqueFd> clients;
    for (int i = 0; i < 50; ++i) clients.push_back(blocking_connect(port));
    int matched = rt::run_blocking_value([](net::Acceptor &a, std::vector<rt::UniqueFd> &cl) -> rt::Task<int> {
      int ok = 0;
      std::vector<uint16_t> want;
      for (auto &c : cl) want.push_back(net::Endpoint::of_socket_local(c.get()).port());
      for (size_t i = 0; i < cl.size(); ++i) {
        auto s = co_await a.accept();
        REQUIRE(s.ok());
        uint16_t peer = net::Endpoint::of_socket_peer(s->get()).port();
        for (auto &w : want)
          if (w == peer) {
            w = 0;
            ++ok;
          }
      }
      co_return ok;
    }(acc, clients));
    CHECK(matched == 50);
    rt::run_blocking(acc.stop());
  }
  CHECK(test::open_fd_count() == before);
}

TEST_CASE("Acceptor::accept cancelled by scope close returns ECANCELED; acceptor still works after") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    net::Acceptor acc(listener());
    int code = 0;
    {
      rt::Scope s;
      s.spawn([](net::Acceptor &a, int &out) -> rt::Task<void> {
        auto c = co_await a.accept();
        out = c.ok() ? 0 : c.error().code;
      }(acc, code));
      rt::run_blocking([](rt::Scope &sc) -> rt::Task<void> { co_await sc.close(); }(s));
    }
    CHECK(code == ECANCELED);
    // The multishot accept was not disturbed by the waiter going away.
    auto client = blocking_connect(acc.local().port());
    bool got = rt::run_blocking_value([](net::Acceptor &a) -> rt::Task<bool> {
      auto c = co_await a.accept();
      co_return c.ok();
    }(acc));
    CHECK(got);
    rt::run_blocking(acc.stop());
  }
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("Acceptor::stop while a task waits in accept: the waiter gets EBADF, listener closed") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  int code = 0;
  std::string what;
  uint16_t port;
  {
    net::Acceptor acc(listener());
    port = acc.local().port();
    rt::Scope s;
    s.spawn([](net::Acceptor &a, int &out, std::string &w) -> rt::Task<void> {
      auto c = co_await a.accept();
      out = c.ok() ? 0 : c.error().code;
      if (!c.ok()) w = c.error().what;
    }(acc, code, what));
    rt::run_blocking([](net::Acceptor &a, rt::Scope &sc) -> rt::Task<void> {
      co_await rt::sleep_for(10ms);
      co_await a.stop();
      co_await sc.join();
    }(acc, s));
    CHECK(acc.fd() < 0);
    // Later accepts fail at once too.
    auto again = rt::run_blocking_value([](net::Acceptor &a) -> rt::Task<int> {
      auto c = co_await a.accept();
      co_return c.ok() ? 0 : c.error().code;
    }(acc));
    CHECK(again == EBADF);
  }
  CHECK(code == EBADF);
  CHECK(what.find("stopped") != std::string::npos);
  // Nobody listens on the port any more.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  auto ep = loopback(port);
  CHECK(::connect(fd, ep.sa(), ep.len) != 0);
  CHECK(errno == ECONNREFUSED);
  ::close(fd);
  CHECK(test::open_fd_count() == before);
}

TEST_CASE("Acceptor destroyed without stop(): the multishot SQE is reaped, nothing leaks") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    net::Acceptor acc(listener());
    // Let the multishot SQE reach the kernel before the acceptor goes.
    rt::run_blocking([]() -> rt::Task<void> { co_await rt::sleep_for(5ms); }());
  }
  CHECK(test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("Acceptor bounds its queue: connections beyond max_queued are shed, not hoarded") {
  rt::Reactor r;
  auto before = test::open_fd_count();
  {
    net::Acceptor acc(listener(), 4);
    uint16_t port = acc.local().port();
    std::vector<rt::UniqueFd> clients;
    for (int i = 0; i < 12; ++i) clients.push_back(blocking_connect(port));
    // Nobody accepts for a while: the acceptor must not queue more than 4.
    rt::run_blocking([]() -> rt::Task<void> { co_await rt::sleep_for(100ms); }());
    int shed = 0;
    for (auto &c : clients) {
      char b;
      ssize_t n = ::recv(c.get(), &b, 1, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno == ECONNRESET)) ++shed;
    }
    CHECK(shed >= 8);
    int accepted = rt::run_blocking_value([](net::Acceptor &a) -> rt::Task<int> {
      int n = 0;
      for (int i = 0; i < 4; ++i) {
        auto c = co_await a.accept();
        if (c.ok()) ++n;
      }
      co_return n;
    }(acc));
    CHECK(accepted == 4);
    // And it still accepts new ones once it has room again.
    auto late = blocking_connect(port);
    bool got = rt::run_blocking_value([](net::Acceptor &a) -> rt::Task<bool> {
      auto c = co_await a.accept();
      co_return c.ok();
    }(acc));
    CHECK(got);
    rt::run_blocking(acc.stop());
  }
  CHECK(test::open_fd_count() == before);
}

TEST_CASE("accept_each: out of fds (EMFILE) it backs off instead of spinning, then accepts what waited") {
  rt::Reactor r;
  net::Acceptor acc(listener());
  const uint16_t port = acc.local().port();
  std::vector<rt::UniqueFd> clients;
  for (int i = 0; i < 5; ++i) clients.push_back(blocking_connect(port));  // wait in the backlog
  rlimit old{};
  REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
  // No fd left for accept: every accept fails with EMFILE until the limit is restored.
  rlimit tight = old;
  const int lowest_free = ::dup(0);  // new fds take the lowest free number: cap the limit there
  REQUIRE(lowest_free >= 0);
  ::close(lowest_free);
  tight.rlim_cur = rlim_t(lowest_free);
  REQUIRE(setrlimit(RLIMIT_NOFILE, &tight) == 0);
  auto cpu = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  std::vector<rt::UniqueFd> got;
  double cpu_starved = 0;
  rt::run_blocking([](net::Acceptor &a, std::vector<rt::UniqueFd> &got, const rlimit &old, auto cpu,
                      double &cpu_starved) -> rt::Task<void> {
    rt::Scope loop;
    const net::OnConnection keep = [&got](rt::UniqueFd fd) { got.push_back(std::move(fd)); };  // outlives the loop
    loop.spawn(net::accept_each(a, keep));
    const double c0 = cpu();
    const int s1 = co_await rt::sleep_for(500ms);
    (void)s1;
    cpu_starved = cpu() - c0;
    CHECK(got.empty());
    REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
    for (int i = 0; i < 100 && got.size() < 5; ++i) {
      const int s2 = co_await rt::sleep_for(10ms);
      (void)s2;
    }
    co_await a.stop();
    co_await loop.close();
  }(acc, got, old, cpu, cpu_starved));
  setrlimit(RLIMIT_NOFILE, &old);
  CHECK(got.size() == 5);
  // A spinning loop burns the whole 0.5 s; backing off every 100 ms costs a few milliseconds.
  CHECK(cpu_starved < 0.1);
}
