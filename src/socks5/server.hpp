// The SOCKS5 (and SOCKS4/4a) front door: negotiates with one local client using the pure
// codec, asks a Connector for the tunnel, replies with the right REP, then relays.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"
#include "socks5/codec.hpp"
#include "stream/stream.hpp"

namespace alk::socks5 {

// Opens the tunnel to dst; the error code is errno-style (see rep_for_error).
using Connector = std::function<rt::Task<rt::Result<std::unique_ptr<stream::Stream>>>(const Address &dst)>;

struct ServerConfig {
  std::optional<UserPass> credentials;  // RFC 1929 required when set
  rt::Duration handshake_timeout = std::chrono::seconds(10);
  // Opens the alknet-udp tunnel for UDP ASSOCIATE; unset = the command is not supported.
  Connector udp_tunnel;
};

// Maps an errno-style dial/open error to the SOCKS5 reply code a client should see.
Rep rep_for_error(int code);

// Serves one accepted client to the end (negotiation, connect, relay). Never throws.
rt::Task<void> serve_client(rt::UniqueFd client, const ServerConfig &cfg, const Connector &connect);

}  // namespace alk::socks5
