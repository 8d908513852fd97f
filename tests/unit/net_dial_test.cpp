// net: resolver (c-ares on the reactor), dial, and dialing through SOCKS5 / HTTP CONNECT
// proxies. Everything runs on loopback: a fake DNS server, and the proxies, are coroutines in
// the test on the same reactor as the code under test.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "net/dial.hpp"
#include "net/proxy_dial.hpp"
#include "net/resolver.hpp"
#include "net/socket.hpp"
#include "net/spec.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/scope.hpp"
#include "runtime/task.hpp"

using namespace alk;
using namespace alk::net;
using rt::Task;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------
// Byte helpers over the reactor

Task<bool> send_all(int fd, std::string data) {
  size_t off = 0;
  while (off < data.size()) {
    int r = co_await rt::send(fd, std::as_bytes(std::span(data.data() + off, data.size() - off)));
    if (r <= 0) co_return false;
    off += size_t(r);
  }
  co_return true;
}

// Exactly n bytes, or fewer at EOF/error.
Task<std::string> recv_n(int fd, size_t n) {
  std::string out(n, '\0');
  size_t off = 0;
  while (off < n) {
    int r = co_await rt::recv(fd, std::as_writable_bytes(std::span(out.data() + off, n - off))).with_timeout(5s);
    if (r <= 0) break;
    off += size_t(r);
  }
  out.resize(off);
  co_return out;
}

Task<std::string> recv_until_blank_line(int fd) {
  std::string head;
  while (head.size() < 16384 && head.find("\r\n\r\n") == std::string::npos) {
    std::string b = co_await recv_n(fd, 1);
    if (b.empty()) break;
    head += b;
  }
  co_return head;
}

Task<void> echo(int fd) {
  char buf[4096];
  for (;;) {
    int r = co_await rt::recv(fd, std::as_writable_bytes(std::span(buf))).with_timeout(5s);
    if (r <= 0) break;
    bool ok = co_await send_all(fd, std::string(buf, size_t(r)));
    if (!ok) break;
  }
}

Endpoint loopback(uint16_t port = 0) { return *Endpoint::from_ip("127.0.0.1", port); }

// A port that refuses: bind, read the port, close.
uint16_t closed_port() {
  auto l = listen_tcp(loopback());
  REQUIRE(l);
  return Endpoint::of_socket_local(l->get()).port();
}

// ---------------------------------------------------------------------------------------
// A fake DNS server on 127.0.0.1 (UDP). Behaviour by query name:
//   slow.test    A 10.1.2.3 after 150 ms (AAAA: no data, also delayed)
//   nx.test      NXDOMAIN
//   fail.test    SERVFAIL
//   silent.test  never answers
//   multi.test   A 127.0.0.3 then A 127.0.0.1 (AAAA: no data)
//   v6.test      AAAA ::1, A 127.0.0.1
//   anything else: A 10.9.9.9
class FakeDns {
 public:
  FakeDns() {
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    fd_.reset(s);
    Endpoint ep = loopback();
    REQUIRE(::bind(s, ep.sa(), ep.len) == 0);
    port_ = Endpoint::of_socket_local(s).port();
  }
  std::string servers() const { return "127.0.0.1:" + std::to_string(port_); }
  int queries = 0;

