#include "net/udp.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "runtime/reactor.hpp"

namespace alk::net {

rt::Result<rt::UniqueFd> bind_udp(const Endpoint &ep) {
  rt::UniqueFd fd(::socket(ep.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return rt::errno_error(errno, "udp socket");
  if (ep.family() == AF_INET6) {
    // Dual-stack only for the unspecified address; a specific v6 address cannot take v4.
    int v6only = 0;
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (::bind(fd.get(), ep.sa(), ep.len) != 0) return rt::errno_error(errno, "cannot bind udp " + ep.to_string());
  return fd;
}

rt::Result<rt::UniqueFd> bind_udp_any() {
  auto v6 = bind_udp(*Endpoint::from_ip("::", 0));
  if (v6) return v6;
  return bind_udp(*Endpoint::from_ip("0.0.0.0", 0));
}

rt::Task<ssize_t> recv_from(int fd, std::span<std::byte> buf, Endpoint &from) {
  iovec iov{buf.data(), buf.size()};
  msghdr msg{};
  from = Endpoint{};
  msg.msg_name = from.sa();
  msg.msg_namelen = sizeof from.ss;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  int r = co_await rt::recvmsg(fd, &msg, 0);
  if (r < 0) co_return r;
  from.len = msg.msg_namelen;
  if (msg.msg_flags & MSG_TRUNC) co_return -EMSGSIZE;
  co_return r;
}

rt::Task<ssize_t> send_to(int fd, std::span<const std::byte> buf, const Endpoint &to) {
  iovec iov{const_cast<std::byte *>(buf.data()), buf.size()};
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr *>(to.sa());
  msg.msg_namelen = to.len;
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  int r = co_await rt::sendmsg(fd, &msg);
  co_return r;
}

Endpoint unmap_v4(const Endpoint &ep) {
  if (ep.family() != AF_INET6) return ep;
  const auto *v6 = reinterpret_cast<const sockaddr_in6 *>(&ep.ss);
  if (!IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) return ep;
  Endpoint out;
  auto *v4 = reinterpret_cast<sockaddr_in *>(&out.ss);
  v4->sin_family = AF_INET;
  v4->sin_port = v6->sin6_port;
  std::memcpy(&v4->sin_addr, v6->sin6_addr.s6_addr + 12, 4);
  out.len = sizeof(sockaddr_in);
  return out;
}

Endpoint map_for_family(const Endpoint &ep, int socket_family) {
  if (socket_family != AF_INET6 || ep.family() != AF_INET) return ep;
  const auto *v4 = reinterpret_cast<const sockaddr_in *>(&ep.ss);
  Endpoint out;
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(&out.ss);
  v6->sin6_family = AF_INET6;
  v6->sin6_port = v4->sin_port;
  v6->sin6_addr.s6_addr[10] = 0xff;
  v6->sin6_addr.s6_addr[11] = 0xff;
  std::memcpy(v6->sin6_addr.s6_addr + 12, &v4->sin_addr, 4);
  out.len = sizeof(sockaddr_in6);
  return out;
}

}  // namespace alk::net
