#include "net/proxy_dial.hpp"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <span>
#include <string_view>

#include "net/dial.hpp"

namespace alk::net {

namespace {

constexpr size_t kMaxHttpHead = 8192;

rt::Duration left(rt::Clock::time_point deadline) {
  auto d = deadline - rt::Clock::now();
  return d > rt::Duration::zero() ? d : rt::Duration::zero();
}

rt::Error io_error(int err, const char *what) {
  if (err == ETIMEDOUT) return rt::Error{ETIMEDOUT, std::string("proxy ") + what + ": timed out"};
  return rt::errno_error(err, std::string("proxy ") + what);
}

rt::Task<rt::Result<void>> send_all(int fd, std::string_view data, rt::Clock::time_point deadline) {
  size_t off = 0;
  while (off < data.size()) {
    auto d = left(deadline);
    if (d == rt::Duration::zero()) co_return io_error(ETIMEDOUT, "handshake");
    auto bytes = std::as_bytes(std::span(data.data() + off, data.size() - off));
    int r = co_await rt::send(fd, bytes).with_timeout(d);
    if (r < 0) co_return io_error(-r, "send");
    if (r == 0) co_return io_error(EPIPE, "send");
    off += static_cast<size_t>(r);
  }
  co_return rt::Result<void>{};
}

// Reads exactly n bytes: the handshake replies have known lengths, so nothing after them
// (the tunnel's first bytes) is ever taken off the socket.
rt::Task<rt::Result<std::string>> recv_exact(int fd, size_t n, int flags, rt::Clock::time_point deadline) {
  std::string out(n, '\0');
  size_t off = 0;
  while (off < n) {
    auto d = left(deadline);
    if (d == rt::Duration::zero()) co_return io_error(ETIMEDOUT, "handshake");
    auto buf = std::as_writable_bytes(std::span(out.data() + off, n - off));
    int r = co_await rt::recv(fd, buf, flags).with_timeout(d);
    if (r < 0) co_return io_error(-r, "recv");
    if (r == 0) co_return rt::Error{rt::kErrProtocol, "proxy closed the connection during the handshake"};
    off += static_cast<size_t>(r);
  }
  co_return out;
}

rt::Task<rt::Result<void>> socks5_handshake(int fd, const ProxyUrl &proxy, const std::string &host, uint16_t port,
                                            rt::Clock::time_point deadline) {
  auto request = socks5_connect_request(host, port);
  if (!request) co_return rt::Error{EINVAL, "destination name cannot be sent over SOCKS5"};
  const bool with_auth = !proxy.user.empty();
  if (with_auth && (proxy.user.size() > 255 || proxy.pass.size() > 255))
    co_return rt::Error{EINVAL, "proxy user name or password longer than 255 bytes"};

  std::string greeting = with_auth ? std::string("\x05\x02\x00\x02", 4) : std::string("\x05\x01\x00", 3);
  auto sent = co_await send_all(fd, greeting, deadline);
  if (!sent) co_return sent.error();
  auto choice = co_await recv_exact(fd, 2, 0, deadline);
  if (!choice) co_return choice.error();
  const auto ver = static_cast<uint8_t>((*choice)[0]), method = static_cast<uint8_t>((*choice)[1]);
  if (ver != 5) co_return rt::Error{rt::kErrProtocol, "proxy is not a SOCKS5 server"};
  if (method == 0xff) co_return rt::Error{rt::kErrNotAllowed, "SOCKS5 proxy accepts none of our authentication methods"};
  if (method == 0x02 && with_auth) {
    std::string auth;
    auth += '\x01';
    auth += static_cast<char>(proxy.user.size());
    auth += proxy.user;
    auth += static_cast<char>(proxy.pass.size());
    auth += proxy.pass;
    auto s = co_await send_all(fd, auth, deadline);
    if (!s) co_return s.error();
    auto status = co_await recv_exact(fd, 2, 0, deadline);
    if (!status) co_return status.error();
    if ((*status)[0] != '\x01') co_return rt::Error{rt::kErrProtocol, "bad SOCKS5 authentication reply"};
    if ((*status)[1] != '\x00') co_return rt::Error{rt::kErrNotAllowed, "SOCKS5 proxy refused our user name and password"};
  } else if (method != 0x00) {
    co_return rt::Error{rt::kErrProtocol, "SOCKS5 proxy chose a method we did not offer"};
  }

  auto s = co_await send_all(fd, *request, deadline);
  if (!s) co_return s.error();
  auto head = co_await recv_exact(fd, 4, 0, deadline);
  if (!head) co_return head.error();
  if ((*head)[0] != '\x05') co_return rt::Error{rt::kErrProtocol, "bad SOCKS5 reply version"};
  const auto rep = static_cast<uint8_t>((*head)[1]);
  const auto atyp = static_cast<uint8_t>((*head)[3]);
  // Consume the bound address even on failure, so the reply is read whole.
  size_t addr_len = 0;
  if (atyp == 0x01) {
    addr_len = 4;
  } else if (atyp == 0x04) {
    addr_len = 16;
  } else if (atyp == 0x03) {
    auto l = co_await recv_exact(fd, 1, 0, deadline);
    if (!l) co_return l.error();
    addr_len = static_cast<uint8_t>((*l)[0]);
  } else if (rep == 0) {
    co_return rt::Error{rt::kErrProtocol, "bad SOCKS5 reply address type"};
  }
  if (rep != 0 && atyp != 0x01 && atyp != 0x03 && atyp != 0x04) co_return socks5_reply_error(rep);
  auto rest = co_await recv_exact(fd, addr_len + 2, 0, deadline);
  if (!rest) co_return rest.error();
  if (rep != 0) co_return socks5_reply_error(rep);
  co_return rt::Result<void>{};
}

std::string http_authority(const std::string &host, uint16_t port) {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

rt::Task<rt::Result<void>> http_handshake(int fd, const ProxyUrl &proxy, const std::string &host, uint16_t port,
                                          rt::Clock::time_point deadline) {
  for (unsigned char c : host)
    if (c <= ' ' || c == 0x7f || c == '/' || c == '@')
      co_return rt::Error{EINVAL, "destination name cannot be sent in an HTTP CONNECT"};
  if (host.empty()) co_return rt::Error{EINVAL, "empty destination name"};
  const std::string authority = http_authority(host, port);
  std::string req = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\n";
  if (!proxy.user.empty()) req += "Proxy-Authorization: Basic " + base64(proxy.user + ":" + proxy.pass) + "\r\n";
  req += "\r\n";
  auto s = co_await send_all(fd, req, deadline);
  if (!s) co_return s.error();

  // Read the head without taking a byte past its blank line: peek what is there, then consume
  // exactly the part that belongs to the head. Bytes the proxy sends right after (the tunnel)
  // stay in the socket for whoever reads it next.
  std::string head;
  for (;;) {
    size_t room = kMaxHttpHead - head.size();
    if (room == 0) co_return rt::Error{rt::kErrProtocol, "HTTP proxy response head too large"};
    auto d = left(deadline);
    if (d == rt::Duration::zero()) co_return io_error(ETIMEDOUT, "handshake");
    std::string chunk(std::min<size_t>(room, 2048), '\0');
    int r = co_await rt::recv(fd, std::as_writable_bytes(std::span(chunk)), MSG_PEEK).with_timeout(d);
    if (r < 0) co_return io_error(-r, "recv");
    if (r == 0) co_return rt::Error{rt::kErrProtocol, "HTTP proxy closed the connection before answering"};
    chunk.resize(static_cast<size_t>(r));
    const size_t search_from = head.size() >= 3 ? head.size() - 3 : 0;
    std::string combined = head + chunk;
    size_t end = combined.find("\r\n\r\n", search_from);
    size_t take = end == std::string::npos ? chunk.size() : end + 4 - head.size();
    auto got = co_await recv_exact(fd, take, 0, deadline);
    if (!got) co_return got.error();
    head += *got;
    if (end != std::string::npos) break;
  }
  std::string reason;
  int status = http_status_of(head, &reason);
  if (status < 0) co_return rt::Error{rt::kErrProtocol, "HTTP proxy sent a malformed response"};
  if (status < 200 || status > 299) co_return http_status_error(status, reason);
  co_return rt::Result<void>{};
}

}  // namespace

std::optional<std::string> socks5_connect_request(const std::string &host, uint16_t port) {
  std::string out("\x05\x01\x00", 3);
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1 && host.find('\0') == std::string::npos) {
    out += '\x01';
    out.append(reinterpret_cast<const char *>(&v4), 4);
  } else if (inet_pton(AF_INET6, host.c_str(), &v6) == 1 && host.find('\0') == std::string::npos) {
    out += '\x04';
    out.append(reinterpret_cast<const char *>(&v6), 16);
  } else {
    if (host.empty() || host.size() > 255) return std::nullopt;
    out += '\x03';
    out += static_cast<char>(host.size());
    out += host;
  }
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xff);
  return out;
}

