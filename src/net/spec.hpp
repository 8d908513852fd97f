// Textual address specs as users type them on the command line: HOST[:PORT], -L/-R forward
// specs, upstream proxy URLs, PermitOpen patterns and SOCKS5 USER:PASS.
//
// Pure: no I/O, no DNS, no locale. Every parser is bounded by its input and returns nullopt with
// a short user-facing reason in *err (when err is non-null) on any malformed input. The reason
// says what is wrong and quotes the offending piece, e.g. `invalid port "70000"`; callers add
// where it came from (the CLI appends ` in "--forward 70000:h:1"`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace alk::net {

struct HostPort {
  std::string host;  // no brackets; an IPv4 literal, an IPv6 literal or a DNS name
  uint16_t port = 0;
  bool operator==(const HostPort&) const = default;
};

// Accepts "HOST", "HOST:PORT", "[V6]", "[V6]:PORT" and a bare IPv6 literal "::1" (which can
// never carry a port: write "[::1]:22"). default_port is used when the port is absent; without
// one a missing port is an error. Ports are 1..65535, or 0 too when allow_zero.
std::optional<HostPort> parse_host_port(std::string_view s, std::optional<uint16_t> default_port,
                                        std::string* err, bool allow_zero = false);

// A DNS name (letters, digits, '-', '_', '.'; 1..253 chars; labels 1..63, not starting or
// ending with '-'; the last label not all digits, so "1.2.3" and "2852039166" are refused
// rather than silently read as IPv4 by inet_aton) or an IPv4 / IPv6 literal (no brackets).
bool is_valid_hostname(std::string_view s);

// True for a strict dotted-quad IPv4 literal or an IPv6 literal (no brackets, no zone).
bool is_ip_literal(std::string_view s);

struct ForwardSpec {
  std::string bind_host;
  uint16_t bind_port = 0;
  std::string target_host;
  uint16_t target_port = 0;
  bool operator==(const ForwardSpec&) const = default;
};

// -L "[BIND:]LPORT:HOST:RPORT". IPv6 goes in brackets: "[::1]:8080:[2001:db8::1]:80".
// BIND defaults to "127.0.0.1"; "*" or an empty BIND means every interface ("0.0.0.0"),
// as with OpenSSH's GatewayPorts-style wildcard.
std::optional<ForwardSpec> parse_forward(std::string_view s, std::string* err);

// -R "[BIND:]RPORT:HOST:LPORT". bind_* is the listen side on the server, target_* the local
// destination. BIND defaults to "localhost" like OpenSSH; "*" or empty becomes "" which the
// tcpip-forward request (RFC 4254 7.1) reads as "all addresses". RPORT 0 asks the server to
// pick a port.
std::optional<ForwardSpec> parse_remote_forward(std::string_view s, std::string* err);

struct ProxyUrl {
  enum Kind { Socks5, Http } kind = Socks5;
  HostPort addr;
  std::string user, pass;  // percent-decoded; empty when no userinfo was given
  bool operator==(const ProxyUrl&) const = default;
};

// "socks5://H:P", "socks5h://H:P" (both: names are resolved by the proxy), "http://H:P", each
// with optional percent-encoded "USER[:PASS]@". The port is required; a trailing "/" is allowed,
// any other path, query or fragment is not.
std::optional<ProxyUrl> parse_proxy_url(std::string_view s, std::string* err);

struct PermitOpen {
  std::string host_pattern;  // lower-case; "*", a name glob like "*.internal", or an IP literal
  std::string port_pattern;  // "*" or a canonical decimal port
  bool operator==(const PermitOpen&) const = default;
};

// OpenSSH PermitOpen syntax: "HOST:PORT", "[V6]:PORT", "*" for host and/or port, and the
// keyword "any" (= "*:*").
std::optional<PermitOpen> parse_permit_open(std::string_view s, std::string* err);

// Host comparison is case-insensitive, ignores one trailing dot and compares IP literals by
// value (so "2001:DB8:0::1" matches "2001:db8::1"); '*' in the host pattern matches any run of
// characters. host may be given in brackets.
bool permit_open_matches(const PermitOpen& p, std::string_view host, uint16_t port);

// 169.254.0.0/16, fe80::/10, and 169.254/16 embedded in IPv6 (IPv4-mapped ::ffff:a.b.c.d,
// IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::a.b.c.d). Brackets and an IPv6 zone are ignored.
// IPv4 is read the way inet_aton reads it ("0xa9fea9fe" counts), because that is how a
// resolver would read it. Apply this to the resolved address, not just the name a client sent.
bool is_link_local(std::string_view ip_literal);

struct UserPass {
  std::string user, pass;
  bool operator==(const UserPass&) const = default;
};

// "USER:PASS" split at the first ':', each 1..255 bytes (RFC 1929 field limits).
std::optional<UserPass> parse_user_pass(std::string_view s, std::string* err);

// `"text"` with control bytes escaped and long text cut, for safe echoing in error messages.
std::string quote_for_error(std::string_view s);

}  // namespace alk::net
