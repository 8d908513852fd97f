// Dialing through an upstream proxy (--proxy socks5://... | http://...): connect to the proxy,
// then ask it to CONNECT to host:port. The returned fd carries the tunnel, with no byte of it
// consumed by the handshake.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "net/spec.hpp"
#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::net {

using namespace std::chrono_literals;

// Errors keep errno-style codes a SOCKS server or SSH channel can map back:
//   SOCKS5 REP 2 -> kErrNotAllowed, 3 -> ENETUNREACH, 4 -> EHOSTUNREACH, 5 -> ECONNREFUSED,
//   6 -> ETIMEDOUT, other -> EPROTO; a failed or refused authentication -> kErrNotAllowed.
//   HTTP 403/407 -> kErrNotAllowed, 502 -> ECONNREFUSED, 504 -> ETIMEDOUT, other non-2xx -> EPROTO.
//   A proxy speaking its protocol wrong -> kErrProtocol. Reaching the proxy itself fails with
//   dial()'s codes. The whole exchange is bounded by `timeout`.
rt::Task<rt::Result<rt::UniqueFd>> dial_via(const ProxyUrl &proxy, const std::string &host, uint16_t port,
                                            rt::Duration timeout = 15s);

// dial_via when a proxy is configured, plain dial() otherwise.
rt::Task<rt::Result<rt::UniqueFd>> dial_maybe_proxy(const std::optional<ProxyUrl> &proxy, const std::string &host,
                                                    uint16_t port, rt::Duration timeout = 15s);

// -- pure pieces, exposed for tests -------------------------------------------------------

// SOCKS5 CONNECT request for host:port: ATYP IPv4/IPv6 for literals, DOMAINNAME otherwise.
// nullopt when host cannot be encoded (empty or longer than 255 bytes).
std::optional<std::string> socks5_connect_request(const std::string &host, uint16_t port);
// Error for a non-zero SOCKS5 reply code.
rt::Error socks5_reply_error(unsigned rep);
// Error for a non-2xx HTTP CONNECT status.
rt::Error http_status_error(int status, const std::string &reason);
// The status code of an HTTP response head ("HTTP/1.1 200 ..."), or -1 when malformed.
int http_status_of(std::string_view head, std::string *reason = nullptr);
std::string base64(std::string_view in);

}  // namespace alk::net
