// TLS 1.3's HKDF-Expand-Label (RFC 8446 §7.1), used by QUIC's key schedule (RFC 9001 §5) and
// by the TLS record layer's own key derivation and KeyUpdate.
#pragma once

#include <openssl/base.h>

#include <cstdint>
#include <span>
#include <string_view>

namespace alk::crypto {

// HKDF-Expand-Label(secret, "tls13 " + label, context, out.size()) under md.
bool tls13_expand_label(std::span<uint8_t> out, const EVP_MD *md, std::span<const uint8_t> secret,
                        std::string_view label, std::span<const uint8_t> context = {});

}  // namespace alk::crypto
