#include "ssh/authorized_keys.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace alk::ssh {
namespace {

// Longer lines are refused outright: a certificate-authority line is a few hundred bytes, and
// the bound keeps per-line work predictable on hostile files.
constexpr size_t kMaxLineBytes = 128 * 1024;

bool is_blank(char c) { return c == ' ' || c == '\t'; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

// match_pattern_list() from OpenSSH match.c: 1 on a positive match, -1 when a negated pattern
// matches (which wins immediately), 0 otherwise.
int match_pattern_list(std::string_view text, const std::vector<std::string>& patterns, bool dolower) {
  int got_positive = 0;
  for (const auto& raw : patterns) {
    std::string_view p = raw;
    bool negated = !p.empty() && p.front() == '!';
    if (negated) p.remove_prefix(1);
    bool hit = dolower ? match_wildcard(text, to_lower(p)) : match_wildcard(text, p);
    if (hit) {
      if (negated) return -1;
      got_positive = 1;
    }
  }
  return got_positive;
}

struct Addr {
  int af = 0;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> bytes{};
  size_t bits() const { return af == AF_INET ? 32 : 128; }
};

std::optional<Addr> parse_addr(std::string_view s) {
  // inet_pton stops at a NUL; "1.2.3.4\0junk" must not pass for 1.2.3.4.
  if (s.empty() || s.size() >= 64 || s.find('\0') != std::string_view::npos) return std::nullopt;
  char buf[64];
  std::memcpy(buf, s.data(), s.size());
  buf[s.size()] = '\0';
  Addr a;
  if (inet_pton(AF_INET, buf, a.bytes.data()) == 1) {
    a.af = AF_INET;
    return a;
  }
  if (inet_pton(AF_INET6, buf, a.bytes.data()) == 1) {
    a.af = AF_INET6;
    return a;
  }
  return std::nullopt;
}

// sshd compares IPv4 clients on dual-stack sockets as IPv4 (ipv64_normalise_mapped).
Addr normalise_mapped(Addr a) {
  static constexpr uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (a.af == AF_INET6 && std::memcmp(a.bytes.data(), prefix, 12) == 0) {
    Addr v4;
    v4.af = AF_INET;
    std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
    return v4;
  }
  return a;
}

std::string addr_to_string(const Addr& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(a.af, a.bytes.data(), buf, sizeof buf);
  return buf;
}

bool netmatch(const Addr& host, const Addr& net, size_t masklen) {
  if (host.af != net.af) return false;
  size_t full = masklen / 8, rest = masklen % 8;
  if (std::memcmp(host.bytes.data(), net.bytes.data(), full) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = uint8_t(0xff << (8 - rest));
  return (host.bytes[full] & mask) == (net.bytes[full] & mask);
}

// "::ffff:10.0.0.0/104" names IPv4 space; clients are normalised to IPv4, so compare it as IPv4.
bool cidr_contains(const Addr& host, const Addr& net, size_t masklen) {
  Addr norm = normalise_mapped(net);
  if (norm.af != net.af) {
    if (masklen < 96) return false;
    return netmatch(host, norm, masklen - 96);
  }
  return netmatch(host, net, masklen);
}

// addr_pton_cidr(): 0 ok, -1 not an address block (or host bits set), -2 mask too long for the family.
int parse_cidr(std::string_view s, Addr& out, size_t& masklen) {
  if (s.size() >= 64) return -1;
  std::string_view addr_part = s;
  std::optional<size_t> mask;
  if (auto slash = s.find('/'); slash != std::string_view::npos) {
    addr_part = s.substr(0, slash);
    std::string_view m = s.substr(slash + 1);
    if (m.empty() || m.size() > 3) return -1;
    size_t v = 0;
    for (char c : m) {
      if (c < '0' || c > '9') return -1;
      v = v * 10 + size_t(c - '0');
    }
    if (v > 128) return -1;
    mask = v;
  }
  auto a = parse_addr(addr_part);
  if (!a) return -1;
  masklen = mask.value_or(a->bits());
  if (masklen > a->bits()) return -2;
  // Host bits beyond the mask must be zero, or "10.0.0.1/8" would silently mean 10/8.
  for (size_t bit = masklen; bit < a->bits(); ++bit)
    if (a->bytes[bit / 8] & (0x80 >> (bit % 8))) return -1;
  out = *a;
  return 0;
}

// addr_match_list(): 1 match, 0 none, -1 negated match, -2 malformed list.
int addr_match_list(std::string_view ip, const std::vector<std::string>& entries) {
  auto parsed = parse_addr(ip);
  if (!parsed) return 0;
  Addr try_addr = normalise_mapped(*parsed);
  std::string ip_text = addr_to_string(try_addr);
  int ret = 0;
  for (const auto& raw : entries) {
    std::string_view cp = raw;
    bool neg = !cp.empty() && cp.front() == '!';
    if (neg) cp.remove_prefix(1);
    if (cp.empty()) return -2;
    Addr net;
    size_t masklen = 0;
    int r = parse_cidr(cp, net, masklen);
    bool hit = false;
    if (r == -2) return -2;
    if (r == 0)
      hit = cidr_contains(try_addr, net, masklen);
    else
      hit = match_wildcard(ip_text, cp);
    if (hit) {
      if (neg) return -1;
      ret = 1;
    }
  }
  return ret;
}

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's days_from_civil).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = unsigned(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + int64_t(doe) - 719468;
}

std::optional<int64_t> parse_expiry_time(std::string_view s) {
  if (!s.empty() && (s.back() == 'Z' || s.back() == 'z')) s.remove_suffix(1);
  if (s.size() != 8 && s.size() != 12 && s.size() != 14) return std::nullopt;
  for (char c : s)
    if (c < '0' || c > '9') return std::nullopt;
  auto num = [&](size_t pos, size_t len) {
    unsigned v = 0;
    for (size_t i = pos; i < pos + len; ++i) v = v * 10 + unsigned(s[i] - '0');
    return v;
  };
  unsigned year = num(0, 4), month = num(4, 2), day = num(6, 2);
  unsigned hour = s.size() >= 12 ? num(8, 2) : 0, minute = s.size() >= 12 ? num(10, 2) : 0;
  unsigned second = s.size() == 14 ? num(12, 2) : 0;
  static constexpr unsigned mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (year < 1970 || month < 1 || month > 12 || hour > 23 || minute > 59 || second > 59) return std::nullopt;
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  unsigned dim = mdays[month - 1] + (month == 2 && leap ? 1 : 0);
  if (day < 1 || day > dim) return std::nullopt;
  return days_from_civil(year, month, day) * 86400 + int64_t(hour) * 3600 + int64_t(minute) * 60 + second;
}

// permitopen values are "host:port" or "[v6addr]:port"; port 1-65535 or "*" (sshd permitopen_port).
bool valid_permit_open(std::string_view v) {
  std::string_view host, port;
  if (!v.empty() && v.front() == '[') {
    auto close = v.find(']');
    if (close == std::string_view::npos || close + 1 >= v.size() || v[close + 1] != ':') return false;
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
  } else {
    auto colon = v.find(':');
    if (colon == std::string_view::npos) return false;
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
  }
  if (host.empty() || host.size() >= 1025) return false;
  if (port == "*") return true;
  if (port.empty() || port.size() > 5) return false;
  unsigned p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + unsigned(c - '0');
  }
  return p >= 1 && p <= 65535;
}

struct ParsedOption {
  std::string name;
  std::optional<std::string> value;
};

// Reads "name[="value"]" options up to the first unquoted blank. Returns the error text on failure.
std::optional<std::string> read_options(std::string_view& s, std::vector<ParsedOption>& out) {
  size_t i = 0;
  for (;;) {
    size_t start = i;
    while (i < s.size() && s[i] != '=' && s[i] != ',' && !is_blank(s[i])) ++i;
    ParsedOption opt{std::string(s.substr(start, i - start)), std::nullopt};
    if (opt.name.empty()) return "empty option";
    if (i < s.size() && s[i] == '=') {
      ++i;
      if (i >= s.size() || s[i] != '"') return "option " + opt.name + " value must be quoted";
      ++i;
      std::string value;
      bool closed = false;
      while (i < s.size()) {
        if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '"') {
          value.push_back('"');
          i += 2;
        } else if (s[i] == '"') {
          closed = true;
          ++i;
          break;
        } else {
          value.push_back(s[i++]);
        }
      }
      if (!closed) return "missing end quote in option " + opt.name;
      opt.value = std::move(value);
    }
    out.push_back(std::move(opt));
    if (i >= s.size()) return "no key after options";
    if (s[i] == ',') {
      ++i;
      continue;
    }
    if (is_blank(s[i])) break;
    return "bad character after option " + out.back().name;
  }
  s.remove_prefix(i);
  return std::nullopt;
}

