// OpenSSH certificate blobs (what a client presents during publickey auth): the parser and the
// user-certificate policy must never crash or accept what they should not.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "ssh/certificate.hpp"
#include "ssh/keys.hpp"
#include "fuzz_check.hpp"

using namespace alk::ssh;

namespace {

void exercise(std::span<const uint8_t> blob) {
  std::string err;
  auto cert = parse_certificate(blob, &err);
  if (!cert) {
    FUZZ_CHECK(!err.empty());
    return;
  }
  FUZZ_CHECK(cert->signed_len > 0 && cert->signed_len < blob.size());
  FUZZ_CHECK(cert->cert_type == kUserCert || cert->cert_type == kHostCert);
  std::string why;
  bool sig_ok = verify_certificate_signature(blob, *cert, &why);
  FUZZ_CHECK(sig_ok == why.empty());
  (void)fingerprint_sha256(plain_public_key_blob(*cert));
  (void)cert_permits_port_forwarding(*cert);

  std::vector<PublicKey> cas{PublicKey{"", cert->signature_key, ""}};
  std::string_view user = cert->principals.empty() ? std::string_view("alknet") : std::string_view(cert->principals[0]);
  for (uint64_t now : {cert->valid_after, uint64_t{1795000000}}) {
    auto v = check_user_certificate(CertPolicyInput{blob, &cas, user, "127.0.0.1", now}, *cert);
    FUZZ_CHECK(!to_string(v).empty());
    // Nothing whose signature fails may ever pass.
    if (v == CertVerdict::Ok) FUZZ_CHECK(sig_ok && cert->cert_type == kUserCert);
  }
  std::vector<PublicKey> none;
  FUZZ_CHECK(check_user_certificate(CertPolicyInput{blob, &none, user, "::1", 0}, *cert) == CertVerdict::UntrustedCa);
  // A struct that no longer matches its blob is refused, never trusted.
  Certificate forged = *cert;
  forged.valid_before ^= 1;
  FUZZ_CHECK(check_user_certificate(CertPolicyInput{blob, &cas, user, "127.0.0.1", 0}, forged) ==
             CertVerdict::BadSignature);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> blob(data, size);
  exercise(blob);
  // The same bytes as a ".pub" line, the form certificates arrive in from files.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto key = parse_public_key_line(text)) exercise(key->blob);
  return 0;
}
