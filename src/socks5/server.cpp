#include "socks5/server.hpp"

#include <cerrno>
#include <vector>

#include "runtime/reactor.hpp"
#include "socks5/udp_associate.hpp"

namespace alk::socks5 {

Rep rep_for_error(int code) {
  switch (code) {
    case 0: return Rep::Succeeded;
    case rt::kErrNotAllowed:
    case EACCES:
    case EPERM: return Rep::NotAllowed;
    case ENETUNREACH:
    case ENETDOWN: return Rep::NetworkUnreachable;
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case rt::kErrDnsNotFound:
    case rt::kErrDnsFailure: return Rep::HostUnreachable;
    case ECONNREFUSED: return Rep::ConnectionRefused;
    case ETIMEDOUT: return Rep::TtlExpired;
    case EPROTONOSUPPORT: return Rep::CommandNotSupported;
    case EAFNOSUPPORT: return Rep::AddressTypeNotSupported;
    default: return Rep::GeneralFailure;
  }
}

namespace {

constexpr size_t kMaxHandshake = 1024;  // a SOCKS5 request is at most 262 bytes, SOCKS4a ~520

struct Conn {
  stream::FdStream s;
  std::vector<uint8_t> buf;
  rt::Clock::time_point deadline;

  std::span<const uint8_t> data() const { return buf; }
  void consume(size_t n) { buf.erase(buf.begin(), buf.begin() + ptrdiff_t(n)); }

  // Reads more handshake bytes within the deadline: false on EOF, error, timeout or overflow.
  rt::Task<bool> fill() {
    if (buf.size() >= kMaxHandshake) co_return false;
    auto left = deadline - rt::Clock::now();
    if (left <= rt::Duration::zero()) co_return false;
    uint8_t tmp[kMaxHandshake];
    size_t room = kMaxHandshake - buf.size();
    int n = co_await rt::recv(s.native_fd(), std::as_writable_bytes(std::span(tmp, room))).with_timeout(left);
    if (n <= 0) co_return false;
    buf.insert(buf.end(), tmp, tmp + n);
    co_return true;
  }
  rt::Task<bool> send(std::span<const uint8_t> bytes) {
    ssize_t n = co_await s.write(std::as_bytes(bytes));
    co_return n == ssize_t(bytes.size());
  }
};

template <class T, class F>
rt::Task<std::optional<Parsed<T>>> parse_with(Conn &c, F parse) {
  for (;;) {
    auto p = parse(c.data());
    if (p.status != Status::Incomplete) co_return p;
    bool more = co_await c.fill();
    if (!more) co_return std::nullopt;
  }
}

// After a successful reply: bytes the client already sent go first, then the relay.
rt::Task<void> relay(Conn &c, stream::Stream &tunnel) {
  if (!c.buf.empty()) {
    ssize_t w = co_await tunnel.write(std::as_bytes(std::span(c.buf)));
    if (w < 0) co_return;
    c.buf.clear();
  }
  co_await stream::pump(c.s, tunnel);
}

rt::Task<void> serve_socks4(Conn &c, const Connector &connect) {
  auto req = co_await parse_with<Socks4Request>(c, parse_socks4_request);
  if (!req) co_return;
  if (req->status != Status::Ok || req->value.cmd != kSocks4Connect) {
    co_await c.send(encode_socks4_reply(false));
    co_return;
  }
  c.consume(req->consumed);
  auto tunnel = co_await connect(req->value.dst);
  bool ok = tunnel.ok();
  bool sent = co_await c.send(encode_socks4_reply(ok));
  if (!ok || !sent) co_return;
  co_await relay(c, **tunnel);
  (*tunnel)->close();
}

}  // namespace

rt::Task<void> serve_client(rt::UniqueFd fd, const ServerConfig &cfg, const Connector &connect) {
  Conn c{stream::FdStream(std::move(fd)), {}, rt::Clock::now() + cfg.handshake_timeout};
  auto greet = co_await parse_with<Greeting>(c, parse_greeting);
  if (!greet || greet->status != Status::Ok) co_return;
  if (greet->value.version == kVersion4) {
    if (!cfg.credentials) co_await serve_socks4(c, connect);  // SOCKS4 has no passwords
    co_return;
  }
  c.consume(greet->consumed);
  uint8_t method = choose_method(greet->value, cfg.credentials.has_value());
  bool sent = co_await c.send(encode_method_choice(method));
  if (!sent || method == kMethodNoAcceptable) co_return;
  if (method == kMethodUserPass) {
    auto up = co_await parse_with<UserPass>(c, parse_userpass);
    if (!up || up->status != Status::Ok) co_return;
    c.consume(up->consumed);
    bool good = constant_time_equal(up->value.user, cfg.credentials->user) &
                constant_time_equal(up->value.pass, cfg.credentials->pass);
    co_await c.send(encode_userpass_status(good));
    if (!good) co_return;
  }
  auto req = co_await parse_with<Request>(c, parse_request);
  if (!req) co_return;
  if (req->status == Status::Invalid) {
    co_await c.send(encode_reply(req->rep));
    co_return;
  }
  c.consume(req->consumed);
  if (req->value.cmd == Cmd::UdpAssociate && cfg.udp_tunnel) {
    co_await serve_udp_associate(c.s, req->value.dst, cfg.udp_tunnel);
    co_return;
  }
  if (req->value.cmd != Cmd::Connect) {
    co_await c.send(encode_reply(Rep::CommandNotSupported));
    co_return;
  }
  auto tunnel = co_await connect(req->value.dst);
  if (!tunnel) {
    co_await c.send(encode_reply(rep_for_error(tunnel.error().code)));
    co_return;
  }
  sent = co_await c.send(encode_reply(Rep::Succeeded));
  if (sent) co_await relay(c, **tunnel);
  (*tunnel)->close();
}

}  // namespace alk::socks5