  Task<void> serve() {
    for (;;) {
      int r = co_await rt::poll(fd_.get(), POLLIN);
      if (r < 0) break;
      uint8_t buf[512];
      sockaddr_storage from{};
      socklen_t fl = sizeof from;
      ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr *>(&from), &fl);
      if (n < 12) continue;
      ++queries;
      std::string name;
      size_t off = 12;
      while (off < size_t(n) && buf[off] != 0) {
        size_t len = buf[off++];
        if (off + len > size_t(n)) break;
        if (!name.empty()) name += '.';
        for (size_t i = 0; i < len; ++i) name += char(std::tolower(buf[off + i]));
        off += len;
      }
      off += 1;
      if (off + 4 > size_t(n)) continue;
      uint16_t qtype = uint16_t(buf[off] << 8 | buf[off + 1]);
      off += 4;
      std::string question(reinterpret_cast<char *>(buf) + 12, off - 12);

      if (name == "silent.test") continue;
      int rcode = 0;
      std::vector<std::string> answers;  // raw rdata
      auto a = [](const char *ip) {
        in_addr v{};
        inet_pton(AF_INET, ip, &v);
        return std::string(reinterpret_cast<char *>(&v), 4);
      };
      auto aaaa = [](const char *ip) {
        in6_addr v{};
        inet_pton(AF_INET6, ip, &v);
        return std::string(reinterpret_cast<char *>(&v), 16);
      };
      if (name == "nx.test") rcode = 3;
      else if (name == "fail.test") rcode = 2;
      else if (name == "slow.test") { if (qtype == 1) answers = {a("10.1.2.3")}; }
      else if (name == "multi.test") { if (qtype == 1) answers = {a("127.0.0.3"), a("127.0.0.1")}; }
      else if (name == "v6.test") answers = qtype == 1 ? std::vector<std::string>{a("127.0.0.1")} : std::vector<std::string>{aaaa("::1")};
      else if (qtype == 1) answers = {a("10.9.9.9")};

      std::string resp;
      resp += char(buf[0]);
      resp += char(buf[1]);
      resp += char(0x81);
      resp += char(0x80 | rcode);
      resp += std::string("\x00\x01", 2);
      resp += char(0);
      resp += char(answers.size());
      resp += std::string(4, '\0');
      resp += question;
      for (auto &rd : answers) {
        resp += std::string("\xc0\x0c", 2);
        resp += char(0);
        resp += char(qtype);
        resp += std::string("\x00\x01\x00\x00\x00\x3c", 6);
        resp += char(0);
        resp += char(rd.size());
        resp += rd;
      }
      if (name == "slow.test")
        replies_.spawn(send_later(fd_.get(), resp, from, fl, 150ms));
      else
        ::sendto(fd_.get(), resp.data(), resp.size(), 0, reinterpret_cast<sockaddr *>(&from), fl);
    }
  }

 private:
  static Task<void> send_later(int fd, std::string resp, sockaddr_storage to, socklen_t tl, rt::Duration d) {
    int r = co_await rt::sleep_for(d);
    if (r == 0) ::sendto(fd, resp.data(), resp.size(), 0, reinterpret_cast<sockaddr *>(&to), tl);
  }
  rt::UniqueFd fd_;
  uint16_t port_ = 0;
  rt::Scope replies_;
};

// Runs body while the fake DNS serves, then stops it.
template <class Body>
void with_dns(FakeDns &dns, Body body) {
  rt::run_blocking([](FakeDns &d, Body b) -> Task<void> {
    rt::Scope bg;
    bg.spawn(d.serve());
    co_await b();
    co_await bg.close();
  }(dns, std::move(body)));
}

using Addrs = rt::Result<std::vector<Endpoint>>;
using FdResult = rt::Result<rt::UniqueFd>;

std::vector<std::string> ips(const Addrs &a) {
  std::vector<std::string> out;
  if (a.ok())
    for (auto &e : const_cast<Addrs &>(a).value()) out.push_back(e.ip());
  return out;
}

// ---------------------------------------------------------------------------------------
// A one-connection SOCKS5 proxy. It records the request, answers `rep`, and on success
// plays the target itself: sends `banner` in the same segment as the reply, then echoes.
struct SocksScript {
  uint8_t rep = 0;
  bool require_auth = false;
  std::string user, pass;
  std::string banner;
  // recorded
  std::string methods;
  uint8_t atyp = 0;
  std::string host;  // text for names, raw bytes for addresses
  uint16_t port = 0;
  std::string got_user, got_pass;
  bool finished = false;
};

