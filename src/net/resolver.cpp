#include "net/resolver.hpp"

#include "net/spec.hpp"

#include <ares.h>
#include <poll.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <new>

namespace alk::net {

// One getaddrinfo in flight. Shared between the c-ares callback (through pending_, which keeps
// it alive until c-ares has called back, however late) and the resolving coroutine (while it
// waits), so neither side can touch freed memory when the other is gone.
struct Resolver::Query {
  Resolver *owner = nullptr;
  std::list<std::shared_ptr<Query>>::iterator it;
  uint16_t port = 0;
  bool done = false;       // c-ares has called back
  bool abandoned = false;  // the caller gave up (cancelled or past its deadline)
  int status = ARES_SUCCESS;
  std::vector<Endpoint> endpoints;
  rt::Completion *sleeping = nullptr;  // the caller's timer, cancelled to wake it at once
};

// One c-ares socket and the poll events c-ares wants on it. `stale` once c-ares closed the
// socket or changed the events: the fd number may already belong to a new socket by the time
// the old watcher wakes, so a stale watcher must never hand its fd to c-ares.
struct Resolver::Watch {
  int fd = -1;
  unsigned events = 0;
  bool stale = false;
  rt::CancelState *cs = nullptr;  // of the watcher coroutine while it runs
};

namespace {

timeval to_timeval(rt::Duration d) {
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  if (us < 0) us = 0;
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

rt::Duration from_timeval(const timeval &tv) {
  return std::chrono::seconds(tv.tv_sec) + std::chrono::microseconds(tv.tv_usec);
}

bool ends_with_label(std::string_view name, std::string_view label) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  if (name.size() < label.size()) return false;
  std::string_view tail = name.substr(name.size() - label.size());
  for (size_t i = 0; i < label.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(tail[i])) != label[i]) return false;
  return name.size() == label.size() || name[name.size() - label.size() - 1] == '.';
}

bool plausible_name(const std::string &h) {
  if (h.empty() || h.size() > 254) return false;
  for (unsigned char c : h)
    if (c <= ' ' || c == 0x7f) return false;
  return true;
}

rt::Error dns_error(const std::string &host, int status) {
  bool not_found = status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_ENONAME ||
                   status == ARES_EBADNAME;
  return rt::Error{not_found ? rt::kErrDnsNotFound : rt::kErrDnsFailure,
                   "cannot resolve " + host + ": " + ares_strerror(status)};
}

rt::Error cancelled() { return rt::Error{ECANCELED, "name resolution cancelled"}; }

// Keeps parked resolvers reachable (and undestroyed) until the process ends; see global().
template <class T>
union NoDestroy {
  T v;
  NoDestroy() { ::new (&v) T(); }
  ~NoDestroy() {}
};

}  // namespace

Resolver::Resolver(std::string servers) : reactor_(&rt::Reactor::current()), servers_(std::move(servers)) {}

Resolver::~Resolver() {
  if (channel_) {
    // Calls back every pending query with ARES_EDESTRUCTION and reports each socket closed,
    // which retires its watcher.
    ares_destroy(channel_);
    channel_ = nullptr;
  }
  for (auto &[fd, w] : watches_) retire(*w);
  watches_.clear();
  // watchers_ (declared last) now cancels and drains the watcher coroutines.
}

rt::Result<void> Resolver::ensure_channel() {
  if (channel_) return {};
  static const int lib_status = ares_library_init(ARES_LIB_INIT_ALL);
  if (lib_status != ARES_SUCCESS)
    return rt::Error{rt::kErrDnsFailure, std::string("c-ares init: ") + ares_strerror(lib_status)};
  ares_options opts{};
  opts.sock_state_cb = [](void *data, ares_socket_t fd, int readable, int writable) {
    on_sock_state(data, fd, readable, writable);
  };
  opts.sock_state_cb_data = this;
  int st = ares_init_options(&channel_, &opts, ARES_OPT_SOCK_STATE_CB);
  if (st != ARES_SUCCESS) {
    channel_ = nullptr;
    return rt::Error{rt::kErrDnsFailure, std::string("c-ares init: ") + ares_strerror(st)};
  }
  if (!servers_.empty()) {
    st = ares_set_servers_ports_csv(channel_, servers_.c_str());
    if (st != ARES_SUCCESS) {
      ares_destroy(channel_);
      channel_ = nullptr;
      return rt::Error{rt::kErrDnsFailure, std::string("name servers \"") + servers_ + "\": " + ares_strerror(st)};
    }
  }
  return {};
}

