// OpenSSH known_hosts: how the client decides whether a server's host key is the one it saw
// before. Pure functions over the file text; the caller reads and appends the file.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "ssh/keys.hpp"

namespace alk::ssh {

// "host" for port 22 (and 0, "unspecified"), "[host]:port" otherwise, host lower-cased:
// the name OpenSSH stores and matches, so files stay interchangeable with ssh(1).
std::string known_hosts_host_token(std::string_view host, uint16_t port);

enum class HostKeyStatus { Known, Unknown, Changed, Revoked };

// Each line: "[@marker ]hostpatterns keytype base64[ comment]". Host patterns are a comma list with
// '*' / '?' wildcards and '!' negation (a negated match excludes the line), matched
// case-insensitively against known_hosts_host_token(host, port); or a hashed entry
// "|1|base64(salt)|base64(HMAC-SHA1(salt, token))". Blank lines, '#' comments, unparseable lines,
// "@cert-authority" lines and unknown markers are skipped.
// Verdict over all lines whose host matches:
//   Revoked - an "@revoked" line lists this exact key (wins over everything);
//   Known   - a plain line lists this exact key (blob equality);
//   Changed - no line lists this key but some line lists a DIFFERENT key for this host, of ANY
//             type. Stricter than ssh(1), which only calls it "changed" for the same key type;
//             a server that starts presenting another key type is refused loudly too, because
//             alknet has no interactive prompt to ask about it;
//   Unknown - no line matches the host (trust on first use may add one).
HostKeyStatus check_known_host(std::string_view file_text, std::string_view host, uint16_t port, const PublicKey& key);

// "token type base64\n" (no comment), ready to append.
std::string known_hosts_line(std::string_view host, uint16_t port, const PublicKey& key);

// "|1|base64(salt)|base64(HMAC-SHA1(salt, token))", as `ssh-keygen -H` writes host fields.
std::string hash_known_hosts_token(std::string_view token, std::span<const uint8_t> salt);

}  // namespace alk::ssh
