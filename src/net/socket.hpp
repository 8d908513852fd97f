// TCP sockets on the reactor: address literals, listen, connect, a multishot acceptor.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>

#include "runtime/event.hpp"
#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::net {

struct Endpoint {
  sockaddr_storage ss{};
  socklen_t len = 0;

  const sockaddr *sa() const { return reinterpret_cast<const sockaddr *>(&ss); }
  sockaddr *sa() { return reinterpret_cast<sockaddr *>(&ss); }
  int family() const { return ss.ss_family; }
  uint16_t port() const;
  std::string ip() const;         // "127.0.0.1", "::1"
  std::string to_string() const;  // "127.0.0.1:80", "[::1]:80"

  // Parses an IP literal (no brackets) and port; nullopt for names.
  static std::optional<Endpoint> from_ip(const std::string &ip, uint16_t port);
  static Endpoint of_socket_local(int fd);
  static Endpoint of_socket_peer(int fd);
};

// Non-blocking, close-on-exec TCP socket with TCP_NODELAY on (small writes must not wait
// for delayed ACKs: that stall is where ssh -D's 44 ms go).
rt::Result<rt::UniqueFd> tcp_socket(int family);
void set_nodelay(int fd);

// Binds and listens (SO_REUSEADDR; IPv6 sockets are v6-only so v4 and v6 can share a port).
rt::Result<rt::UniqueFd> listen_tcp(const Endpoint &ep, int backlog = 4096);

// Connects a new socket to ep, bounded by timeout.
rt::Task<rt::Result<rt::UniqueFd>> connect_tcp(const Endpoint &ep, rt::Duration timeout);

// Accepts with one multishot accept SQE re-armed only when the kernel ends it. Accepted fds
// queue up (bounded); accept() hands them out one by one.
class Acceptor : rt::Completion {
 public:
  explicit Acceptor(rt::UniqueFd listener, size_t max_queued = 256);
  ~Acceptor();
  Acceptor(const Acceptor &) = delete;
  Acceptor &operator=(const Acceptor &) = delete;

  // The next connection, or an error (-ECANCELED when the waiting task is cancelled,
  // -EBADF after stop()).
  rt::Task<rt::Result<rt::UniqueFd>> accept();
  // Stops accepting: cancels the multishot SQE and closes the listener once it is reaped.
  rt::Task<void> stop();
  int fd() const { return listener_.get(); }
  Endpoint local() const { return Endpoint::of_socket_local(listener_.get()); }

 private:
  void complete(int32_t res, uint32_t flags) override;
  void arm();
  rt::UniqueFd listener_;
  std::deque<rt::UniqueFd> queue_;
  size_t max_queued_;
  int last_error_ = 0;
  bool armed_ = false;
  bool stopping_ = false;
  rt::Event ready_;
  rt::Event disarmed_;
};

// Accepts until the acceptor stops or the task is cancelled, handing each connection to
// on_conn. Transient failures (EMFILE, ENFILE, ENOBUFS, ENOMEM) pause accepting for
// kAcceptBackoff rather than spin. on_conn is taken by reference and must outlive the loop:
// keep it in a named local (gcc 12 destroys a temporary built inside a co_await twice).
inline constexpr rt::Duration kAcceptBackoff = std::chrono::milliseconds(100);
using OnConnection = std::function<void(rt::UniqueFd)>;
rt::Task<void> accept_each(Acceptor &acc, const OnConnection &on_conn);

}  // namespace alk::net
