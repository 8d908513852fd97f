#include "socks5/codec.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace alk::socks5 {
namespace {

template <class T>
Parsed<T> incomplete() {
  return Parsed<T>{Status::Incomplete};
}

template <class T>
Parsed<T> invalid(Rep rep) {
  Parsed<T> p{Status::Invalid};
  p.rep = rep;
  return p;
}

uint16_t read_be16(std::span<const uint8_t> in, size_t at) {
  return static_cast<uint16_t>((in[at] << 8) | in[at + 1]);
}

// Parses ATYP, address and port starting at `at`. On Ok, consumed is the offset just past the
// port (i.e. relative to the start of `in`, not to `at`).
Parsed<Address> parse_address_at(std::span<const uint8_t> in, size_t at) {
  if (in.size() <= at) return incomplete<Address>();
  Address addr;
  size_t host_end = 0;
  switch (in[at]) {
    case static_cast<uint8_t>(AddrType::IPv4):
      host_end = at + 1 + 4;
      if (in.size() < host_end + 2) return incomplete<Address>();
      addr.type = AddrType::IPv4;
      addr.host = format_ipv4(in.subspan(at + 1).first<4>());
      break;
    case static_cast<uint8_t>(AddrType::IPv6):
      host_end = at + 1 + 16;
      if (in.size() < host_end + 2) return incomplete<Address>();
      addr.type = AddrType::IPv6;
      addr.host = format_ipv6(in.subspan(at + 1).first<16>());
      break;
    case static_cast<uint8_t>(AddrType::Domain): {
      if (in.size() < at + 2) return incomplete<Address>();
      const size_t len = in[at + 1];
      if (len == 0) return invalid<Address>(Rep::GeneralFailure);
      // A NUL cannot be passed on safely (C APIs, SSH string handling downstream), so reject as
      // soon as one is visible instead of waiting for the rest of the name.
      const size_t have = std::min(in.size(), at + 2 + len) - (at + 2);
      auto visible = in.subspan(at + 2, have);
      if (std::find(visible.begin(), visible.end(), uint8_t{0}) != visible.end())
        return invalid<Address>(Rep::GeneralFailure);
      host_end = at + 2 + len;
      if (in.size() < host_end + 2) return incomplete<Address>();
      addr.type = AddrType::Domain;
      addr.host.assign(reinterpret_cast<const char *>(in.data() + at + 2), len);
      break;
    }
    default:
      return invalid<Address>(Rep::AddressTypeNotSupported);
  }
  addr.port = read_be16(in, host_end);
  Parsed<Address> p{Status::Ok};
  p.value = std::move(addr);
  p.consumed = host_end + 2;
  return p;
}

void append_be16(std::vector<uint8_t> &out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v & 0xff));
}

// Used when a caller hands us an address we cannot put on the wire: the peer still gets a
// well-formed message, and the port survives.
void append_unspecified(std::vector<uint8_t> &out, uint16_t port) {
  out.push_back(static_cast<uint8_t>(AddrType::IPv4));
  out.insert(out.end(), 4, 0);
  append_be16(out, port);
}

}  // namespace

std::string format_ipv4(std::span<const uint8_t, 4> b) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
  return buf;
}

std::string format_ipv6(std::span<const uint8_t, 16> b) {
  uint16_t words[8];
  for (int i = 0; i < 8; ++i) words[i] = static_cast<uint16_t>((b[2 * i] << 8) | b[2 * i + 1]);

  // IPv4-mapped (::ffff:0:0/96): RFC 5952 §5 recommends the dotted tail.
  const bool mapped = words[0] == 0 && words[1] == 0 && words[2] == 0 && words[3] == 0 &&
                      words[4] == 0 && words[5] == 0xffff;
  if (mapped) return "::ffff:" + format_ipv4(b.subspan<12, 4>());

  int best_start = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (words[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && words[j] == 0) ++j;
    if (j - i > best_len) {
      best_start = i;
      best_len = j - i;
    }
    i = j;
  }
  if (best_len < 2) best_start = -1;  // RFC 5952 §4.2.2: a single 0 group is not shortened

  std::string out;
  out.reserve(39);
  char hex[8];
  for (int i = 0; i < 8; ++i) {
    if (i == best_start) {
      out += "::";
      i += best_len - 1;
      continue;
    }
    if (!out.empty() && out.back() != ':') out += ':';
    std::snprintf(hex, sizeof hex, "%x", static_cast<unsigned>(words[i]));
    out += hex;
  }
  return out;
}

