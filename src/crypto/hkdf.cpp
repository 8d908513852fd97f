#include "crypto/hkdf.hpp"

#include <openssl/hkdf.h>

#include <cstring>

namespace alk::crypto {

bool tls13_expand_label(std::span<uint8_t> out, const EVP_MD *md, std::span<const uint8_t> secret,
                        std::string_view label, std::span<const uint8_t> context) {
  static constexpr std::string_view kPrefix = "tls13 ";
  // HkdfLabel: uint16 length, opaque label<7..255>, opaque context<0..255>.
  uint8_t info[2 + 1 + 255 + 1 + 255];
  const size_t label_len = kPrefix.size() + label.size();
  if (md == nullptr || out.size() > 0xffff || label_len > 255 || context.size() > 255) return false;
  size_t n = 0;
  info[n++] = static_cast<uint8_t>(out.size() >> 8);
  info[n++] = static_cast<uint8_t>(out.size());
  info[n++] = static_cast<uint8_t>(label_len);
  std::memcpy(info + n, kPrefix.data(), kPrefix.size());
  n += kPrefix.size();
  if (!label.empty()) std::memcpy(info + n, label.data(), label.size());
  n += label.size();
  info[n++] = static_cast<uint8_t>(context.size());
  if (!context.empty()) std::memcpy(info + n, context.data(), context.size());
  n += context.size();
  return HKDF_expand(out.data(), out.size(), md, secret.data(), secret.size(), info, n) == 1;
}

}  // namespace alk::crypto
