// OpenSSH certificates (PROTOCOL.certkeys) and the sshd policy for user certificates signed by a
// trusted CA. Parsing accepts every *-cert-v01@openssh.com key type; only Ed25519 CA signatures
// can be verified (that is all alknet issues and trusts), anything else fails verification with
// a reason instead of being waved through.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ssh/keys.hpp"

namespace alk::ssh {

struct Certificate {
  std::string type;  // e.g. "ssh-ed25519-cert-v01@openssh.com"
  std::vector<uint8_t> nonce;
  // The certified key's fields exactly as encoded after the nonce (for Ed25519: string(pk32)),
  // i.e. the plain key blob minus its type string. plain_public_key_blob() rebuilds the blob.
  std::vector<uint8_t> public_key;
  uint64_t serial = 0;
  uint32_t cert_type = 0;  // 1 user, 2 host
  std::string key_id;
  std::vector<std::string> principals;
  uint64_t valid_after = 0, valid_before = 0;
  // (name, value). A value that is one SSH string (e.g. source-address) is stored unwrapped;
  // flags have an empty value; anything else keeps its raw bytes.
  std::vector<std::pair<std::string, std::string>> critical_options, extensions;
  std::vector<uint8_t> signature_key;  // the CA's public key blob
  std::vector<uint8_t> signature;      // the whole signature blob: string(alg) string(sig)
  size_t signed_len = 0;               // bytes of the certificate covered by the signature

  bool operator==(const Certificate&) const = default;
};

inline constexpr uint32_t kUserCert = 1;
inline constexpr uint32_t kHostCert = 2;

// Strict: every field present, no trailing bytes, well-formed option lists. err gets the reason.
std::optional<Certificate> parse_certificate(std::span<const uint8_t> blob, std::string* err);

// Plain key type for a certificate type ("ssh-ed25519-cert-v01@openssh.com" -> "ssh-ed25519").
std::string plain_key_type(std::string_view cert_type);
// Blob of the certified key as a plain public key: what ssh-keygen fingerprints for a certificate.
std::vector<uint8_t> plain_public_key_blob(const Certificate& cert);

// Ed25519 CA only: ED25519_verify over blob[0, signed_len). why (optional) explains a failure.
bool verify_certificate_signature(std::span<const uint8_t> blob, const Certificate& cert, std::string* why);
bool verify_certificate_signature(std::span<const uint8_t> blob, const Certificate& cert);

enum class CertVerdict {
  Ok,
  BadSignature,
  UntrustedCa,
  NotUserCert,
  Expired,
  NotYetValid,
  WrongPrincipal,
  SourceAddressMismatch,
  UnknownCriticalOption
};

struct CertPolicyInput {
  std::span<const uint8_t> blob;  // the certificate blob cert was parsed from
  const std::vector<PublicKey>* trusted_cas;
  std::string_view user;       // principal that must be listed (alknet: "alknet")
  std::string_view remote_ip;  // for source-address
  uint64_t now_unix;
};

// The checks sshd applies to a user certificate, in this order (the first failure is returned):
// cert must be exactly what in.blob parses to (a struct edited after parsing, or parsed from
// another blob, would let unsigned fields through) -> BadSignature; CA trusted (signature_key equals a trusted CA blob, constant-time) -> UntrustedCa; CA signature
// -> BadSignature; certificate type -> NotUserCert; valid_after <= now < valid_before ->
// NotYetValid / Expired; principals include user (an empty list matches nobody) -> WrongPrincipal;
// critical options: only "source-address" and "force-command" are understood (force-command does
// not restrict tunnels, as in sshd); anything else, e.g. verify-required, -> UnknownCriticalOption;
// source-address must match remote_ip (a malformed or repeated option never matches)
// -> SourceAddressMismatch.
CertVerdict check_user_certificate(const CertPolicyInput& in, const Certificate& cert);

// Extension "permit-port-forwarding" present (ssh-keygen adds it unless -O no-port-forwarding).
bool cert_permits_port_forwarding(const Certificate& cert);

std::string_view to_string(CertVerdict v);

}  // namespace alk::ssh
