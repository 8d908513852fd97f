#include "net/dial.hpp"

#include <cerrno>

#include "net/resolver.hpp"
#include "net/socket.hpp"

namespace alk::net {

rt::Task<rt::Result<rt::UniqueFd>> dial(const std::string &host, uint16_t port, rt::Duration timeout) {
  co_return co_await dial(Resolver::global(), host, port, timeout);
}

rt::Task<rt::Result<rt::UniqueFd>> dial(Resolver &resolver, const std::string &host_ref, uint16_t port,
                                        rt::Duration timeout) {
  const std::string host = host_ref;  // the caller's string need not outlive our first suspension
  const auto deadline = rt::Clock::now() + timeout;
  auto addrs = co_await resolver.resolve(host, port, timeout);
  if (!addrs) co_return addrs.error();
  if (addrs->empty()) co_return rt::Error{rt::kErrDnsNotFound, "cannot resolve " + host + ": no address"};

  rt::Error last{ETIMEDOUT, "connect: timed out"};
  const size_t n = addrs->size();
  for (size_t i = 0; i < n; ++i) {
    auto remaining = deadline - rt::Clock::now();
    if (remaining <= rt::Duration::zero()) break;
    // An address that blackholes must not eat the whole budget: share what is left evenly
    // among the addresses still to try (the last one gets all of it).
    auto budget = remaining / static_cast<long>(n - i);
    const Endpoint &ep = (*addrs)[i];
    auto fd = co_await connect_tcp(ep, budget);
    if (fd) co_return std::move(fd).value();
    last = fd.error();
    if (last.code == ECANCELED) break;  // the caller is gone: do not try the rest
  }
  co_return last;
}

}  // namespace alk::net