void Resolver::on_sock_state(void *data, int fd, int readable, int writable) {
  static_cast<Resolver *>(data)->sock_state(fd, readable != 0, writable != 0);
}

void Resolver::sock_state(int fd, bool readable, bool writable) {
  unsigned events = (readable ? POLLIN : 0) | (writable ? POLLOUT : 0);
  auto it = watches_.find(fd);
  if (it != watches_.end()) {
    if (it->second->events == events) return;
    // A changed interest set means a fresh poll: retire the old watcher rather than
    // interrupting it, since cancelling is final for a coroutine.
    retire(*it->second);
    watches_.erase(it);
  }
  if (events == 0) return;  // c-ares is about to close fd
  auto w = std::make_shared<Watch>();
  w->fd = fd;
  w->events = events;
  watches_.emplace(fd, w);
  watchers_.spawn(watch(std::move(w)));
}

void Resolver::retire(Watch &w) {
  w.stale = true;
  if (w.cs) w.cs->cancel();
}

rt::Task<void> Resolver::watch(std::shared_ptr<Watch> w) {
  w->cs = co_await rt::CurrentCancelState{};
  while (!w->stale) {
    int r = co_await rt::poll(w->fd, w->events);
    if (w->stale || r == -ECANCELED) break;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    if (r < 0) {
      // The poll itself failed: let c-ares touch the socket, see the error and drop it.
      if (w->events & POLLIN) rfd = w->fd;
      if (w->events & POLLOUT) wfd = w->fd;
    } else {
      if ((w->events & POLLIN) && (r & (POLLIN | POLLERR | POLLHUP))) rfd = w->fd;
      if ((w->events & POLLOUT) && (r & (POLLOUT | POLLERR | POLLHUP))) wfd = w->fd;
    }
    ares_process_fd(channel_, rfd, wfd);
    if (r < 0 && !w->stale) break;  // never spin on a poll that keeps failing
  }
  w->cs = nullptr;
}

void Resolver::on_result(void *arg, int status, int /*timeouts*/, ares_addrinfo *res) {
  auto *q = static_cast<Query *>(arg);
  if (!q->abandoned) {
    q->status = status;
    if (status == ARES_SUCCESS && res) {
      for (ares_addrinfo_node *n = res->nodes; n; n = n->ai_next) {
        if (!n->ai_addr) continue;
        Endpoint ep;
        if (n->ai_family == AF_INET && n->ai_addrlen >= sizeof(sockaddr_in)) {
          std::memcpy(&ep.ss, n->ai_addr, sizeof(sockaddr_in));
          reinterpret_cast<sockaddr_in *>(&ep.ss)->sin_port = htons(q->port);
          ep.len = sizeof(sockaddr_in);
        } else if (n->ai_family == AF_INET6 && n->ai_addrlen >= sizeof(sockaddr_in6)) {
          std::memcpy(&ep.ss, n->ai_addr, sizeof(sockaddr_in6));
          reinterpret_cast<sockaddr_in6 *>(&ep.ss)->sin6_port = htons(q->port);
          ep.len = sizeof(sockaddr_in6);
        } else {
          continue;
        }
        q->endpoints.push_back(ep);
      }
      if (q->endpoints.empty()) q->status = ARES_ENODATA;
    }
  }
  if (res) ares_freeaddrinfo(res);
  q->done = true;
  if (q->sleeping) rt::Reactor::current().cancel(q->sleeping);
  // Last: this may free q when its caller has already gone.
  q->owner->pending_.erase(q->it);
}

void Resolver::abandon(Query &q) {
  q.abandoned = true;
  drop_abandoned();
}

void Resolver::drop_abandoned() {
  // c-ares can only cancel the whole channel; do it once nobody waits for any answer, so an
  // abandoned query neither holds sockets open nor lingers with no caller left to drive its
  // timeouts.
  bool anyone_waiting =
      std::any_of(pending_.begin(), pending_.end(), [](const auto &p) { return !p->abandoned; });
  if (!anyone_waiting && channel_ && !pending_.empty()) ares_cancel(channel_);
}

