// Asynchronous name resolution: c-ares driven by the io_uring reactor, so a DNS lookup never
// blocks the one thread that serves every tunnel.
//
// c-ares owns its sockets; it tells us through ARES_OPT_SOCK_STATE_CB which ones to watch, and
// each gets one watcher coroutine polling it with rt::poll. Timeouts come from ares_timeout()
// and are slept off by the resolving coroutine itself, which is woken early when its answer
// arrives. IP literals never reach c-ares; "localhost" and other /etc/hosts names are answered
// by c-ares from the file.
#pragma once

#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/scope.hpp"
#include "runtime/task.hpp"

struct ares_channeldata;
struct ares_addrinfo;

namespace alk::net {

using namespace std::chrono_literals;

class Resolver {
 public:
  // Binds to the current thread's reactor; the c-ares channel is created on first use.
  // servers: "IP[:PORT],..." to override /etc/resolv.conf's name servers (tests, private DNS).
  explicit Resolver(std::string servers = {});
  // Ends every query still inside c-ares and drains the watchers on the current reactor.
  // Every resolve() on this object must have returned first.
  ~Resolver();
  Resolver(const Resolver &) = delete;
  Resolver &operator=(const Resolver &) = delete;

  // Addresses of host (a DNS name, an IP literal, or "[v6]") with port filled in, in the order
  // c-ares returns them. Errors: kErrDnsNotFound (no such name / no address), kErrDnsFailure
  // (server failure, timeout after `timeout`), ECANCELED when the calling task is cancelled.
  rt::Task<rt::Result<std::vector<Endpoint>>> resolve(std::string host, uint16_t port,
                                                      rt::Duration timeout = 5s);

  // Queries c-ares still owes an answer for (including ones whose caller gave up).
  size_t pending() const { return pending_.size(); }
  // Nothing in flight: no query, no watched socket, no watcher coroutine.
  bool idle() const { return pending_.empty() && watches_.empty() && watchers_.empty(); }

  // The process-wide resolver of this thread's reactor, created lazily.
  static Resolver &global();

 private:
  struct Query;
  struct Watch;
  rt::Result<void> ensure_channel();
  void sock_state(int fd, bool readable, bool writable);
  void retire(Watch &w);
  void abandon(Query &q);
  void drop_abandoned();
  rt::Task<void> watch(std::shared_ptr<Watch> w);
  static void on_sock_state(void *data, int fd, int readable, int writable);
  static void on_result(void *arg, int status, int timeouts, ares_addrinfo *res);

  rt::Reactor *reactor_;
  std::string servers_;
  ares_channeldata *channel_ = nullptr;
  std::list<std::shared_ptr<Query>> pending_;
  std::unordered_map<int, std::shared_ptr<Watch>> watches_;
  rt::Scope watchers_;
};

// Resolver::global().resolve(...).
rt::Task<rt::Result<std::vector<Endpoint>>> resolve(std::string host, uint16_t port,
                                                    rt::Duration timeout = 5s);

}  // namespace alk::net
