// The QUIC transport: one bidirectional stream of one QUIC v1 connection, as a
// stream::Stream, over UDP sockets driven by the reactor (ngtcp2 0.12.1 + our BoringSSL glue).
//
// Shape: a socket is owned by an "endpoint core" that runs three coroutines (receive
// loop, send loop, one timer for all its connections) and keeps itself alive through them.
// Connections are passive objects (no coroutines of their own), so a stream can be
// dropped at any time without waiting on the reactor; the core notices and winds down.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"
#include "stream/stream.hpp"

namespace alk::quic {

using namespace std::chrono_literals;

struct QuicClientConfig {
  std::string server_name;  // SNI and certificate name; empty = the server's IP literal
  bool insecure = false;    // accept any certificate
  std::string ca_file;      // PEM bundle to trust instead of the system store
  rt::Duration idle_timeout = 60s;
  rt::Duration keepalive = 15s;  // 0 = no keep-alive PINGs
  rt::Duration handshake_timeout = 10s;
  int cc_algo = NGTCP2_CC_ALGO_CUBIC;
  // Same-host paths (loopback, our own address) use datagrams up to the route MTU (65000
  // bytes) instead of PMTUD's ~1.4 KB. Off: every path is treated as a network path (tests).
  bool same_host_datagrams = true;
};

struct QuicServerConfig {
  std::string cert_file, key_file;  // PEM chain and key
  rt::Duration idle_timeout = 60s;
  rt::Duration keepalive = 15s;  // 0 = no keep-alive PINGs
  rt::Duration handshake_timeout = 10s;  // also bounds the wait for the client's stream
  int cc_algo = NGTCP2_CC_ALGO_CUBIC;
  size_t max_connections = 4096;
  bool same_host_datagrams = true;  // as in QuicClientConfig
};

// "cubic", "bbr", "bbr2" or "reno" (as the command line spells them) to ngtcp2's algorithm; cubic otherwise.
int cc_algo(std::string_view name);

// Connects (a UDP socket connected to |server|), handshakes, opens ONE bidirectional stream
// and returns it. Errors: certificate/TLS failures as kErrProtocol, timeouts as ETIMEDOUT.
// The stream's read() gives -ETIMEDOUT after the idle timeout, -ECONNRESET when the peer
// closed the connection; close() sends CONNECTION_CLOSE once what was written is acknowledged
// (bounded linger).
rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> quic_connect(const QuicClientConfig &cfg,
                                                                    const net::Endpoint &server);

class ServerCore;

class QuicListener {
 public:
  static rt::Result<std::unique_ptr<QuicListener>> create(const QuicServerConfig &cfg, const net::Endpoint &bind);
  ~QuicListener();
  QuicListener(const QuicListener &) = delete;
  QuicListener &operator=(const QuicListener &) = delete;

  // Next connection whose client opened its bidirectional stream: the stream and the client
  // address. -ECANCELED when the waiting task is cancelled, EBADF after stop().
  rt::Task<rt::Result<std::pair<std::unique_ptr<stream::Stream>, net::Endpoint>>> accept();
  net::Endpoint local() const { return local_; }
  // New handshakes use this PEM chain and key (ACME renewal); live connections keep theirs.
  rt::Result<void> use_certificate(std::string_view chain_pem, std::string_view key_pem);
  // Closes every connection (their peers get CONNECTION_CLOSE, local streams read
  // -ECONNABORTED), stops the loops and closes the socket.
  rt::Task<void> stop();

 private:
  explicit QuicListener(std::shared_ptr<ServerCore> core, net::Endpoint local)
      : core_(std::move(core)), local_(local) {}
  std::shared_ptr<ServerCore> core_;
  net::Endpoint local_;
};

// Endpoint cores (client or listener) still alive: each one holds a socket until its
// coroutines have ended. Tests use it to wait for a clean teardown.
size_t live_endpoints();
// Runs of datagrams the kernel handed over coalesced (UDP_GRO) and we split, since start (tests).
uint64_t gro_runs();

}  // namespace alk::quic