Task<void> socks_proxy(Acceptor &acc, SocksScript &s) {
  auto c = co_await acc.accept();
  if (!c) co_return;
  int fd = c->get();
  std::string g = co_await recv_n(fd, 2);
  if (g.size() != 2 || g[0] != 5) co_return;
  s.methods = co_await recv_n(fd, uint8_t(g[1]));
  if (s.require_auth) {
    if (s.methods.find('\x02') == std::string::npos) {
      (void)co_await send_all(fd, std::string("\x05\xff", 2));
      co_return;
    }
    (void)co_await send_all(fd, std::string("\x05\x02", 2));
    std::string v = co_await recv_n(fd, 2);
    if (v.size() != 2) co_return;
    s.got_user = co_await recv_n(fd, uint8_t(v[1]));
    std::string pl = co_await recv_n(fd, 1);
    if (pl.size() != 1) co_return;
    s.got_pass = co_await recv_n(fd, uint8_t(pl[0]));
    bool ok = s.got_user == s.user && s.got_pass == s.pass;
    (void)co_await send_all(fd, std::string(ok ? "\x01\x00" : "\x01\x01", 2));
    if (!ok) co_return;
  } else {
    (void)co_await send_all(fd, std::string("\x05\x00", 2));
  }
  std::string req = co_await recv_n(fd, 4);
  if (req.size() != 4) co_return;
  s.atyp = uint8_t(req[3]);
  if (s.atyp == 1) s.host = co_await recv_n(fd, 4);
  else if (s.atyp == 4) s.host = co_await recv_n(fd, 16);
  else {
    std::string l = co_await recv_n(fd, 1);
    s.host = co_await recv_n(fd, l.empty() ? 0 : uint8_t(l[0]));
  }
  std::string p = co_await recv_n(fd, 2);
  if (p.size() == 2) s.port = uint16_t(uint8_t(p[0]) << 8 | uint8_t(p[1]));
  std::string reply("\x05\x00\x00\x01\x7f\x00\x00\x01\x04\xd2", 10);
  reply[1] = char(s.rep);
  if (s.rep == 0) reply += s.banner;
  (void)co_await send_all(fd, reply);
  s.finished = true;
  if (s.rep == 0) co_await echo(fd);
}

// A one-connection HTTP CONNECT proxy: records the request head, answers `response`
// followed in the same segment by `banner`, then echoes when the status was 2xx.
struct HttpScript {
  std::string response = "HTTP/1.1 200 Connection established\r\n\r\n";
  std::string banner;
  std::string head;  // recorded
};

Task<void> http_proxy(Acceptor &acc, HttpScript &s) {
  auto c = co_await acc.accept();
  if (!c) co_return;
  int fd = c->get();
  s.head = co_await recv_until_blank_line(fd);
  (void)co_await send_all(fd, s.response + s.banner);
  if (s.response.rfind("HTTP/1.1 2", 0) == 0) co_await echo(fd);
}

struct ProxyFixture {
  rt::Reactor r;
  std::optional<Acceptor> acc;
  uint16_t port = 0;
  ProxyFixture() {
    auto l = listen_tcp(loopback());
    REQUIRE(l);
    acc.emplace(std::move(*l));
    port = acc->local().port();
  }
  ~ProxyFixture() { acc.reset(); }  // reaps the accept SQE while the reactor lives
  ProxyUrl url(ProxyUrl::Kind k, std::string user = {}, std::string pass = {}) const {
    ProxyUrl u;
    u.kind = k;
    u.addr = HostPort{"127.0.0.1", port};
    u.user = std::move(user);
    u.pass = std::move(pass);
    return u;
  }
};

// Dials through the SOCKS script, then reads the banner and checks the echo.
struct ViaOutcome {
  int code = -1;  // 0 on success
  std::string what;
  std::string banner;
  std::string echoed;
};

Task<void> via_and_talk(Acceptor &acc, SocksScript *socks, HttpScript *http, ProxyUrl url, std::string host,
                        uint16_t port, size_t banner_len, ViaOutcome &out) {
  rt::Scope bg;
  if (socks) bg.spawn(socks_proxy(acc, *socks));
  if (http) bg.spawn(http_proxy(acc, *http));
  auto fd = co_await dial_via(url, host, port, 5s);
  if (fd) {
    out.code = 0;
    out.banner = co_await recv_n(fd->get(), banner_len);
    bool sent = co_await send_all(fd->get(), "ping");
    if (sent) out.echoed = co_await recv_n(fd->get(), 4);
    fd->reset();
  } else {
    out.code = fd.error().code;
    out.what = fd.error().what;
  }
  co_await bg.join();
}

ViaOutcome run_socks(SocksScript &s, std::string host, uint16_t port, std::string user = {}, std::string pass = {}) {
  ProxyFixture f;
  ViaOutcome out;
  rt::run_blocking(via_and_talk(*f.acc, &s, nullptr, f.url(ProxyUrl::Socks5, user, pass), host, port, s.banner.size(), out));
  return out;
}

ViaOutcome run_http(HttpScript &s, std::string host, uint16_t port, std::string user = {}, std::string pass = {}) {
  ProxyFixture f;
  ViaOutcome out;
  rt::run_blocking(via_and_talk(*f.acc, nullptr, &s, f.url(ProxyUrl::Http, user, pass), host, port, s.banner.size(), out));
  return out;
}

}  // namespace

// =========================================================================================
// Resolver

