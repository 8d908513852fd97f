#include "ssh/certificate.hpp"

#include <openssl/curve25519.h>

#include "ssh/authorized_keys.hpp"

namespace alk::ssh {
namespace {

constexpr std::string_view kCertSuffix = "-cert-v01@openssh.com";
// Well above anything ssh-keygen emits (a few hundred bytes; RSA-4096 CAs ~1.3 KiB) and a bound on work.
constexpr size_t kMaxCertBytes = 64 * 1024;

// How many wire fields the certified key has, per PROTOCOL.certkeys; 0 = unknown type.
int key_field_count(std::string_view plain) {
  if (plain == "ssh-ed25519") return 1;
  if (plain == "ssh-rsa") return 2;  // e, n
  if (plain == "ecdsa-sha2-nistp256" || plain == "ecdsa-sha2-nistp384" || plain == "ecdsa-sha2-nistp521")
    return 2;                        // curve, Q
  if (plain == "ssh-dss") return 4;  // p, q, g, y
  if (plain == "sk-ssh-ed25519@openssh.com") return 2;          // pk, application
  if (plain == "sk-ecdsa-sha2-nistp256@openssh.com") return 3;  // curve, Q, application
  return 0;
}

bool fail(std::string* err, const char* why) {
  if (err) *err = why;
  return false;
}

bool parse_string_list(std::span<const uint8_t> packed, std::vector<std::string>& out) {
  WireReader r(packed);
  while (r.remaining() > 0) {
    std::string s;
    if (!r.string(s)) return false;
    out.push_back(std::move(s));
  }
  return true;
}

bool parse_options(std::span<const uint8_t> packed, std::vector<std::pair<std::string, std::string>>& out) {
  WireReader r(packed);
  while (r.remaining() > 0) {
    std::string name;
    std::span<const uint8_t> data;
    if (!r.string(name) || !r.bytes(data)) return false;
    std::string value;
    WireReader inner(data);
    std::span<const uint8_t> v;
    if (!data.empty() && inner.bytes(v) && inner.remaining() == 0)
      value.assign(v.begin(), v.end());
    else
      value.assign(data.begin(), data.end());
    out.emplace_back(std::move(name), std::move(value));
  }
  return true;
}

}  // namespace

std::string plain_key_type(std::string_view cert_type) {
  if (!cert_type.ends_with(kCertSuffix)) return std::string(cert_type);
  std::string base(cert_type.substr(0, cert_type.size() - kCertSuffix.size()));
  // Security-key types keep their vendor suffix in the plain name.
  if (base.starts_with("sk-")) base += "@openssh.com";
  return base;
}

std::vector<uint8_t> plain_public_key_blob(const Certificate& cert) {
  std::vector<uint8_t> out;
  wire_put_string(out, plain_key_type(cert.type));
  out.insert(out.end(), cert.public_key.begin(), cert.public_key.end());
  return out;
}

std::optional<Certificate> parse_certificate(std::span<const uint8_t> blob, std::string* err) {
  auto bad = [err](const char* why) -> std::optional<Certificate> {
    if (err) *err = why;
    return std::nullopt;
  };
  if (blob.size() > kMaxCertBytes) return bad("certificate too large");
  Certificate c;
  WireReader r(blob);
  if (!r.string(c.type)) return bad("truncated certificate type");
  if (!c.type.ends_with(kCertSuffix)) return bad("not a certificate key type");
  int fields = key_field_count(plain_key_type(c.type));
  if (fields == 0) return bad("unsupported certificate key type");

  std::span<const uint8_t> nonce;
  if (!r.bytes(nonce)) return bad("truncated nonce");
  c.nonce.assign(nonce.begin(), nonce.end());

  size_t key_start = r.offset();
  for (int i = 0; i < fields; ++i) {
    std::span<const uint8_t> f;
    if (!r.bytes(f)) return bad("truncated public key");
    if (i == 0 && c.type.starts_with("ssh-ed25519") && f.size() != 32)
      return bad("bad Ed25519 public key length");
  }
  c.public_key.assign(blob.begin() + ptrdiff_t(key_start), blob.begin() + ptrdiff_t(r.offset()));

  std::span<const uint8_t> principals, critical, extensions, reserved, sigkey, signature;
  if (!r.u64(c.serial) || !r.u32(c.cert_type) || !r.string(c.key_id) || !r.bytes(principals) ||
      !r.u64(c.valid_after) || !r.u64(c.valid_before) || !r.bytes(critical) || !r.bytes(extensions) ||
      !r.bytes(reserved) || !r.bytes(sigkey))
    return bad("truncated certificate body");
  c.signed_len = r.offset();
  if (!r.bytes(signature)) return bad("truncated signature");
  if (r.remaining() != 0) return bad("trailing bytes after signature");

  if (c.cert_type != kUserCert && c.cert_type != kHostCert) return bad("unknown certificate type");
  if (!parse_string_list(principals, c.principals)) return bad("malformed principals");
  if (!parse_options(critical, c.critical_options)) return bad("malformed critical options");
  if (!parse_options(extensions, c.extensions)) return bad("malformed extensions");
  if (sigkey.empty() || !public_key_from_blob(sigkey)) return bad("malformed signature key");
  if (is_certificate_type(public_key_from_blob(sigkey)->type))
    return bad("signature key must not be a certificate");
  c.signature_key.assign(sigkey.begin(), sigkey.end());
  c.signature.assign(signature.begin(), signature.end());
  return c;
}

bool verify_certificate_signature(std::span<const uint8_t> blob, const Certificate& cert, std::string* why) {
  // The Certificate must describe this very blob; a mismatched pair must not read out of bounds.
  if (cert.signed_len == 0 || cert.signed_len > blob.size()) return fail(why, "certificate does not match blob");
  auto ca = ed25519_key_bytes(cert.signature_key);
  if (!ca) {
    WireReader kr(cert.signature_key);
    std::string type;
    kr.string(type);
    if (why) *why = "CA key type " + (type.empty() ? std::string("?") : type) + " not supported (only ssh-ed25519)";
    return false;
  }
  WireReader sr(cert.signature);
  std::string alg;
  std::span<const uint8_t> sig;
  if (!sr.string(alg) || !sr.bytes(sig) || sr.remaining() != 0) return fail(why, "malformed signature");
  if (alg != "ssh-ed25519") return fail(why, "signature algorithm does not match the Ed25519 CA key");
  if (sig.size() != ED25519_SIGNATURE_LEN) return fail(why, "bad Ed25519 signature length");
  if (ED25519_verify(blob.data(), cert.signed_len, sig.data(), ca->data()) != 1)
    return fail(why, "signature does not verify");
  return true;
}

bool verify_certificate_signature(std::span<const uint8_t> blob, const Certificate& cert) {
  return verify_certificate_signature(blob, cert, nullptr);
}

CertVerdict check_user_certificate(const CertPolicyInput& in, const Certificate& cert) {
  // Every field judged below must come from the signed bytes; re-parsing costs microseconds.
  auto from_blob = parse_certificate(in.blob, nullptr);
  if (!from_blob || !(*from_blob == cert)) return CertVerdict::BadSignature;
  bool trusted = false;
  if (in.trusted_cas) {
    // Visit every CA so timing does not reveal which one matched.
    for (const auto& ca : *in.trusted_cas)
      if (blobs_equal_ct(ca.blob, cert.signature_key)) trusted = true;
  }
  if (!trusted) return CertVerdict::UntrustedCa;
  if (!verify_certificate_signature(in.blob, cert)) return CertVerdict::BadSignature;
  if (cert.cert_type != kUserCert) return CertVerdict::NotUserCert;
  if (in.now_unix < cert.valid_after) return CertVerdict::NotYetValid;
  if (in.now_unix >= cert.valid_before) return CertVerdict::Expired;

  bool principal_ok = false;
  for (const auto& p : cert.principals)
    if (p == in.user) principal_ok = true;
  if (!principal_ok) return CertVerdict::WrongPrincipal;

  const std::string* source_address = nullptr;
  int source_address_count = 0;
  for (const auto& [name, value] : cert.critical_options) {
    if (name == "source-address") {
      source_address = &value;
      ++source_address_count;
    } else if (name != "force-command") {
      return CertVerdict::UnknownCriticalOption;
    }
  }
  if (source_address_count > 1) return CertVerdict::SourceAddressMismatch;
  if (source_address && !match_cidr_list(*source_address, in.remote_ip)) return CertVerdict::SourceAddressMismatch;
  return CertVerdict::Ok;
}

bool cert_permits_port_forwarding(const Certificate& cert) {
  for (const auto& [name, value] : cert.extensions)
    if (name == "permit-port-forwarding") return true;
  return false;
}

std::string_view to_string(CertVerdict v) {
  switch (v) {
    case CertVerdict::Ok: return "ok";
    case CertVerdict::BadSignature: return "bad CA signature";
    case CertVerdict::UntrustedCa: return "certificate signed by an untrusted CA";
    case CertVerdict::NotUserCert: return "not a user certificate";
    case CertVerdict::Expired: return "certificate expired";
    case CertVerdict::NotYetValid: return "certificate not yet valid";
    case CertVerdict::WrongPrincipal: return "principal not listed in certificate";
    case CertVerdict::SourceAddressMismatch: return "source address not permitted by certificate";
    case CertVerdict::UnknownCriticalOption: return "unsupported critical option in certificate";
  }
  return "unknown";
}

}  // namespace alk::ssh
