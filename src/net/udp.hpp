// UDP sockets on the reactor: bind, and one datagram in or out through io_uring's
// recvmsg/sendmsg (the source/destination address travels with each datagram).
#pragma once

#include <cstddef>
#include <span>
#include <sys/types.h>

#include "net/socket.hpp"
#include "runtime/fd.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::net {

// Non-blocking, close-on-exec UDP socket bound to ep (port 0 = any free port).
rt::Result<rt::UniqueFd> bind_udp(const Endpoint &ep);
// A socket that can reach IPv4 and IPv6 peers: dual-stack [::]:0, or 0.0.0.0:0 on a host
// without IPv6.
rt::Result<rt::UniqueFd> bind_udp_any();

// One datagram into buf (a longer one is cut to buf.size(): MSG_TRUNC is reported as
// -EMSGSIZE so callers drop it rather than relay a damaged datagram). from gets the sender.
rt::Task<ssize_t> recv_from(int fd, std::span<std::byte> buf, Endpoint &from);
// One datagram to `to`, whole: its size or -errno.
rt::Task<ssize_t> send_to(int fd, std::span<const std::byte> buf, const Endpoint &to);

// ::ffff:a.b.c.d as a.b.c.d (a dual-stack socket reports IPv4 peers that way); others unchanged.
Endpoint unmap_v4(const Endpoint &ep);
// An IPv4 endpoint as ::ffff:a.b.c.d when it is to be used on an AF_INET6 socket.
Endpoint map_for_family(const Endpoint &ep, int socket_family);

}  // namespace alk::net