TEST_CASE("resolve: localhost comes from /etc/hosts with the port filled in") {
  rt::Reactor r;
  Addrs got = rt::Error{};
  rt::run_blocking([](Addrs &g) -> Task<void> { g = co_await resolve("localhost", 8080); }(got));
  REQUIRE(got.ok());
  REQUIRE_FALSE(got->empty());
  bool loop = false;
  for (auto &e : *got) {
    loop = loop || e.ip() == "127.0.0.1" || e.ip() == "::1";
    CHECK(e.port() == 8080);
  }
  CHECK(loop);
}

TEST_CASE("resolve: IP literals short-circuit without touching c-ares") {
  rt::Reactor r;
  Resolver res("127.0.0.1:1");  // a server that could never answer: literals must not ask it
  Addrs v4 = rt::Error{}, v6 = rt::Error{}, br = rt::Error{};
  auto t0 = rt::Clock::now();
  rt::run_blocking([](Resolver &rs, Addrs &a, Addrs &b, Addrs &c) -> Task<void> {
    a = co_await rs.resolve("192.0.2.7", 443);
    b = co_await rs.resolve("2001:db8::1", 22);
    c = co_await rs.resolve("[::1]", 80);
  }(res, v4, v6, br));
  CHECK(rt::Clock::now() - t0 < 500ms);
  CHECK(ips(v4) == std::vector<std::string>{"192.0.2.7"});
  CHECK(v4->front().port() == 443);
  CHECK(ips(v6) == std::vector<std::string>{"2001:db8::1"});
  CHECK(v6->front().family() == AF_INET6);
  CHECK(ips(br) == std::vector<std::string>{"::1"});
  CHECK(res.idle());
}

TEST_CASE("resolve: a .invalid name is not found, at once") {
  rt::Reactor r;
  Addrs got = rt::Error{};
  auto t0 = rt::Clock::now();
  rt::run_blocking([](Addrs &g) -> Task<void> { g = co_await resolve("no-such-host.invalid", 80); }(got));
  CHECK(rt::Clock::now() - t0 < 500ms);
  REQUIRE_FALSE(got.ok());
  CHECK(got.error().code == rt::kErrDnsNotFound);
  CHECK(got.error().what.find("cannot resolve no-such-host.invalid") == 0);
}

TEST_CASE("resolve: names that cannot be names are refused without a query") {
  rt::Reactor r;
  Resolver res("127.0.0.1:1");
  Addrs a = rt::Error{}, b = rt::Error{};
  rt::run_blocking([](Resolver &rs, Addrs &x, Addrs &y) -> Task<void> {
    x = co_await rs.resolve("", 80);
    y = co_await rs.resolve(std::string("evil\0name", 9), 80);
  }(res, a, b));
  CHECK(a.error().code == rt::kErrDnsNotFound);
  CHECK(b.error().code == rt::kErrDnsNotFound);
  CHECK(res.idle());
}

TEST_CASE("resolve: DNS answers, NXDOMAIN and SERVFAIL through a real (fake) name server") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  Addrs ok = rt::Error{}, nx = rt::Error{}, fail = rt::Error{}, v6 = rt::Error{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, Addrs &a, Addrs &b, Addrs &c, Addrs &d) -> Task<void> {
      a = co_await rs.resolve("anything.test", 53);
      b = co_await rs.resolve("nx.test", 53);
      c = co_await rs.resolve("fail.test", 53, 3s);
      d = co_await rs.resolve("v6.test", 53);
    }(res, ok, nx, fail, v6);
  });
  CHECK(ips(ok) == std::vector<std::string>{"10.9.9.9"});
  REQUIRE_FALSE(nx.ok());
  CHECK(nx.error().code == rt::kErrDnsNotFound);
  CHECK(nx.error().what.find("cannot resolve nx.test: ") == 0);
  REQUIRE_FALSE(fail.ok());
  CHECK(fail.error().code == rt::kErrDnsFailure);
  auto v6ips = ips(v6);
  CHECK(v6ips.size() == 2);
  CHECK(std::find(v6ips.begin(), v6ips.end(), "::1") != v6ips.end());
  CHECK(std::find(v6ips.begin(), v6ips.end(), "127.0.0.1") != v6ips.end());
  CHECK(dns.queries >= 6);
}

