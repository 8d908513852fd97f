#include "net/spec.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <array>
#include <cstring>
#include <vector>

namespace alk::net {
namespace {

void set_err(std::string* err, std::string msg) {
  if (err) *err = std::move(msg);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = to_lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (to_lower(a[i]) != to_lower(b[i])) return false;
  return true;
}

// inet_pton wants a NUL-terminated string; anything longer than the longest textual IPv6
// address ("ffff:...:255.255.255.255", 45 chars) cannot be one, so a fixed buffer suffices.
bool pton(int af, std::string_view s, void* out) {
  std::array<char, 64> buf{};
  if (s.empty() || s.size() >= buf.size()) return false;
  std::memcpy(buf.data(), s.data(), s.size());
  return inet_pton(af, buf.data(), out) == 1;
}

bool is_ipv4_literal(std::string_view s) {
  in_addr a{};
  return pton(AF_INET, s, &a);
}

bool is_ipv6_literal(std::string_view s) {
  in6_addr a{};
  return pton(AF_INET6, s, &a);
}

// "fe80::1%eth0": the zone is an interface name or number.
bool is_ipv6_literal_with_zone(std::string_view s) {
  auto pct = s.find('%');
  if (pct == std::string_view::npos) return is_ipv6_literal(s);
  std::string_view zone = s.substr(pct + 1);
  if (zone.empty() || zone.size() > 15) return false;
  for (char c : zone)
    if (!is_alpha(c) && !is_digit(c) && c != '_' && c != '.' && c != '-') return false;
  return is_ipv6_literal(s.substr(0, pct));
}

// Parses a decimal port; writes nothing on failure.
bool parse_port_number(std::string_view s, bool allow_zero, uint16_t* out) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  for (char c : s) {
    if (!is_digit(c)) return false;
    v = v * 10 + static_cast<unsigned>(c - '0');
  }
  if (v > 65535 || (v == 0 && !allow_zero)) return false;
  *out = static_cast<uint16_t>(v);
  return true;
}

bool port_or_err(std::string_view s, bool allow_zero, uint16_t* out, std::string* err) {
  if (parse_port_number(s, allow_zero, out)) return true;
  if (s.empty())
    set_err(err, "missing port");
  else
    set_err(err, "invalid port " + quote_for_error(s) + " (expected " + (allow_zero ? "0" : "1") +
                     "..65535)");
  return false;
}

bool host_or_err(std::string_view h, bool bracketed, std::string* err) {
  if (bracketed) {
    if (is_ipv6_literal_with_zone(h)) return true;
    set_err(err, "invalid IPv6 address " + quote_for_error(h));
    return false;
  }
  if (h.empty()) {
    set_err(err, "missing host");
    return false;
  }
  if (is_valid_hostname(h)) return true;
  set_err(err, "invalid host " + quote_for_error(h));
  return false;
}

struct Token {
  std::string_view text;
  bool bracketed = false;
};

// Splits on ':' outside brackets, so "[::1]:80:[2001:db8::1]:80" gives 4 tokens. Gives up past
// max_tokens so hostile input costs at most one pass.
bool split_colons(std::string_view s, size_t max_tokens, std::vector<Token>* out, std::string* err) {
  size_t i = 0;
  while (true) {
    if (out->size() == max_tokens) {
      set_err(err, "too many ':'-separated fields");
      return false;
    }
    Token t;
    if (i < s.size() && s[i] == '[') {
      auto close = s.find(']', i + 1);
      if (close == std::string_view::npos) {
        set_err(err, "missing ']' after '['");
        return false;
      }
      t.text = s.substr(i + 1, close - i - 1);
      t.bracketed = true;
      i = close + 1;
      if (i < s.size() && s[i] != ':') {
        set_err(err, "expected ':' after ']'");
        return false;
      }
    } else {
      auto colon = s.find(':', i);
      size_t end = colon == std::string_view::npos ? s.size() : colon;
      t.text = s.substr(i, end - i);
      if (t.text.find_first_of("[]") != std::string_view::npos) {
        set_err(err, "'[' may only start a field (write IPv6 as [ADDR])");
        return false;
      }
      i = end;
    }
    out->push_back(t);
    if (i >= s.size()) return true;
    ++i;  // skip ':'
  }
}

// '*' matches any run of characters (including none). Iterative with a single backtrack point,
// so the cost is O(|p| * |s|) at worst and never recursive.
bool glob_match(std::string_view p, std::string_view s) {
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (pi < p.size() && to_lower(p[pi]) == to_lower(s[si])) {
      ++pi;
      ++si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

int hex_value(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool percent_decode(std::string_view s, std::string* out) {
  out->clear();
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out->push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return false;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out->push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

std::string_view strip_trailing_dot(std::string_view s) {
  if (s.size() > 1 && s.back() == '.') s.remove_suffix(1);
  return s;
}

std::optional<ForwardSpec> parse_forward_common(std::string_view s, std::string* err, bool remote) {
  const char* shape = remote ? "expected [BIND:]RPORT:HOST:LPORT" : "expected [BIND:]LPORT:HOST:RPORT";
  if (s.empty()) {
    set_err(err, std::string("empty forward spec (") + shape + ")");
    return std::nullopt;
  }
  std::vector<Token> t;
  if (!split_colons(s, 4, &t, err)) return std::nullopt;
  if (t.size() < 3) {
    set_err(err, std::string("too few ':'-separated fields (") + shape + ")");
    return std::nullopt;
  }
  ForwardSpec f;
  size_t i = 0;
  if (t.size() == 4) {
    const Token& b = t[i++];
    if (!b.bracketed && (b.text.empty() || b.text == "*")) {
      f.bind_host = remote ? "" : "0.0.0.0";
    } else {
      if (!host_or_err(b.text, b.bracketed, err)) return std::nullopt;
      f.bind_host = std::string(b.text);
    }
  } else {
    f.bind_host = remote ? "localhost" : "127.0.0.1";
  }
  const Token& bp = t[i++];
  const Token& th = t[i++];
  const Token& tp = t[i++];
  if (bp.bracketed || tp.bracketed) {
    set_err(err, "a port cannot be in brackets");
    return std::nullopt;
  }
  if (!port_or_err(bp.text, remote, &f.bind_port, err)) return std::nullopt;
  if (!host_or_err(th.text, th.bracketed, err)) return std::nullopt;
  f.target_host = std::string(th.text);
  if (!port_or_err(tp.text, false, &f.target_port, err)) return std::nullopt;
  return f;
}

}  // namespace

std::string quote_for_error(std::string_view s) {
  constexpr size_t kMax = 80;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < kMax; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  out += '"';
  return out;
}

bool is_ip_literal(std::string_view s) { return is_ipv4_literal(s) || is_ipv6_literal(s); }

bool is_valid_hostname(std::string_view s) {
  if (s.empty()) return false;
  if (is_ip_literal(s)) return true;
  std::string_view name = s;
  if (name.size() > 1 && name.back() == '.') name.remove_suffix(1);  // fully qualified "a.b."
  if (name.size() > 253) return false;
  size_t start = 0;
  std::string_view last;
  while (start <= name.size()) {
    auto dot = name.find('.', start);
    size_t end = dot == std::string_view::npos ? name.size() : dot;
    std::string_view label = name.substr(start, end - start);
    if (label.empty() || label.size() > 63) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_') return false;
    last = label;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  bool all_digits = true;
  for (char c : last) all_digits = all_digits && is_digit(c);
  return !all_digits;
}

std::optional<HostPort> parse_host_port(std::string_view s, std::optional<uint16_t> default_port,
                                        std::string* err, bool allow_zero) {
  if (s.empty()) {
    set_err(err, "empty address");
    return std::nullopt;
  }
  HostPort hp;
  std::string_view host, port;
  bool have_port = false, bracketed = false;
  if (s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos) {
      set_err(err, "missing ']' after IPv6 address");
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    bracketed = true;
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        set_err(err, "expected ':PORT' after ']'");
        return std::nullopt;
      }
      port = rest.substr(1);
      have_port = true;
    }
  } else {
    auto first = s.find(':');
    if (first == std::string_view::npos) {
      host = s;
    } else if (s.find(':', first + 1) != std::string_view::npos) {
      // Two or more colons: only a bare IPv6 literal, which cannot carry a port.
      if (!is_ipv6_literal_with_zone(s)) {
        set_err(err, "invalid address " + quote_for_error(s) + " (write IPv6 as [ADDR]:PORT)");
        return std::nullopt;
      }
      host = s;
      bracketed = true;
    } else {
      host = s.substr(0, first);
      port = s.substr(first + 1);
      have_port = true;
    }
  }
  if (!host_or_err(host, bracketed, err)) return std::nullopt;
  hp.host = std::string(host);
  if (have_port) {
    if (!port_or_err(port, allow_zero, &hp.port, err)) return std::nullopt;
  } else if (default_port && (*default_port != 0 || allow_zero)) {
    hp.port = *default_port;
  } else {
    set_err(err, bracketed && s.front() != '[' ? "missing port (write IPv6 as [ADDR]:PORT)"
                                               : "missing port (expected HOST:PORT)");
    return std::nullopt;
  }
  return hp;
}

std::optional<ForwardSpec> parse_forward(std::string_view s, std::string* err) {
  return parse_forward_common(s, err, false);
}

std::optional<ForwardSpec> parse_remote_forward(std::string_view s, std::string* err) {
  return parse_forward_common(s, err, true);
}

std::optional<ProxyUrl> parse_proxy_url(std::string_view s, std::string* err) {
  auto sep = s.find("://");
  if (sep == std::string_view::npos) {
    set_err(err, "expected socks5://HOST:PORT or http://HOST:PORT");
    return std::nullopt;
  }
  ProxyUrl u;
  std::string_view scheme = s.substr(0, sep);
  if (iequals(scheme, "socks5") || iequals(scheme, "socks5h")) {
    u.kind = ProxyUrl::Socks5;
  } else if (iequals(scheme, "http")) {
    u.kind = ProxyUrl::Http;
  } else {
    set_err(err, "unsupported proxy scheme " + quote_for_error(scheme) + " (expected socks5, socks5h or http)");
    return std::nullopt;
  }
  std::string_view authority = s.substr(sep + 3);
  if (!authority.empty() && authority.back() == '/') authority.remove_suffix(1);
  if (authority.find_first_of("/?#") != std::string_view::npos) {
    set_err(err, "a proxy URL has no path, query or fragment");
    return std::nullopt;
  }
  auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    auto colon = userinfo.find(':');
    std::string_view user = userinfo.substr(0, colon);
    std::string_view pass = colon == std::string_view::npos ? std::string_view{} : userinfo.substr(colon + 1);
    if (!percent_decode(user, &u.user) || !percent_decode(pass, &u.pass)) {
      set_err(err, "bad %-escape in proxy user name or password");
      return std::nullopt;
    }
    if (u.user.empty()) {
      set_err(err, "empty proxy user name before '@'");
      return std::nullopt;
    }
    if (u.user.size() > 255 || u.pass.size() > 255) {
      set_err(err, "proxy user name and password are limited to 255 bytes each");
      return std::nullopt;
    }
  }
  if (authority.empty()) {
    set_err(err, "missing proxy HOST:PORT");
    return std::nullopt;
  }
  std::string sub;
  auto hp = parse_host_port(authority, std::nullopt, &sub);
  if (!hp) {
    set_err(err, "proxy: " + sub);
    return std::nullopt;
  }
  u.addr = std::move(*hp);
  return u;
}

std::optional<PermitOpen> parse_permit_open(std::string_view s, std::string* err) {
  if (iequals(s, "any")) return PermitOpen{"*", "*"};
  std::string_view host, port;
  bool bracketed = false;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      set_err(err, "expected [IPV6]:PORT");
      return std::nullopt;
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
    bracketed = true;
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      set_err(err, "expected HOST:PORT (either may be '*')");
      return std::nullopt;
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      set_err(err, "write IPv6 as [ADDR]:PORT");
      return std::nullopt;
    }
  }
  PermitOpen p;
  if (bracketed) {
    if (!is_ipv6_literal(host)) {
      set_err(err, "invalid IPv6 address " + quote_for_error(host));
      return std::nullopt;
    }
  } else if (host != "*") {
    // A glob is a host name with '*' standing for any run of characters.
    std::string probe(host);
    for (auto& c : probe)
      if (c == '*') c = 'x';
    if (host.empty() || host.size() > 253 || !is_valid_hostname(probe)) {
      set_err(err, "invalid host pattern " + quote_for_error(host));
      return std::nullopt;
    }
  }
  p.host_pattern = lower(host);
  if (port == "*") {
    p.port_pattern = "*";
  } else {
    uint16_t n = 0;
    if (!port_or_err(port, false, &n, err)) return std::nullopt;
    p.port_pattern = std::to_string(n);
  }
  return p;
}

