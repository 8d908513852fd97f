// net/udp: datagrams through io_uring's recvmsg/sendmsg on real loopback sockets, with the
// peer address carried both ways, truncation reported, and v4-mapped addresses on a
// dual-stack socket.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "net/udp.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"

using namespace alk;

namespace {

net::Endpoint ep(const char *ip, uint16_t port = 0) { return *net::Endpoint::from_ip(ip, port); }

rt::UniqueFd bound(const char *ip) {
  auto s = net::bind_udp(ep(ip));
  REQUIRE(s.ok());
  return std::move(s).value();
}

std::span<const std::byte> text(const std::string &s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

TEST_CASE("udp: send_to and recv_from carry the payload and the sender's address") {
  rt::Reactor r;
  auto a = bound("127.0.0.1");
  auto b = bound("127.0.0.1");
  auto a_ep = net::Endpoint::of_socket_local(a.get());
  auto b_ep = net::Endpoint::of_socket_local(b.get());
  CHECK(a_ep.port() != 0);
  rt::run_blocking([](int af, int bf, net::Endpoint aep, net::Endpoint bep) -> rt::Task<void> {
    std::string msg = "hello datagram";
    ssize_t n = co_await net::send_to(af, text(msg), bep);
    CHECK(n == ssize_t(msg.size()));
    std::vector<std::byte> buf(100);
    net::Endpoint from;
    ssize_t got = co_await net::recv_from(bf, buf, from);
    REQUIRE(got == ssize_t(msg.size()));
    CHECK(std::memcmp(buf.data(), msg.data(), msg.size()) == 0);
    CHECK(from.to_string() == aep.to_string());
    // Empty datagrams are datagrams too.
    n = co_await net::send_to(bf, {}, aep);
    CHECK(n == 0);
    got = co_await net::recv_from(af, buf, from);
    CHECK(got == 0);
    CHECK(from.port() == bep.port());
  }(a.get(), b.get(), a_ep, b_ep));
}

TEST_CASE("udp: a datagram longer than the buffer is reported, not relayed cut") {
  rt::Reactor r;
  auto a = bound("127.0.0.1");
  auto b = bound("127.0.0.1");
  auto b_ep = net::Endpoint::of_socket_local(b.get());
  rt::run_blocking([](int af, int bf, net::Endpoint bep) -> rt::Task<void> {
    std::string big(1000, 'x'), small = "ok";
    co_await net::send_to(af, text(big), bep);
    co_await net::send_to(af, text(small), bep);
    std::vector<std::byte> buf(100);
    net::Endpoint from;
    ssize_t got = co_await net::recv_from(bf, buf, from);
    CHECK(got == -EMSGSIZE);
    got = co_await net::recv_from(bf, buf, from);  // the next one is intact
    CHECK(got == 2);
  }(a.get(), b.get(), b_ep));
}

TEST_CASE("udp: a dual-stack socket reaches IPv4 peers through mapped addresses") {
  rt::Reactor r;
  auto any = net::bind_udp_any();
  REQUIRE(any.ok());
  auto v4 = bound("127.0.0.1");
  auto v4_ep = net::Endpoint::of_socket_local(v4.get());
  int fam = net::Endpoint::of_socket_local(any.value().get()).family();
  rt::run_blocking([](int df, int fam, int vf, net::Endpoint vep) -> rt::Task<void> {
    std::string msg = "via mapped";
    ssize_t n = co_await net::send_to(df, text(msg), net::map_for_family(vep, fam));
    CHECK(n == ssize_t(msg.size()));
    std::vector<std::byte> buf(64);
    net::Endpoint from;
    ssize_t got = co_await net::recv_from(vf, buf, from);
    CHECK(got == ssize_t(msg.size()));
    n = co_await net::send_to(vf, text(msg), from);
    CHECK(n == ssize_t(msg.size()));
    got = co_await net::recv_from(df, buf, from);
    CHECK(got == ssize_t(msg.size()));
    CHECK(net::unmap_v4(from).to_string() == vep.to_string());
  }(any.value().get(), fam, v4.get(), v4_ep));
}

TEST_CASE("udp: address mapping helpers") {
  auto v4 = ep("10.1.2.3", 53);
  auto mapped = net::map_for_family(v4, AF_INET6);
  CHECK(mapped.to_string() == "[::ffff:10.1.2.3]:53");
  CHECK(net::unmap_v4(mapped).to_string() == "10.1.2.3:53");
  CHECK(net::map_for_family(v4, AF_INET).to_string() == "10.1.2.3:53");
  CHECK(net::unmap_v4(ep("2001:db8::1", 5)).to_string() == "[2001:db8::1]:5");
  CHECK(net::map_for_family(ep("::1", 7), AF_INET6).to_string() == "[::1]:7");
}

TEST_CASE("udp: binding a busy port fails with a message") {
  auto a = bound("127.0.0.1");
  auto port = net::Endpoint::of_socket_local(a.get()).port();
  auto b = net::bind_udp(ep("127.0.0.1", port));
  REQUIRE_FALSE(b.ok());
  CHECK(b.error().code == EADDRINUSE);
}
