// The ACME client's cryptography, kept pure (no I/O) so it can be tested against known
// vectors: base64url, the ES256 account key and its JWK, JWS signing (RFC 7515/8555), the CSR,
// the tls-alpn-01 challenge certificate (RFC 8737) and the certificate facts renewal needs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/result.hpp"

struct evp_pkey_st;

namespace alk::acme {

std::string base64url(std::span<const uint8_t> bytes);
std::string base64url(std::string_view bytes);
// Strict: the URL-safe alphabet, no padding, no whitespace; nullopt on anything else.
std::optional<std::string> base64url_decode(std::string_view text);

namespace detail {
struct PkeyFree {
  void operator()(evp_pkey_st *k) const;
};
}  // namespace detail

// A P-256 key: the ACME account key, and the key of every certificate we request.
class EcKey {
 public:
  static rt::Result<EcKey> generate();
  // PKCS#8 or SEC1 PEM; anything but a P-256 key is refused.
  static rt::Result<EcKey> from_pem(std::string_view pem);
  std::string to_pem() const;  // PKCS#8
  // {"crv":"P-256","kty":"EC","x":...,"y":...}: members in lexicographic order, no spaces,
  // exactly the form RFC 7638 hashes for the thumbprint.
  std::string jwk_json() const;
  std::string thumbprint() const;  // base64url(SHA-256(jwk_json()))
  // ES256: the 64-byte r||s signature of SHA-256(data).
  std::optional<std::vector<uint8_t>> sign_es256(std::string_view data) const;
  evp_pkey_st *native() const { return key_.get(); }

 private:
  std::unique_ptr<evp_pkey_st, detail::PkeyFree> key_;
};

// A flattened JWS JSON serialization (RFC 8555 §6.2). With kid empty the protected header
// carries the account's JWK (newAccount); otherwise the account URL. An empty payload is a
// POST-as-GET.
std::optional<std::string> jws_sign(const EcKey &key, std::string_view kid, std::string_view nonce,
                                    std::string_view url, std::string_view payload);

// DER PKCS#10 request for the names (first = subject CN, all in subjectAltName), signed by key.
std::optional<std::vector<uint8_t>> make_csr(const EcKey &key, const std::vector<std::string> &names);

struct CertPem {
  std::string chain;  // leaf first
  std::string key;
};

// A self-signed certificate for name. With key_authorization set it is the tls-alpn-01
// answer: it carries the critical id-pe-acmeIdentifier extension holding
// SHA-256(key_authorization) (RFC 8737 §3). Without, a stand-in served until the first
// certificate arrives.
std::optional<CertPem> self_signed(std::string_view name, std::optional<std::string_view> key_authorization);

struct CertInfo {
  int64_t not_before = 0, not_after = 0;  // seconds since the epoch
  std::vector<std::string> dns_names;     // subjectAltName dNSName entries
  std::string serial_hex;
};

// Facts about the first certificate of a PEM chain; nullopt when it does not parse.
std::optional<CertInfo> cert_info(std::string_view chain_pem);
// The chain parses, its leaf is for every name and matches the key, and it is valid at now.
bool cert_usable(const CertPem &cert, const std::vector<std::string> &names, int64_t now);

// When to renew: at two thirds of the lifetime, moved earlier by up to a twentieth of the
// lifetime (capped at a day) from `random`, so many servers do not hit the CA at once.
int64_t renewal_time(int64_t not_before, int64_t not_after, uint64_t random);
// Wait before retry number attempt (0-based) after a failure: 10 s doubling to an hour, plus
// up to a quarter more from random; never past `latest` seconds when latest > 0 (a cert
// about to expire is worth more tries).
int64_t retry_delay(unsigned attempt, uint64_t random, int64_t latest = 0);

}  // namespace alk::acme