TEST_CASE("resolve: the reactor keeps serving timers while a lookup is in flight") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  Addrs got = rt::Error{};
  int ticks = 0;
  rt::Duration took{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, Addrs &g, int &t, rt::Duration &took) -> Task<void> {
      rt::Scope ticker;
      ticker.spawn([](int &n) -> Task<void> {
        for (;;) {
          int s = co_await rt::sleep_for(10ms);
          if (s < 0) break;
          ++n;
        }
      }(t));
      auto t0 = rt::Clock::now();
      g = co_await rs.resolve("slow.test", 80);  // answered after 150 ms
      took = rt::Clock::now() - t0;
      co_await ticker.close();
    }(res, got, ticks, took);
  });
  CHECK(ips(got) == std::vector<std::string>{"10.1.2.3"});
  CHECK(took >= 140ms);
  CHECK(ticks >= 3);  // a blocking lookup would have let none of them run
}

TEST_CASE("resolve: several lookups in flight at once each get their own answer") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  std::vector<Addrs> got(4, Addrs(rt::Error{}));
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, std::vector<Addrs> &g) -> Task<void> {
      rt::Scope s;
      const char *names[] = {"slow.test", "nx.test", "x.test", "multi.test"};
      for (int i = 0; i < 4; ++i)
        s.spawn([](Resolver &rs, const char *n, Addrs &out) -> Task<void> { out = co_await rs.resolve(n, 1); }(rs, names[i], g[i]));
      co_await s.join();
    }(res, got);
  });
  CHECK(ips(got[0]) == std::vector<std::string>{"10.1.2.3"});
  CHECK(got[1].error().code == rt::kErrDnsNotFound);
  CHECK(ips(got[2]) == std::vector<std::string>{"10.9.9.9"});
  CHECK(ips(got[3]) == std::vector<std::string>{"127.0.0.3", "127.0.0.1"});  // c-ares' order kept
  CHECK(res.pending() == 0);
}

TEST_CASE("resolve: a silent server runs into the caller's timeout") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  Addrs got = rt::Error{};
  rt::Duration took{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, Addrs &g, rt::Duration &took) -> Task<void> {
      auto t0 = rt::Clock::now();
      g = co_await rs.resolve("silent.test", 80, 300ms);
      took = rt::Clock::now() - t0;
    }(res, got, took);
  });
  REQUIRE_FALSE(got.ok());
  CHECK(got.error().code == rt::kErrDnsFailure);
  CHECK(took >= 290ms);
  CHECK(took < 2s);
  CHECK(res.pending() == 0);  // the abandoned query was cancelled in c-ares, not left behind
}

TEST_CASE("resolve: cancelling a pending lookup (scope close) ends it cleanly") {
  rt::Reactor r;
  FakeDns dns;
  auto res = std::make_unique<Resolver>(dns.servers());
  int code = -1, other_code = -1;
  Addrs other = rt::Error{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, int &c, Addrs &o) -> Task<void> {
      rt::Scope victims;
      victims.spawn([](Resolver &rs, int &c) -> Task<void> {
        auto a = co_await rs.resolve("silent.test", 80, 10s);
        c = a ? 0 : a.error().code;
      }(rs, c));
      victims.spawn([](Resolver &rs, int &c) -> Task<void> {
        auto a = co_await rs.resolve("silent.test", 81, 10s);
        c = a ? 0 : a.error().code;
      }(rs, c));
      co_await rt::sleep_for(50ms);
      CHECK(rs.pending() == 2);
      // A lookup that is still wanted survives its neighbours' cancellation.
      rt::Scope survivor;
      survivor.spawn([](Resolver &rs, Addrs &o) -> Task<void> { o = co_await rs.resolve("slow.test", 1); }(rs, o));
      co_await victims.close();
      CHECK(c == ECANCELED);
      co_await survivor.join();
      CHECK(rs.pending() == 0);
      for (int i = 0; i < 20 && !rs.idle(); ++i) co_await rt::sleep_for(1ms);
      CHECK(rs.idle());
    }(*res, code, other);
  });
  (void)other_code;
  CHECK(code == ECANCELED);
  CHECK(ips(other) == std::vector<std::string>{"10.1.2.3"});
  res.reset();  // destroying the resolver afterwards must not touch the dead frames (ASan)
}

