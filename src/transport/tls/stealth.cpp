#include "transport/tls/stealth.hpp"

#include <algorithm>
#include <cstring>

namespace alk::transport {

PeekVerdict classify_first_bytes(std::span<const std::byte> bytes) {
  size_t n = std::min(bytes.size(), kSshBannerPrefix.size());
  if (n > 0 && std::memcmp(bytes.data(), kSshBannerPrefix.data(), n) != 0) return PeekVerdict::NotSsh;
  return n == kSshBannerPrefix.size() ? PeekVerdict::Ssh : PeekVerdict::NeedMore;
}

}  // namespace alk::transport