bool first_token_is_key_type(std::string_view s) {
  size_t n = 0;
  while (n < s.size() && !is_blank(s[n])) ++n;
  return is_known_key_type(s.substr(0, n));
}

// Applies one option; returns an error text when the line must be skipped.
std::optional<std::string> apply_option(AuthorizedKey& ak, const ParsedOption& opt) {
  const std::string& n = opt.name;
  auto need_value = [&]() -> std::optional<std::string> {
    if (!opt.value) return "option " + n + " needs a value";
    return std::nullopt;
  };
  auto no_value = [&]() -> std::optional<std::string> {
    if (opt.value) return "option " + n + " takes no value";
    return std::nullopt;
  };
  if (iequals(n, "cert-authority")) {
    if (auto e = no_value()) return e;
    ak.cert_authority = true;
  } else if (iequals(n, "no-port-forwarding")) {
    if (auto e = no_value()) return e;
    ak.port_forwarding = false;
  } else if (iequals(n, "port-forwarding")) {
    if (auto e = no_value()) return e;
    ak.port_forwarding = true;
  } else if (iequals(n, "restrict")) {
    if (auto e = no_value()) return e;
    ak.port_forwarding = false;
  } else if (iequals(n, "from")) {
    if (auto e = need_value()) return e;
    if (opt.value->empty()) return "empty from= pattern list";
    for (auto& p : split_commas(*opt.value)) ak.from.push_back(std::move(p));
  } else if (iequals(n, "permitopen") || iequals(n, "permit-open")) {
    if (auto e = need_value()) return e;
    if (!valid_permit_open(*opt.value)) return "invalid permitopen \"" + *opt.value + "\"";
    ak.permit_open.push_back(*opt.value);
  } else if (iequals(n, "principals")) {
    if (auto e = need_value()) return e;
    if (opt.value->empty()) return "empty principals= list";
    for (auto& p : split_commas(*opt.value)) ak.principals.push_back(std::move(p));
  } else if (iequals(n, "expiry-time")) {
    if (auto e = need_value()) return e;
    auto t = parse_expiry_time(*opt.value);
    if (!t) return "invalid expiry-time \"" + *opt.value + "\"";
    // Several expiry-time options: the earliest wins, as in sshd.
    if (!ak.expiry_time || *t < *ak.expiry_time) ak.expiry_time = t;
  } else {
    static constexpr std::array<std::string_view, 10> ignored_flags = {
        "no-pty",   "pty",        "no-agent-forwarding", "agent-forwarding",  "no-x11-forwarding",
        "x11-forwarding", "no-user-rc", "user-rc",       "no-touch-required", "verify-required"};
    for (auto f : ignored_flags)
      if (iequals(n, f)) return no_value();
    if (iequals(n, "command") || iequals(n, "environment")) return need_value();
    return "unsupported option " + n;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> split_commas(std::string_view s) {
  std::vector<std::string> out;
  for (;;) {
    auto comma = s.find(',');
    out.emplace_back(s.substr(0, comma));
    if (comma == std::string_view::npos) break;
    s.remove_prefix(comma + 1);
  }
  return out;
}

bool match_wildcard(std::string_view text, std::string_view pattern) {
  // Iterative glob with single-star backtracking: O(len(text) * len(pattern)) worst case, unlike
  // OpenSSH's recursive version, which a hostile pattern can drive exponential.
  size_t t = 0, p = 0, star_p = std::string_view::npos, star_t = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++t;
      ++p;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star_p = p++;
      star_t = t;
    } else if (star_p != std::string_view::npos) {
      p = star_p + 1;
      t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool match_from_patterns(const std::vector<std::string>& patterns, std::string_view ip, std::string_view hostname) {
  int mip = addr_match_list(ip, patterns);
  if (mip == -2 || mip == -1) return false;
  std::string host = to_lower(hostname.empty() ? ip : hostname);
  int mhost = match_pattern_list(host, patterns, true);
  if (mhost == -1) return false;
  return mhost == 1 || mip == 1;
}

bool match_cidr_list(std::string_view list, std::string_view ip) {
  auto parsed = parse_addr(ip);
  if (!parsed) return false;
  Addr try_addr = normalise_mapped(*parsed);
  bool found = false;
  for (const auto& entry : split_commas(list)) {
    if (entry.empty() || entry.size() > 46 + 3) return false;
    if (entry.find_first_not_of("0123456789abcdefABCDEF.:/") != std::string::npos) return false;
    Addr net;
    size_t masklen = 0;
    if (parse_cidr(entry, net, masklen) != 0) return false;
    if (cidr_contains(try_addr, net, masklen)) found = true;
  }
  return found;
}

AuthorizedKeys parse_authorized_keys(std::string_view text) {
  AuthorizedKeys result;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    auto warn = [&](const std::string& why) { result.warnings.push_back("line " + std::to_string(line_no) + ": " + why); };

    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && is_blank(line.front())) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    if (line.size() > kMaxLineBytes) {
      warn("line too long");
      continue;
    }

    AuthorizedKey ak;
    std::string_view key_part = line;
    if (!first_token_is_key_type(line)) {
      std::vector<ParsedOption> opts;
      if (auto err = read_options(key_part, opts)) {
        warn(*err);
        continue;
      }
      std::optional<std::string> err;
      for (const auto& o : opts)
        if ((err = apply_option(ak, o))) break;
      if (err) {
        warn(*err);
        continue;
      }
    }
    auto key = parse_public_key_line(key_part);
    if (!key) {
      warn("bad public key");
      continue;
    }
    if (ak.cert_authority && is_certificate_type(key->type)) {
      warn("cert-authority key must be a plain key, not a certificate");
      continue;
    }
    ak.key = std::move(*key);
    result.keys.push_back(std::move(ak));
  }
  return result;
}

}  // namespace alk::ssh
