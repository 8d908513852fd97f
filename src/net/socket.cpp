#include "net/socket.hpp"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace alk::net {

uint16_t Endpoint::port() const {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in *>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_port);
  return 0;
}

std::string Endpoint::ip() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in *>(&ss)->sin_addr, buf, sizeof buf);
  else if (ss.ss_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6 *>(&ss)->sin6_addr, buf, sizeof buf);
  return buf;
}

std::string Endpoint::to_string() const {
  if (ss.ss_family == AF_INET6) return "[" + ip() + "]:" + std::to_string(port());
  return ip() + ":" + std::to_string(port());
}

std::optional<Endpoint> Endpoint::from_ip(const std::string &ip, uint16_t port) {
  Endpoint ep;
  auto *v4 = reinterpret_cast<sockaddr_in *>(&ep.ss);
  auto *v6 = reinterpret_cast<sockaddr_in6 *>(&ep.ss);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    ep.len = sizeof(sockaddr_in);
    return ep;
  }
  ep.ss = {};
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    ep.len = sizeof(sockaddr_in6);
    return ep;
  }
  return std::nullopt;
}

Endpoint Endpoint::of_socket_local(int fd) {
  Endpoint ep;
  ep.len = sizeof ep.ss;
  if (getsockname(fd, ep.sa(), &ep.len) != 0) ep = Endpoint{};
  return ep;
}

Endpoint Endpoint::of_socket_peer(int fd) {
  Endpoint ep;
  ep.len = sizeof ep.ss;
  if (getpeername(fd, ep.sa(), &ep.len) != 0) ep = Endpoint{};
  return ep;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

rt::Result<rt::UniqueFd> tcp_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) return rt::errno_error(errno, "socket");
  set_nodelay(fd);
  return rt::UniqueFd(fd);
}

rt::Result<rt::UniqueFd> listen_tcp(const Endpoint &ep, int backlog) {
  auto s = tcp_socket(ep.family());
  if (!s) return s.error();
  int fd = s->get();
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ep.family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, ep.sa(), ep.len) != 0) return rt::errno_error(errno, "cannot listen on " + ep.to_string());
  if (::listen(fd, backlog) != 0) return rt::errno_error(errno, "cannot listen on " + ep.to_string());
  return std::move(s).value();
}

rt::Task<rt::Result<rt::UniqueFd>> connect_tcp(const Endpoint &ep, rt::Duration timeout) {
  auto s = tcp_socket(ep.family());
  if (!s) co_return s.error();
  int r = co_await rt::connect(s->get(), ep.sa(), ep.len).with_timeout(timeout);
  if (r < 0) co_return rt::errno_error(-r, "connect to " + ep.to_string());
  co_return std::move(s).value();
}

Acceptor::Acceptor(rt::UniqueFd listener, size_t max_queued)
    : listener_(std::move(listener)), max_queued_(max_queued) {
  disarmed_.set();
  arm();
}

Acceptor::~Acceptor() {
  // The multishot SQE points at this object: it must be reaped before we go.
  if (armed_) {
    rt::Reactor::current().cancel(this);
    rt::Reactor::current().run_until([this] { return !armed_; });
  }
}

void Acceptor::arm() {
  if (armed_ || stopping_ || !listener_) return;
  auto *s = rt::Reactor::current().sqe();
  io_uring_prep_multishot_accept(s, listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data(s, static_cast<rt::Completion *>(this));
  armed_ = true;
  disarmed_.reset();
}

void Acceptor::complete(int32_t res, uint32_t flags) {
  if (res >= 0) {
    if (stopping_ || queue_.size() >= max_queued_) {
      ::close(res);  // over the bound: shed the connection rather than queue without limit
    } else {
      set_nodelay(res);
      queue_.emplace_back(res);
    }
  } else if (res != -ECANCELED) {
    last_error_ = -res;
  }
  if (!(flags & IORING_CQE_F_MORE)) {
    armed_ = false;
    disarmed_.set();
  }
  if (!queue_.empty() || last_error_) ready_.set();
  // After an error (EMFILE and friends) re-arming at once would fail again at once: a busy
  // loop in the ring. accept() re-arms when the caller comes back after its backoff.
  if (!armed_ && !stopping_ && queue_.size() < max_queued_ && res >= 0) arm();
}

rt::Task<rt::Result<rt::UniqueFd>> Acceptor::accept() {
  for (;;) {
    if (!queue_.empty()) {
      rt::UniqueFd fd = std::move(queue_.front());
      queue_.pop_front();
      if (queue_.empty() && !last_error_) ready_.reset();
      if (!armed_ && !stopping_) arm();
      co_return fd;
    }
    if (stopping_) co_return rt::Error{EBADF, "listener stopped"};
    if (!armed_ && !last_error_) arm();
    if (last_error_) {
      int e = std::exchange(last_error_, 0);
      ready_.reset();
      // EMFILE/ENFILE and friends are transient: report them, the caller decides to go on.
      co_return rt::errno_error(e, "accept");
    }
    bool woke = co_await ready_.wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
}

rt::Task<void> accept_each(Acceptor &acc, const OnConnection &on_conn) {
  for (;;) {
    auto r = co_await acc.accept();
    if (r) {
      on_conn(std::move(r).value());
      continue;
    }
    if (r.error().code == ECANCELED || r.error().code == EBADF) co_return;
    // EMFILE and friends: the listener is fine, the process is out of something. Back off
    // instead of spinning; connections wait in the backlog meanwhile.
    const int s = co_await rt::sleep_for(kAcceptBackoff);
    if (s == -ECANCELED) co_return;
  }
}

rt::Task<void> Acceptor::stop() {
  stopping_ = true;
  ready_.set();
  if (armed_) rt::Reactor::current().cancel(this);
  while (armed_) {
    bool woke = co_await disarmed_.wait();
    if (!woke) break;
  }
  queue_.clear();
  listener_.reset();
}

}  // namespace alk::net
