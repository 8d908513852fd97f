// Bytes the ACME client takes from disk (the cache) and from the CA: certificate chains and
// keys (PEM), and base64url. Besides not crashing: base64url decoding is the exact inverse of
// encoding, and a parsed certificate's facts are self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "acme/crypto.hpp"

using namespace alk::acme;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view all(reinterpret_cast<const char *>(data), size);
  if (auto dec = base64url_decode(all)) {
    if (base64url(*dec) != all) std::abort();
  }
  if (base64url_decode(base64url(all)) != std::optional<std::string>(std::string(all))) std::abort();
  if (auto info = cert_info(all)) {
    for (const auto &n : info->dns_names) (void)n.size();
  }
  (void)EcKey::from_pem(all);
  (void)cert_usable(CertPem{std::string(all), std::string(all)}, {"a.example"}, 1700000000);
  return 0;
}
