// dial(host, port): resolve asynchronously, then connect to each address in turn.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::net {

using namespace std::chrono_literals;

// A connected TCP socket (non-blocking, TCP_NODELAY) to host:port. host is an IP literal or a
// DNS name. Each resolved address is tried in order; the first that connects wins, otherwise
// the last connect error is returned with its errno intact (ECONNREFUSED, ENETUNREACH,
// EHOSTUNREACH, ETIMEDOUT), since callers turn it into SOCKS / SSH reply codes. Resolution
// errors keep their kErrDns* codes. The whole call, resolution included, ends by `timeout`.
rt::Task<rt::Result<rt::UniqueFd>> dial(const std::string &host, uint16_t port, rt::Duration timeout = 10s);

class Resolver;
// The same with a given resolver instead of Resolver::global().
rt::Task<rt::Result<rt::UniqueFd>> dial(Resolver &resolver, const std::string &host, uint16_t port,
                                        rt::Duration timeout = 10s);

}  // namespace alk::net