TEST_CASE("resolve: a resolver destroyed with only abandoned queries left is clean") {
  rt::Reactor r;
  FakeDns dns;
  auto res = std::make_unique<Resolver>(dns.servers());
  int code = -1;
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, int &c) -> Task<void> {
      rt::Scope s;
      s.spawn([](Resolver &rs, int &c) -> Task<void> {
        auto a = co_await rs.resolve("silent.test", 80, 10s);
        c = a ? 0 : a.error().code;
      }(rs, c));
      co_await rt::sleep_for(20ms);
      s.cancel();  // no join: the resolver goes down with the cancellation still in flight
      co_await s.join();
    }(*res, code);
  });
  CHECK(code == ECANCELED);
  res.reset();
}

// =========================================================================================
// dial

TEST_CASE("dial: connects to a listening loopback port with TCP_NODELAY") {
  rt::Reactor r;
  auto l = listen_tcp(loopback());
  REQUIRE(l);
  Acceptor acc(std::move(*l));
  uint16_t port = acc.local().port();
  FdResult fd = rt::Error{};
  FdResult peer = rt::Error{};
  rt::run_blocking([](Acceptor &a, uint16_t p, FdResult &fd, FdResult &peer) -> Task<void> {
    fd = co_await dial("127.0.0.1", p);
    peer = co_await a.accept();
  }(acc, port, fd, peer));
  REQUIRE(fd.ok());
  REQUIRE(peer.ok());
  CHECK(Endpoint::of_socket_peer(fd->get()).port() == port);
  CHECK(Endpoint::of_socket_local(fd->get()).port() == Endpoint::of_socket_peer(peer->get()).port());
  int nd = 0;
  socklen_t nl = sizeof nd;
  getsockopt(fd->get(), IPPROTO_TCP, TCP_NODELAY, &nd, &nl);
  CHECK(nd == 1);
}

TEST_CASE("dial: a closed port gives ECONNREFUSED") {
  rt::Reactor r;
  uint16_t port = closed_port();
  FdResult fd = rt::Error{};
  rt::run_blocking([](uint16_t p, FdResult &fd) -> Task<void> { fd = co_await dial("127.0.0.1", p, 2s); }(port, fd));
  REQUIRE_FALSE(fd.ok());
  CHECK(fd.error().code == ECONNREFUSED);
}

TEST_CASE("dial: localhost by name") {
  rt::Reactor r;
  auto l = listen_tcp(loopback());
  REQUIRE(l);
  uint16_t port = Endpoint::of_socket_local(l->get()).port();
  FdResult fd = rt::Error{};
  rt::run_blocking([](uint16_t p, FdResult &fd) -> Task<void> { fd = co_await dial("localhost", p); }(port, fd));
  REQUIRE(fd.ok());
  CHECK(Endpoint::of_socket_peer(fd->get()).to_string() == "127.0.0.1:" + std::to_string(port));
}

TEST_CASE("dial: a refused address moves on to the next one; all refused reports the last error") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  auto l = listen_tcp(loopback());  // 127.0.0.1 only: 127.0.0.3 on the same port refuses
  REQUIRE(l);
  uint16_t port = Endpoint::of_socket_local(l->get()).port();
  uint16_t dead = closed_port();
  FdResult fd = rt::Error{}, none = rt::Error{}, nx = rt::Error{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, uint16_t p, uint16_t d, FdResult &fd, FdResult &none, FdResult &nx) -> Task<void> {
      fd = co_await dial(rs, "multi.test", p);
      none = co_await dial(rs, "multi.test", d);
      nx = co_await dial(rs, "nx.test", p);
    }(res, port, dead, fd, none, nx);
  });
  REQUIRE(fd.ok());
  CHECK(Endpoint::of_socket_peer(fd->get()).ip() == "127.0.0.1");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().code == ECONNREFUSED);
  CHECK(none.error().what.find("127.0.0.1") != std::string::npos);  // the last address tried
  REQUIRE_FALSE(nx.ok());
  CHECK(nx.error().code == rt::kErrDnsNotFound);
}

TEST_CASE("dial: the overall deadline bounds a lookup that never ends") {
  rt::Reactor r;
  FakeDns dns;
  Resolver res(dns.servers());
  FdResult fd = rt::Error{};
  rt::Duration took{};
  with_dns(dns, [&]() -> Task<void> {
    return [](Resolver &rs, FdResult &fd, rt::Duration &took) -> Task<void> {
      auto t0 = rt::Clock::now();
      fd = co_await dial(rs, "silent.test", 80, 250ms);
      took = rt::Clock::now() - t0;
    }(res, fd, took);
  });
  REQUIRE_FALSE(fd.ok());
  CHECK(fd.error().code == rt::kErrDnsFailure);
  CHECK(took < 1s);
}

