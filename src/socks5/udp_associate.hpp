// SOCKS5 UDP ASSOCIATE (RFC 1928 §7), client side: a UDP socket next to the SOCKS listener,
// relayed over one tunnel carrying the framing of socks5/udp.hpp.
#pragma once

#include "socks5/codec.hpp"
#include "socks5/server.hpp"
#include "stream/stream.hpp"

namespace alk::socks5 {

// After a successful negotiation that asked for UDP ASSOCIATE: binds a UDP socket on the IP
// the client reached us on, opens the tunnel with open(alknet-udp:0), replies (with the UDP
// socket's address, or the failure REP), then relays until the control connection or the
// tunnel ends; the other one is closed with it.
//
// Datagrams are taken only from the control connection's peer IP, and from one source port:
// the one in the request when it is not 0, else the first one seen. Malformed datagrams,
// fragments (FRAG != 0) and ones over the frame limit are dropped.
rt::Task<void> serve_udp_associate(stream::FdStream &control, const Address &requested, const Connector &open);

}  // namespace alk::socks5
