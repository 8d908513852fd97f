// The server end of SOCKS5 UDP ASSOCIATE: a `direct-tcpip` channel to the reserved
// destination `alknet-udp` carries the frames of socks5/udp.hpp; each frame's datagram goes
// out from one UDP socket owned by that channel (the association), and datagrams coming back
// to that socket return as frames naming their source.
#pragma once

#include <chrono>
#include <vector>

#include "net/spec.hpp"
#include "runtime/task.hpp"
#include "server/policy.hpp"
#include "ssh/server.hpp"

namespace alk::server {

// An association with no datagram either way for this long is ended (its channel closed).
inline constexpr rt::Duration kUdpIdleTimeout = std::chrono::seconds(60);

struct UdpRelayConfig {
  const Grant *grant = nullptr;                             // the session's; outlives the relay
  const std::vector<net::PermitOpen> *permit_open = nullptr;  // --permit-open; outlives the relay
  // Set with --proxy: a SOCKS5 CONNECT or HTTP CONNECT proxy cannot carry UDP, and sending
  // it around the proxy would break what the operator asked for, so UDP is refused.
  bool refuse = false;
  rt::Duration idle_timeout = kUdpIdleTimeout;
};

// Answers the open (ChannelOpen::answer: 0, or 2 when UDP is not allowed) and relays until the channel closes, the session ends or the association idles.
//
// Each datagram's destination passes the same check as a TCP destination (check_destination:
// link-local refused, --permit-open and the key's permitopen=). Names are resolved here,
// asynchronously, and cached per association; a name resolving only to link-local addresses
// is refused. Replies are accepted only from IP addresses this association has sent to.
// Nothing queues without bound: datagrams waiting for a name are capped, the rest wait in
// the kernel's socket buffers, which drop when full, as UDP does.
rt::Task<void> serve_udp_association(ssh::ChannelOpen op, UdpRelayConfig cfg);

}  // namespace alk::server