// =========================================================================================
// Upstream proxies

TEST_CASE("dial_via SOCKS5: domain name CONNECT, tunnel bytes right after the reply are kept") {
  SocksScript s;
  s.banner = "SSH-2.0-target\r\n";
  auto out = run_socks(s, "db.internal", 5432);
  REQUIRE(out.code == 0);
  CHECK(s.methods == std::string("\x00", 1));
  CHECK(s.atyp == 3);
  CHECK(s.host == "db.internal");
  CHECK(s.port == 5432);
  CHECK(out.banner == s.banner);
  CHECK(out.echoed == "ping");
}

TEST_CASE("dial_via SOCKS5: IP literals go as ATYP IPv4 / IPv6") {
  SocksScript a;
  auto o1 = run_socks(a, "10.0.0.7", 80);
  REQUIRE(o1.code == 0);
  CHECK(a.atyp == 1);
  CHECK(a.host == std::string("\x0a\x00\x00\x07", 4));
  CHECK(a.port == 80);
  SocksScript b;
  auto o2 = run_socks(b, "2001:db8::5", 443);
  REQUIRE(o2.code == 0);
  CHECK(b.atyp == 4);
  REQUIRE(b.host.size() == 16);
  CHECK(b.host.substr(0, 4) == std::string("\x20\x01\x0d\xb8", 4));
  CHECK(b.host[15] == '\x05');
  CHECK(o2.echoed == "ping");
}

TEST_CASE("dial_via SOCKS5: RFC 1929 user/pass, accepted and refused") {
  SocksScript good;
  good.require_auth = true;
  good.user = "alice";
  good.pass = "s3cr:t";
  auto ok = run_socks(good, "example.org", 443, "alice", "s3cr:t");
  REQUIRE(ok.code == 0);
  CHECK(good.methods == std::string("\x00\x02", 2));
  CHECK(good.got_user == "alice");
  CHECK(good.got_pass == "s3cr:t");
  CHECK(ok.echoed == "ping");

  SocksScript bad = good;
  auto no = run_socks(bad, "example.org", 443, "alice", "wrong");
  CHECK(no.code == rt::kErrNotAllowed);

  SocksScript noauth;  // we offer nothing the proxy accepts
  noauth.require_auth = true;
  auto none = run_socks(noauth, "example.org", 443);
  CHECK(none.code == rt::kErrNotAllowed);
}

TEST_CASE("dial_via SOCKS5: reply codes map to errno-style codes") {
  const std::pair<uint8_t, int> table[] = {{1, EPROTO},         {2, rt::kErrNotAllowed}, {3, ENETUNREACH},
                                           {4, EHOSTUNREACH},   {5, ECONNREFUSED},       {6, ETIMEDOUT},
                                           {7, EPROTO},         {8, EPROTO}};
  for (auto [rep, code] : table) {
    SocksScript s;
    s.rep = rep;
    auto out = run_socks(s, "target.example", 22);
    INFO("REP " << int(rep) << ": " << out.what);
    CHECK(out.code == code);
    CHECK(s.finished);
  }
}

TEST_CASE("dial_via HTTP CONNECT: request format, and tunnel bytes after the head are not lost") {
  HttpScript s;
  s.response = "HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\n";
  s.banner = "SSH-2.0-OpenSSH_9.2\r\n";
  auto out = run_http(s, "db.internal", 5432);
  REQUIRE(out.code == 0);
  CHECK(s.head == "CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n");
  CHECK(out.banner == s.banner);
  CHECK(out.echoed == "ping");

  HttpScript v6;
  v6.response = "HTTP/1.0 200 OK\r\n\r\n";
  auto o6 = run_http(v6, "2001:db8::1", 443);
  REQUIRE(o6.code == 0);
  CHECK(v6.head == "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n");
}

TEST_CASE("dial_via HTTP CONNECT: Basic proxy authorization") {
  HttpScript s;
  auto out = run_http(s, "example.org", 443, "Aladdin", "open sesame");
  REQUIRE(out.code == 0);
  CHECK(s.head.find("\r\nProxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n") != std::string::npos);
}

