// OpenSSH authorized_keys (sshd(8) "AUTHORIZED_KEYS FILE FORMAT") and the address/host pattern
// matching sshd uses for from= and the certificate source-address option. Pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ssh/keys.hpp"

namespace alk::ssh {

struct AuthorizedKey {
  PublicKey key;
  bool cert_authority = false;
  bool port_forwarding = true;
  std::vector<std::string> from;         // from="a,b" split on commas, patterns as written
  std::vector<std::string> permit_open;  // "host:port" entries, port may be "*"
  std::vector<std::string> principals;   // principals="a,b" (meaningful with cert-authority)
  std::optional<int64_t> expiry_time;    // unix seconds
};

struct AuthorizedKeys {
  std::vector<AuthorizedKey> keys;
  std::vector<std::string> warnings;  // "line N: why" for every line that was skipped
};

// Lines: blank and '#' comments are ignored; otherwise "[options ]keytype base64[ comment]".
// Options are comma-separated, values in double quotes with \" for a literal quote.
// Understood: cert-authority, from=, permitopen= / permit-open= (repeatable), no-port-forwarding,
// port-forwarding, restrict (order matters as in sshd: restrict clears port forwarding,
// a later port-forwarding restores it), principals=, expiry-time="YYYYMMDD[HHMM[SS]]" (read as UTC,
// an optional trailing 'Z' accepted, so the result never depends on the server's time zone).
// Options that only grant or restrict things alknet never offers (pty, X11, agent, user-rc,
// command=, environment=, no-touch-required, verify-required) are accepted and ignored.
// Anything else - including permitlisten= and tunnel=, which restrict something alknet cannot
// honour - skips the whole line with a warning, so an unenforceable restriction fails closed.
AuthorizedKeys parse_authorized_keys(std::string_view file_text);

// sshd match_host_and_ip(): true only if some pattern matches (by CIDR or by '*'/'?' wildcard on
// the IP, or by wildcard on the lower-cased host name) and no '!'-negated pattern matches either.
// An empty hostname means "no reverse DNS" (sshd's UseDNS=no): the IP is matched as the host.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are matched as IPv4, as sshd normalises them.
bool match_from_patterns(const std::vector<std::string>& patterns, std::string_view ip, std::string_view hostname = {});

// sshd addr_match_cidr_list(): comma-separated addresses or CIDR blocks (v4/v6), no wildcards, no
// negation. Any malformed entry (or host bits set beyond the mask) makes the whole list fail.
bool match_cidr_list(std::string_view comma_list, std::string_view ip);

// OpenSSH match_pattern(): '*' any run, '?' one character, exact case.
bool match_wildcard(std::string_view text, std::string_view pattern);

// Split on commas (empty items kept as written - callers decide what an empty item means).
std::vector<std::string> split_commas(std::string_view s);

}  // namespace alk::ssh
