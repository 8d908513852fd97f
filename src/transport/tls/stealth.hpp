// The stealth decision, kept pure so it can be fuzzed: is the first plaintext a client sends
// after the TLS handshake the start of an SSH identification string?
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace alk::transport {

inline constexpr std::string_view kSshBannerPrefix = "SSH-2.0-";
// What a scanner gets instead of SSH: byte-for-byte what a bare nginx 404 starts with.
inline constexpr std::string_view kStealthNotFound = "HTTP/1.1 404 Not Found\r\nServer: nginx\r\n\r\n";

enum class PeekVerdict { NeedMore, Ssh, NotSsh };

// NeedMore while the bytes so far are a proper prefix of "SSH-2.0-"; Ssh once they start
// with it; NotSsh as soon as one byte differs. Never reads past the first 8 bytes.
PeekVerdict classify_first_bytes(std::span<const std::byte> bytes);

}  // namespace alk::transport
