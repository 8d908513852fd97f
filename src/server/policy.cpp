#include "server/policy.hpp"

#include <cerrno>

namespace alk::server {

namespace {

std::optional<std::vector<net::PermitOpen>> parse_permits(const std::vector<std::string> &in, std::string *why) {
  std::vector<net::PermitOpen> out;
  for (const auto &s : in) {
    std::string err;
    auto p = net::parse_permit_open(s, &err);
    if (!p) {
      *why = "permitopen=\"" + s + "\": " + err;
      return std::nullopt;
    }
    out.push_back(*p);
  }
  return out;
}

bool expired(const ssh::AuthorizedKey &k, uint64_t now) { return k.expiry_time && int64_t(now) >= *k.expiry_time; }

}  // namespace

AuthPolicy AuthPolicy::from_text(std::string_view authorized_keys, const std::vector<ssh::PublicKey> &cas) {
  AuthPolicy p;
  auto parsed = ssh::parse_authorized_keys(authorized_keys);
  p.warnings_ = parsed.warnings;
  for (auto &k : parsed.keys) {
    std::string why;
    auto permits = parse_permits(k.permit_open, &why);
    if (!permits) {
      // An unenforceable restriction must fail closed: the key does not log in at all.
      p.warnings_.push_back("skipping " + ssh::fingerprint_sha256(k.key.blob) + ": " + why);
      continue;
    }
    Entry e{std::move(k), std::move(*permits)};
    (e.line.cert_authority ? p.ca_lines_ : p.keys_).push_back(std::move(e));
  }
  p.cas_ = cas;
  return p;
}

rt::Result<AuthPolicy> AuthPolicy::load(const std::string &authorized_keys_path,
                                        const std::vector<std::string> &cert_authority_paths) {
  std::string text;
  if (!authorized_keys_path.empty()) {
    std::string err;
    auto t = ssh::read_small_file(authorized_keys_path, 16 << 20, &err);
    if (!t) return rt::Error{ENOENT, err};
    text = std::move(*t);
  }
  std::vector<ssh::PublicKey> cas;
  for (const auto &path : cert_authority_paths) {
    std::string err;
    auto t = ssh::read_small_file(path, 1 << 20, &err);
    if (!t) return rt::Error{ENOENT, err};
    size_t before = cas.size();
    std::string_view rest = *t;
    while (!rest.empty()) {
      auto nl = rest.find('\n');
      auto line = rest.substr(0, nl);
      rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      auto first = line.find_first_not_of(" \t\r");
      if (first == std::string_view::npos || line[first] == '#') continue;
      auto k = ssh::parse_public_key_line(line);
      if (!k || ssh::is_certificate_type(k->type))
        return rt::Error{EINVAL, path + ": not a CA public key line (expected e.g. \"ssh-ed25519 AAAA...\")"};
      cas.push_back(std::move(*k));
    }
    if (cas.size() == before) return rt::Error{EINVAL, path + ": no public key found"};
  }
  auto p = from_text(text, cas);
  if (p.empty()) {
    // Say why each line was skipped: that is what the user has to fix.
    std::string why;
    for (const auto &w : p.warnings_) why += "\n  " + w;
    return rt::Error{EINVAL, authorized_keys_path.empty()
                                 ? "no --authorized-keys or --cert-authority given: nobody could log in"
                                 : authorized_keys_path + ": no usable key (and no --cert-authority): nobody could log in" + why};
  }
  return p;
}

AuthDecision AuthPolicy::check(std::string_view user, const ssh::PublicKey &key, std::string_view ip,
                               uint64_t now) const {
  if (ssh::is_certificate_type(key.type)) return check_cert(user, key, ip, now);
  return check_plain(key, ip, now);
}

AuthDecision AuthPolicy::check_plain(const ssh::PublicKey &key, std::string_view ip, uint64_t now) const {
  AuthDecision d;
  d.fingerprint = ssh::fingerprint_sha256(key.blob);
  d.reason = "key not authorized";
  // Walk every entry so the time taken does not depend on which line matched.
  const Entry *hit = nullptr;
  for (const auto &e : keys_) {
    bool eq = ssh::blobs_equal_ct(e.line.key.blob, key.blob);
    if (eq && !hit) hit = &e;
  }
  if (!hit) return d;
  if (expired(hit->line, now)) {
    d.reason = "key expired (expiry-time)";
    return d;
  }
  if (!hit->line.from.empty() && !ssh::match_from_patterns(hit->line.from, ip)) {
    d.reason = "from= does not match the client address";
    return d;
  }
  d.accept = true;
  d.reason.clear();
  d.grant.port_forwarding = hit->line.port_forwarding;
  d.grant.permit_open = hit->permit_open;
  return d;
}

AuthDecision AuthPolicy::check_cert(std::string_view user, const ssh::PublicKey &key, std::string_view ip,
                                    uint64_t now) const {
  AuthDecision d;
  std::string err;
  auto cert = ssh::parse_certificate(key.blob, &err);
  if (!cert) {
    d.fingerprint = ssh::fingerprint_sha256(key.blob);
    d.reason = "malformed certificate: " + err;
    return d;
  }
  d.fingerprint = ssh::fingerprint_sha256(ssh::plain_public_key_blob(*cert));
  ssh::CertVerdict best = ssh::CertVerdict::UntrustedCa;
  auto consider = [&](ssh::CertVerdict v) {
    if (best == ssh::CertVerdict::UntrustedCa) best = v;
  };
  // --cert-authority keys: no options beyond the certificate's own.
  if (!cas_.empty()) {
    ssh::CertPolicyInput in{key.blob, &cas_, user, ip, now};
    auto v = ssh::check_user_certificate(in, *cert);
    if (v == ssh::CertVerdict::Ok) {
      d.accept = true;
      d.grant.port_forwarding = ssh::cert_permits_port_forwarding(*cert);
      return d;
    }
    consider(v);
  }
  for (const auto &e : ca_lines_) {
    std::vector<ssh::PublicKey> one{e.line.key};
    // principals= on a cert-authority line replaces the user name as what the certificate
    // must list (sshd(8) AUTHORIZED_KEYS FILE FORMAT).
    std::vector<std::string_view> names;
    if (e.line.principals.empty())
      names.push_back(user);
    else
      for (const auto &p : e.line.principals) names.push_back(p);
    ssh::CertVerdict v = ssh::CertVerdict::WrongPrincipal;
    for (auto name : names) {
      ssh::CertPolicyInput in{key.blob, &one, name, ip, now};
      v = ssh::check_user_certificate(in, *cert);
      if (v != ssh::CertVerdict::WrongPrincipal) break;
    }
    if (v != ssh::CertVerdict::Ok) {
      consider(v);
      continue;
    }
    if (expired(e.line, now)) {
      d.reason = "cert-authority line expired (expiry-time)";
      return d;
    }
    if (!e.line.from.empty() && !ssh::match_from_patterns(e.line.from, ip)) {
      d.reason = "from= does not match the client address";
      return d;
    }
    d.accept = true;
    d.grant.port_forwarding = e.line.port_forwarding && ssh::cert_permits_port_forwarding(*cert);
    d.grant.permit_open = e.permit_open;
    return d;
  }
  d.reason = "certificate: " + std::string(ssh::to_string(best));
  return d;
}

DestVerdict check_destination(std::string_view host, uint16_t port, const Grant &grant,
                              const std::vector<net::PermitOpen> &server_permit_open) {
  if (host.starts_with("alknet-")) return DestVerdict::Reserved;
  if (!grant.port_forwarding) return DestVerdict::NotAllowed;
  if (host.empty() || port == 0) return DestVerdict::NotAllowed;
  if (net::is_link_local(host)) return DestVerdict::NotAllowed;
  auto within = [&](const std::vector<net::PermitOpen> &list) {
    if (list.empty()) return true;
    for (const auto &p : list)
      if (net::permit_open_matches(p, host, port)) return true;
    return false;
  };
  if (!within(server_permit_open) || !within(grant.permit_open)) return DestVerdict::NotAllowed;
  return DestVerdict::Allowed;
}

int dial_error_to_rep(int code) {
  switch (code) {
    case 0: return 0;
    case rt::kErrNotAllowed: return 2;
    case ENETUNREACH:
    case ENETDOWN: return 3;
    case EHOSTUNREACH:
    case EHOSTDOWN:
    case rt::kErrDnsNotFound:
    case rt::kErrDnsFailure: return 4;
    case ECONNREFUSED:
    case ECONNRESET: return 5;
    case ETIMEDOUT: return 6;
    default: return 1;
  }
}

std::string log_safe(std::string_view s) {
  if (s.empty()) return "-";
  std::string out;
  for (char c : s.substr(0, 64)) {
    bool ok = c > 0x20 && c < 0x7f && c != '=' && c != '"' && c != '\'' && c != '\\';
    out += ok ? c : '?';
  }
  return out;
}

}  // namespace alk::server
