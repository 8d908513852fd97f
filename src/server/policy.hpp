// Who may log in and where they may go: the server's auth and destination policy, built from
// --authorized-keys / --cert-authority / --permit-open. Pure decisions (no I/O once loaded),
// so every refusal reason is unit-testable without a network.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "net/spec.hpp"
#include "runtime/result.hpp"
#include "ssh/authorized_keys.hpp"
#include "ssh/certificate.hpp"
#include "ssh/keys.hpp"

namespace alk::server {

// What an authenticated key may do.
struct Grant {
  bool port_forwarding = true;
  std::vector<net::PermitOpen> permit_open;  // from the key's permitopen=; empty = no extra limit
};

struct AuthDecision {
  bool accept = false;
  Grant grant;
  std::string fingerprint;  // SHA256 of the key (for a certificate: of the certified key)
  std::string reason;       // why refused (for --verbose; never logged by default)
};

class AuthPolicy {
 public:
  // Reads the files. Errors: unreadable file, a --cert-authority file without a usable key,
  // or nothing at all that could ever log in. Skipped authorized_keys lines go to warnings.
  static rt::Result<AuthPolicy> load(const std::string &authorized_keys_path,
                                     const std::vector<std::string> &cert_authority_paths);
  // From text (tests). ca_lines: one public key line per entry.
  static AuthPolicy from_text(std::string_view authorized_keys, const std::vector<ssh::PublicKey> &cas);

  AuthDecision check(std::string_view user, const ssh::PublicKey &key, std::string_view remote_ip,
                     uint64_t now_unix) const;
  bool empty() const { return keys_.empty() && ca_lines_.empty() && cas_.empty(); }
  const std::vector<std::string> &warnings() const { return warnings_; }

 private:
  struct Entry {
    ssh::AuthorizedKey line;
    std::vector<net::PermitOpen> permit_open;
  };
  AuthDecision check_plain(const ssh::PublicKey &key, std::string_view ip, uint64_t now) const;
  AuthDecision check_cert(std::string_view user, const ssh::PublicKey &key, std::string_view ip, uint64_t now) const;

  std::vector<Entry> keys_;      // plain authorized keys
  std::vector<Entry> ca_lines_;  // cert-authority lines
  std::vector<ssh::PublicKey> cas_;  // --cert-authority keys (no options)
  std::vector<std::string> warnings_;
};

enum class DestVerdict { Allowed, Reserved, NotAllowed };

// Destinations starting with "alknet-" are reserved; link-local literals, keys without port
// forwarding, and targets outside --permit-open (when given) or the key's permitopen= are not
// allowed.
DestVerdict check_destination(std::string_view host, uint16_t port, const Grant &grant,
                              const std::vector<net::PermitOpen> &server_permit_open);

// A dial error (errno-style or rt::kErr*) as the SOCKS5 REP code alknet's open-status carries:
// 2 not allowed, 3 network unreachable, 4 host unreachable (also unknown names), 5 refused,
// 6 timed out, 1 anything else.
int dial_error_to_rep(int code);

// A client-chosen string made safe for a one-line key=value log: printable ASCII without
// spaces, '=' or quotes, at most 64 bytes; "-" when empty.
std::string log_safe(std::string_view s);

}  // namespace alk::server