bool append_address(std::vector<uint8_t> &out, const Address &addr) {
  switch (addr.type) {
    case AddrType::IPv4: {
      uint8_t raw[4];
      if (inet_pton(AF_INET, addr.host.c_str(), raw) != 1) return false;
      // inet_pton stops at an embedded NUL; a host string carrying one is not this address.
      if (addr.host.find('\0') != std::string::npos) return false;
      out.push_back(static_cast<uint8_t>(AddrType::IPv4));
      out.insert(out.end(), raw, raw + 4);
      break;
    }
    case AddrType::IPv6: {
      uint8_t raw[16];
      if (addr.host.find('\0') != std::string::npos) return false;
      if (inet_pton(AF_INET6, addr.host.c_str(), raw) != 1) return false;
      out.push_back(static_cast<uint8_t>(AddrType::IPv6));
      out.insert(out.end(), raw, raw + 16);
      break;
    }
    case AddrType::Domain:
      if (addr.host.empty() || addr.host.size() > 255) return false;
      if (addr.host.find('\0') != std::string::npos) return false;
      out.push_back(static_cast<uint8_t>(AddrType::Domain));
      out.push_back(static_cast<uint8_t>(addr.host.size()));
      out.insert(out.end(), addr.host.begin(), addr.host.end());
      break;
    default:
      return false;
  }
  append_be16(out, addr.port);
  return true;
}

Parsed<Greeting> parse_greeting(std::span<const uint8_t> in) {
  if (in.empty()) return incomplete<Greeting>();
  if (in[0] == kVersion4) {
    // SOCKS4 has no greeting: the first message is already the request. Consume nothing so the
    // caller can hand the same bytes to parse_socks4_request.
    Parsed<Greeting> p{Status::Ok};
    p.value.version = kVersion4;
    return p;
  }
  if (in[0] != kVersion5) return invalid<Greeting>(Rep::GeneralFailure);
  if (in.size() < 2) return incomplete<Greeting>();
  const size_t n = in[1];
  if (n == 0) return invalid<Greeting>(Rep::GeneralFailure);
  if (in.size() < 2 + n) return incomplete<Greeting>();
  Parsed<Greeting> p{Status::Ok};
  p.value.version = kVersion5;
  p.value.methods.assign(in.begin() + 2, in.begin() + 2 + static_cast<std::ptrdiff_t>(n));
  p.consumed = 2 + n;
  return p;
}

uint8_t choose_method(const Greeting &greeting, bool require_userpass) {
  if (greeting.version != kVersion5) return kMethodNoAcceptable;
  const uint8_t wanted = require_userpass ? kMethodUserPass : kMethodNoAuth;
  const auto &m = greeting.methods;
  return std::find(m.begin(), m.end(), wanted) != m.end() ? wanted : kMethodNoAcceptable;
}

std::array<uint8_t, 2> encode_method_choice(uint8_t method) { return {kVersion5, method}; }

Parsed<UserPass> parse_userpass(std::span<const uint8_t> in) {
  if (in.empty()) return incomplete<UserPass>();
  if (in[0] != kUserPassVersion) return invalid<UserPass>(Rep::GeneralFailure);
  if (in.size() < 2) return incomplete<UserPass>();
  const size_t ulen = in[1];
  const size_t plen_at = 2 + ulen;
  if (in.size() < plen_at + 1) return incomplete<UserPass>();
  const size_t plen = in[plen_at];
  const size_t end = plen_at + 1 + plen;
  if (in.size() < end) return incomplete<UserPass>();
  Parsed<UserPass> p{Status::Ok};
  p.value.user.assign(reinterpret_cast<const char *>(in.data() + 2), ulen);
  p.value.pass.assign(reinterpret_cast<const char *>(in.data() + plen_at + 1), plen);
  p.consumed = end;
  return p;
}

std::array<uint8_t, 2> encode_userpass_status(bool ok) {
  // RFC 1929: STATUS 0x00 is success, anything else is failure.
  return {kUserPassVersion, static_cast<uint8_t>(ok ? 0x00 : 0x01)};
}

Parsed<Request> parse_request(std::span<const uint8_t> in) {
  if (in.empty()) return incomplete<Request>();
  if (in[0] != kVersion5) return invalid<Request>(Rep::GeneralFailure);
  if (in.size() < 2) return incomplete<Request>();
  const uint8_t cmd = in[1];
  if (cmd != static_cast<uint8_t>(Cmd::Connect) && cmd != static_cast<uint8_t>(Cmd::Bind) &&
      cmd != static_cast<uint8_t>(Cmd::UdpAssociate))
    return invalid<Request>(Rep::CommandNotSupported);
  // in[2] is RSV. RFC 1928 says X'00' but gives no meaning to other values; ignoring it, as
  // common servers do, costs nothing and keeps sloppy clients working.
  auto addr = parse_address_at(in, 3);
  if (addr.status == Status::Incomplete) return incomplete<Request>();
  if (addr.status == Status::Invalid) return invalid<Request>(addr.rep);
  Parsed<Request> p{Status::Ok};
  p.value.cmd = static_cast<Cmd>(cmd);
  p.value.dst = std::move(addr.value);
  p.consumed = addr.consumed;
  return p;
}