TEST_CASE("dial_via HTTP CONNECT: refusals map to codes, malformed answers are protocol errors") {
  const std::pair<const char *, int> table[] = {
      {"HTTP/1.1 403 Forbidden\r\n\r\n", rt::kErrNotAllowed},
      {"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n", rt::kErrNotAllowed},
      {"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", ECONNREFUSED},
      {"HTTP/1.1 504 Gateway Timeout\r\n\r\n", ETIMEDOUT},
      {"HTTP/1.1 500 Internal Server Error\r\n\r\n", EPROTO},
      {"SSH-2.0-not-http\r\n\r\n", rt::kErrProtocol},
      {"HTTP/1.1 2OO OK\r\n\r\n", rt::kErrProtocol},
  };
  for (auto [resp, code] : table) {
    HttpScript s;
    s.response = resp;
    auto out = run_http(s, "example.org", 443);
    INFO(resp << " -> " << out.what);
    CHECK(out.code == code);
  }
  HttpScript huge;  // a head that never ends is cut off at 8 KiB
  huge.response = "HTTP/1.1 200 OK\r\n" + std::string(20000, 'x');
  auto out = run_http(huge, "example.org", 443);
  CHECK(out.code == rt::kErrProtocol);
}

TEST_CASE("dial_via: an unreachable proxy, and dial_maybe_proxy without a proxy") {
  rt::Reactor r;
  uint16_t dead = closed_port();
  ProxyUrl p;
  p.kind = ProxyUrl::Socks5;
  p.addr = HostPort{"127.0.0.1", dead};
  auto l = listen_tcp(loopback());
  REQUIRE(l);
  uint16_t port = Endpoint::of_socket_local(l->get()).port();
  FdResult via = rt::Error{}, direct = rt::Error{}, hdr = rt::Error{};
  rt::run_blocking([](ProxyUrl p, uint16_t port, FdResult &via, FdResult &direct, FdResult &hdr) -> Task<void> {
    via = co_await dial_maybe_proxy(p, "example.org", 80, 2s);
    direct = co_await dial_maybe_proxy(std::nullopt, "127.0.0.1", port, 2s);
    p.kind = ProxyUrl::Http;
    hdr = co_await dial_via(p, "bad\r\nhost", 80, 2s);  // never reaches the wire, proxy or not
  }(p, port, via, direct, hdr));
  REQUIRE_FALSE(via.ok());
  CHECK(via.error().code == ECONNREFUSED);
  CHECK(via.error().what.find("proxy") != std::string::npos);
  CHECK(direct.ok());
  REQUIRE_FALSE(hdr.ok());
}

TEST_CASE("dial_via HTTP CONNECT: header injection in the destination is refused") {
  HttpScript s;
  ProxyFixture f;
  ViaOutcome out;
  rt::run_blocking(via_and_talk(*f.acc, nullptr, &s, f.url(ProxyUrl::Http), "a\r\nX-Evil: 1", 80, 0, out));
  CHECK(out.code == EINVAL);
  CHECK(s.head.empty());  // nothing was sent
}

TEST_CASE("proxy encoders: SOCKS5 requests, HTTP status lines, base64") {
  CHECK(*socks5_connect_request("1.2.3.4", 0x1234) == std::string("\x05\x01\x00\x01\x01\x02\x03\x04\x12\x34", 10));
  CHECK(*socks5_connect_request("ab.c", 80) == std::string("\x05\x01\x00\x03\x04" "ab.c\x00\x50", 11));
  CHECK(socks5_connect_request("::1", 1)->size() == 4 + 16 + 2);
  CHECK_FALSE(socks5_connect_request("", 1));
  CHECK_FALSE(socks5_connect_request(std::string(256, 'a'), 1));
  CHECK(socks5_connect_request(std::string(255, 'a'), 1)->size() == 5 + 255 + 2);
  std::string reason;
  CHECK(http_status_of("HTTP/1.1 200 Connection established\r\n\r\n", &reason) == 200);
  CHECK(reason == "Connection established");
  CHECK(http_status_of("HTTP/1.0 407\r\n\r\n") == 407);
  CHECK(http_status_of("HTTP/2 200\r\n\r\n") == -1);
  CHECK(http_status_of("HTTP/1.1 20\r\n") == -1);
  CHECK(http_status_of("HTTP/1.1 2000 x\r\n") == -1);
  CHECK(http_status_of("") == -1);
  CHECK(base64("") == "");
  CHECK(base64("f") == "Zg==");
  CHECK(base64("fo") == "Zm8=");
  CHECK(base64("foo") == "Zm9v");
  CHECK(base64("foobar") == "Zm9vYmFy");
}