rt::Error socks5_reply_error(unsigned rep) {
  switch (rep) {
    case 2: return rt::Error{rt::kErrNotAllowed, "SOCKS5 proxy: connection not allowed by ruleset"};
    case 3: return rt::Error{ENETUNREACH, "SOCKS5 proxy: network unreachable"};
    case 4: return rt::Error{EHOSTUNREACH, "SOCKS5 proxy: host unreachable"};
    case 5: return rt::Error{ECONNREFUSED, "SOCKS5 proxy: connection refused"};
    case 6: return rt::Error{ETIMEDOUT, "SOCKS5 proxy: TTL expired"};
    default: return rt::Error{EPROTO, "SOCKS5 proxy: failure (reply " + std::to_string(rep) + ")"};
  }
}

rt::Error http_status_error(int status, const std::string &reason) {
  std::string what = "HTTP proxy: " + std::to_string(status) + (reason.empty() ? "" : " " + reason);
  switch (status) {
    case 403:
    case 407: return rt::Error{rt::kErrNotAllowed, what};
    case 502: return rt::Error{ECONNREFUSED, what};
    case 504: return rt::Error{ETIMEDOUT, what};
    default: return rt::Error{EPROTO, what};
  }
}

int http_status_of(std::string_view head, std::string *reason) {
  size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[8] != ' ') return -1;
  int status = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return -1;
    status = status * 10 + (line[i] - '0');
  }
  if (line.size() > 12 && line[12] != ' ') return -1;
  if (reason) {
    std::string r(line.size() > 13 ? line.substr(13) : std::string_view{});
    if (r.size() > 64) r.resize(64);
    for (char &c : r)
      if (static_cast<unsigned char>(c) < ' ' || c == 0x7f) c = '?';
    *reason = r;
  }
  return status;
}