std::vector<uint8_t> encode_reply(Rep rep, const Address *bound) {
  std::vector<uint8_t> out{kVersion5, static_cast<uint8_t>(rep), 0x00};
  out.reserve(3 + 1 + 1 + 255 + 2);
  if (bound == nullptr)
    append_unspecified(out, 0);
  else if (!append_address(out, *bound))
    append_unspecified(out, bound->port);
  return out;
}

Parsed<UdpDatagram> parse_udp_datagram(std::span<const uint8_t> in) {
  // RSV is two bytes; check each as soon as it is visible.
  for (size_t i = 0; i < 2; ++i) {
    if (in.size() <= i) return incomplete<UdpDatagram>();
    if (in[i] != 0) return invalid<UdpDatagram>(Rep::GeneralFailure);
  }
  if (in.size() < 3) return incomplete<UdpDatagram>();
  const uint8_t frag = in[2];
  auto addr = parse_address_at(in, 3);
  if (addr.status == Status::Incomplete) return incomplete<UdpDatagram>();
  if (addr.status == Status::Invalid) return invalid<UdpDatagram>(addr.rep);
  Parsed<UdpDatagram> p{Status::Ok};
  p.value.frag = frag;
  p.value.dst = std::move(addr.value);
  p.value.header_len = addr.consumed;
  p.consumed = addr.consumed;
  return p;
}

std::vector<uint8_t> encode_udp_header(const Address &dst) {
  std::vector<uint8_t> out{0x00, 0x00, 0x00};
  out.reserve(3 + 1 + 1 + 255 + 2);
  if (!append_address(out, dst)) append_unspecified(out, dst.port);
  return out;
}

Parsed<Socks4Request> parse_socks4_request(std::span<const uint8_t> in) {
  constexpr size_t kMaxField = 255;
  constexpr size_t kFixed = 8;  // VN CD DSTPORT(2) DSTIP(4)
  if (in.empty()) return incomplete<Socks4Request>();
  if (in[0] != kVersion4) return invalid<Socks4Request>(Rep::GeneralFailure);
  if (in.size() < 2) return incomplete<Socks4Request>();
  const uint8_t cmd = in[1];
  if (cmd != kSocks4Connect && cmd != kSocks4Bind) return invalid<Socks4Request>(Rep::CommandNotSupported);
  if (in.size() < kFixed) return incomplete<Socks4Request>();

  // Finds the NUL ending a string field that starts at `at`; npos means "not yet", and a field
  // longer than kMaxField is reported through `too_long`.
  auto find_nul = [&](size_t at, bool &too_long) -> size_t {
    const size_t limit = std::min(in.size(), at + kMaxField + 1);
    for (size_t i = at; i < limit; ++i)
      if (in[i] == 0) return i;
    too_long = limit == at + kMaxField + 1;
    return std::string::npos;
  };

  bool too_long = false;
  const size_t uid_end = find_nul(kFixed, too_long);
  if (too_long) return invalid<Socks4Request>(Rep::GeneralFailure);
  if (uid_end == std::string::npos) return incomplete<Socks4Request>();

  Parsed<Socks4Request> p{Status::Ok};
  p.value.cmd = cmd;
  p.value.dst.port = read_be16(in, 2);
  p.value.userid.assign(reinterpret_cast<const char *>(in.data() + kFixed), uid_end - kFixed);
  const bool is_4a = in[4] == 0 && in[5] == 0 && in[6] == 0 && in[7] != 0;
  if (!is_4a) {
    p.value.dst.type = AddrType::IPv4;
    p.value.dst.host = format_ipv4(in.subspan(4).first<4>());
    p.consumed = uid_end + 1;
    return p;
  }
  const size_t name_at = uid_end + 1;
  const size_t name_end = find_nul(name_at, too_long);
  if (too_long) return invalid<Socks4Request>(Rep::GeneralFailure);
  if (name_end == std::string::npos) return incomplete<Socks4Request>();
  if (name_end == name_at) return invalid<Socks4Request>(Rep::GeneralFailure);  // empty domain
  p.value.dst.type = AddrType::Domain;
  p.value.dst.host.assign(reinterpret_cast<const char *>(in.data() + name_at), name_end - name_at);
  p.consumed = name_end + 1;
  return p;
}

std::array<uint8_t, 8> encode_socks4_reply(bool granted) {
  return {0x00, static_cast<uint8_t>(granted ? 90 : 91), 0, 0, 0, 0, 0, 0};
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  // volatile keeps the compiler from turning the loop back into an early-exit memcmp.
  volatile uint8_t diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t x = i < a.size() ? static_cast<uint8_t>(a[i]) : 0;
    const uint8_t y = i < b.size() ? static_cast<uint8_t>(b[i]) : 0;
    diff = diff | static_cast<uint8_t>(x ^ y);
  }
  return diff == 0;
}

}  // namespace alk::socks5