rt::Task<rt::Result<std::vector<Endpoint>>> Resolver::resolve(std::string host, uint16_t port,
                                                              rt::Duration timeout) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (auto ep = Endpoint::from_ip(host, port)) co_return std::vector<Endpoint>{*ep};
  if (!plausible_name(host)) co_return rt::Error{rt::kErrDnsNotFound, "cannot resolve " + quote_for_error(host) + ": invalid name"};
  // RFC 6761 6.4: "invalid" names never exist; answer at once instead of asking a server.
  if (ends_with_label(host, "invalid")) co_return dns_error(host, ARES_ENOTFOUND);

  rt::CancelState *cs = co_await rt::CurrentCancelState{};
  if (cs && cs->cancelled) co_return cancelled();
  if (auto ok = ensure_channel(); !ok) co_return ok.error();

  auto q = std::make_shared<Query>();
  q->owner = this;
  q->port = port;
  pending_.push_front(q);
  q->it = pending_.begin();
  const auto deadline = rt::Clock::now() + timeout;

  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  ares_getaddrinfo(channel_, host.c_str(), nullptr, &hints, &Resolver::on_result, q.get());

  // Drive c-ares' timeouts until the answer comes (its callback cancels our sleep) or the
  // caller's deadline passes. The answers themselves arrive through the watchers.
  bool timed_out = false;
  while (!q->done) {
    auto remaining = deadline - rt::Clock::now();
    if (remaining <= rt::Duration::zero()) {
      timed_out = true;
      break;
    }
    timeval maxtv = to_timeval(remaining), buf{};
    timeval *tv = ares_timeout(channel_, &maxtv, &buf);
    rt::Duration nap = tv ? from_timeval(*tv) : remaining;
    nap = std::max<rt::Duration>(nap, 1ms);
    auto sleep = rt::sleep_for(nap);
    q->sleeping = &sleep;
    (void)co_await sleep;
    q->sleeping = nullptr;
    if (cs && cs->cancelled) {
      if (!q->done) abandon(*q);
      co_return cancelled();
    }
    if (q->done) break;
    ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);  // expire c-ares' own timeouts
  }
  if (timed_out) {
    abandon(*q);
    co_return rt::Error{rt::kErrDnsFailure, "cannot resolve " + host + ": timed out"};
  }
  drop_abandoned();
  // When this was the last query c-ares has closed its sockets and the watchers are only
  // waiting for their cancellations to be reaped: let that happen now, so an idle resolver
  // holds nothing in flight (a few turns at most, never a real wait).
  for (int i = 0; i < 8 && pending_.empty() && watches_.empty() && !watchers_.empty(); ++i)
    co_await rt::yield();
  if (q->status != ARES_SUCCESS) co_return dns_error(host, q->status);
  co_return std::move(q->endpoints);
}

Resolver &Resolver::global() {
  // Bound to one reactor: its watchers and timers live in that reactor's ring. When a new
  // reactor takes over (tests make one per case) an idle resolver is simply replaced; a busy
  // one cannot be torn down without its reactor, so it is parked, never touched again.
  struct Slot {
    std::unique_ptr<Resolver> r;
    static void park(std::unique_ptr<Resolver> p) {
      static NoDestroy<std::vector<std::unique_ptr<Resolver>>> parked;
      parked.v.push_back(std::move(p));
    }
    ~Slot() {
      if (r && !r->idle()) park(std::move(r));
    }
  };
  thread_local Slot slot;
  rt::Reactor *now = &rt::Reactor::current();
  if (slot.r && slot.r->reactor_ != now) {
    if (slot.r->idle()) slot.r.reset();
    else Slot::park(std::move(slot.r));
  }
  if (!slot.r) slot.r = std::make_unique<Resolver>();
  return *slot.r;
}

rt::Task<rt::Result<std::vector<Endpoint>>> resolve(std::string host, uint16_t port, rt::Duration timeout) {
  co_return co_await Resolver::global().resolve(std::move(host), port, timeout);
}

}  // namespace alk::net