std::string base64(std::string_view in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

rt::Task<rt::Result<rt::UniqueFd>> dial_via(const ProxyUrl &proxy_ref, const std::string &host_ref, uint16_t port,
                                            rt::Duration timeout) {
  const ProxyUrl proxy = proxy_ref;
  const std::string host = host_ref;
  const auto deadline = rt::Clock::now() + timeout;
  auto fd = co_await dial(proxy.addr.host, proxy.addr.port, timeout);
  if (!fd) {
    auto e = fd.error();
    e.what = "cannot reach proxy: " + e.what;
    co_return e;
  }
  rt::Result<void> ok;
  if (proxy.kind == ProxyUrl::Http) {
    ok = co_await http_handshake(fd->get(), proxy, host, port, deadline);
  } else {
    ok = co_await socks5_handshake(fd->get(), proxy, host, port, deadline);
  }
  if (!ok) co_return ok.error();
  co_return std::move(fd).value();
}

rt::Task<rt::Result<rt::UniqueFd>> dial_maybe_proxy(const std::optional<ProxyUrl> &proxy, const std::string &host,
                                                    uint16_t port, rt::Duration timeout) {
  if (proxy) {
    const ProxyUrl p = *proxy;
    co_return co_await dial_via(p, host, port, timeout);
  }
  co_return co_await dial(host, port, timeout);
}

}  // namespace alk::net
