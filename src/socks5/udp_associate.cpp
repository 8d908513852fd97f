#include "socks5/udp_associate.hpp"

#include <cerrno>
#include <optional>
#include <vector>

#include "net/udp.hpp"
#include "runtime/event.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "socks5/udp.hpp"

namespace alk::socks5 {

namespace {

struct Association {
  int udp;
  int udp_family;
  stream::Stream &tunnel;
  std::string client_ip;
  uint16_t client_port;  // 0 until locked
  std::optional<net::Endpoint> client;
  rt::Event done;
};

// Errors after which a UDP socket is still usable (ICMP reports, signals, a full buffer).
bool transient(ssize_t r) { return r == -EMSGSIZE || r == -EAGAIN || r == -EINTR || r == -ECONNREFUSED || r == -ENOBUFS; }

rt::Task<void> client_to_tunnel(Association &a) {
  std::vector<std::byte> buf(kUdpMaxFrameBody + 1);  // one more: a longer datagram is reported as cut
  std::vector<uint8_t> frame;
  for (;;) {
    net::Endpoint from;
    ssize_t n = co_await net::recv_from(a.udp, buf, from);
    if (n < 0) {
      if (transient(n)) continue;
      break;
    }
    from = net::unmap_v4(from);
    if (from.ip() != a.client_ip) continue;
    if (a.client_port == 0) a.client_port = from.port();
    if (from.port() != a.client_port) continue;
    if (!a.client) a.client = from;
    frame.clear();
    auto dgram = std::span(reinterpret_cast<const uint8_t *>(buf.data()), size_t(n));
    if (!append_frame_for_datagram(frame, dgram)) continue;
    ssize_t w = co_await a.tunnel.write(std::as_bytes(std::span(frame)));
    if (w < 0) break;
  }
  a.done.set();
}

rt::Task<void> tunnel_to_client(Association &a) {
  UdpFrameReader frames;
  for (;;) {
    auto f = frames.next();
    if (f.status == Status::Invalid) break;
    if (f.status == Status::Incomplete) {
      ssize_t n = co_await a.tunnel.read(std::as_writable_bytes(frames.room()));
      if (n <= 0) break;
      frames.commit(size_t(n));
      continue;
    }
    if (!f.value.usable || !a.client) continue;  // nobody to deliver to yet
    auto to = net::map_for_family(*a.client, a.udp_family);
    ssize_t s = co_await net::send_to(a.udp, std::as_bytes(f.value.body), to);
    if (s < 0 && !transient(s)) break;
  }
  a.done.set();
}

// RFC 1928 §7: the association lives as long as the TCP connection that asked for it.
rt::Task<void> watch_control(int fd, rt::Event &done) {
  std::byte sink[512];
  for (;;) {
    int n = co_await rt::recv(fd, sink);
    if (n <= 0) break;  // anything the client sends on it is ignored
  }
  done.set();
}

Address address_of(const net::Endpoint &ep) {
  return Address{ep.family() == AF_INET6 ? AddrType::IPv6 : AddrType::IPv4, ep.ip(), ep.port()};
}

rt::Task<bool> reply(stream::FdStream &control, Rep rep, const Address *bound = nullptr) {
  auto bytes = encode_reply(rep, bound);
  ssize_t n = co_await control.write(std::as_bytes(std::span(bytes)));
  co_return n == ssize_t(bytes.size());
}

}  // namespace

rt::Task<void> serve_udp_associate(stream::FdStream &control, const Address &requested, const Connector &open) {
  const int cfd = control.native_fd();
  auto local = net::unmap_v4(net::Endpoint::of_socket_local(cfd));
  auto peer = net::unmap_v4(net::Endpoint::of_socket_peer(cfd));
  auto bind_at = net::Endpoint::from_ip(local.ip(), 0);
  auto sock = bind_at ? net::bind_udp(*bind_at) : rt::Result<rt::UniqueFd>(rt::Error{EAFNOSUPPORT, "no local address"});
  if (!sock) {
    co_await reply(control, Rep::GeneralFailure);
    co_return;
  }
  // A named variable: gcc 12 destroys a temporary with a destructor inside co_await twice.
  const Address udp_dst{AddrType::Domain, kUdpDestination, 0};
  auto tunnel = co_await open(udp_dst);
  if (!tunnel) {
    co_await reply(control, rep_for_error(tunnel.error().code));
    co_return;
  }
  auto bound_ep = net::Endpoint::of_socket_local(sock.value().get());
  Address bound = address_of(bound_ep);
  bool sent = co_await reply(control, Rep::Succeeded, &bound);
  if (sent) {
    Association a{sock.value().get(), bound_ep.family(), **tunnel, peer.ip(), requested.port, std::nullopt, {}};
    rt::Scope relay;
    relay.spawn(client_to_tunnel(a));
    relay.spawn(tunnel_to_client(a));
    relay.spawn(watch_control(cfd, a.done));
    co_await a.done.wait();
    co_await relay.close();
  }
  (*tunnel)->close();
}

}  // namespace alk::socks5