bool permit_open_matches(const PermitOpen& p, std::string_view host, uint16_t port) {
  if (p.port_pattern != "*" && p.port_pattern != std::to_string(port)) return false;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (p.host_pattern == "*") return !host.empty();
  std::string_view pat = strip_trailing_dot(p.host_pattern);
  host = strip_trailing_dot(host);
  // Compare IP literals by value so different spellings of one address agree.
  in6_addr a6{}, b6{};
  if (pton(AF_INET6, pat, &a6)) return pton(AF_INET6, host, &b6) && std::memcmp(&a6, &b6, sizeof a6) == 0;
  in_addr a4{}, b4{};
  if (pton(AF_INET, pat, &a4)) return pton(AF_INET, host, &b4) && a4.s_addr == b4.s_addr;
  return glob_match(pat, host);
}

bool is_link_local(std::string_view s) {
  if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  if (auto pct = s.find('%'); pct != std::string_view::npos) s = s.substr(0, pct);
  auto v4_link_local = [](const uint8_t* b) { return b[0] == 169 && b[1] == 254; };
  in6_addr a6{};
  if (pton(AF_INET6, s, &a6)) {
    const uint8_t* b = a6.s6_addr;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return true;
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static constexpr uint8_t kCompat[12] = {};
    static constexpr uint8_t kNat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (std::memcmp(b, kMapped, 12) == 0 || std::memcmp(b, kCompat, 12) == 0 || std::memcmp(b, kNat64, 12) == 0)
      return v4_link_local(b + 12);
    return false;
  }
  std::array<char, 64> buf{};
  if (s.empty() || s.size() >= buf.size()) return false;
  std::memcpy(buf.data(), s.data(), s.size());
  in_addr a4{};
  if (inet_aton(buf.data(), &a4) == 0) return false;
  return v4_link_local(reinterpret_cast<const uint8_t*>(&a4.s_addr));
}

std::optional<UserPass> parse_user_pass(std::string_view s, std::string* err) {
  auto colon = s.find(':');
  if (colon == std::string_view::npos) {
    set_err(err, "expected USER:PASS");
    return std::nullopt;
  }
  std::string_view user = s.substr(0, colon), pass = s.substr(colon + 1);
  if (user.empty() || pass.empty()) {
    set_err(err, user.empty() ? "empty user name in USER:PASS" : "empty password in USER:PASS");
    return std::nullopt;
  }
  if (user.size() > 255 || pass.size() > 255) {
    set_err(err, "user name and password are limited to 255 bytes each (RFC 1929)");
    return std::nullopt;
  }
  return UserPass{std::string(user), std::string(pass)};
}

}  // namespace alk::net
