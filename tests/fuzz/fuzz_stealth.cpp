// The stealth classifier sees the first plaintext of any TLS client on the internet.
// Besides not crashing, it must agree with a plain prefix check and be consistent as bytes
// arrive one at a time (a verdict, once reached, never changes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "transport/tls/stealth.hpp"

using alk::transport::classify_first_bytes;
using alk::transport::kSshBannerPrefix;
using alk::transport::PeekVerdict;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  auto all = std::as_bytes(std::span(data, size));
  PeekVerdict whole = classify_first_bytes(all);
  size_t n = size < kSshBannerPrefix.size() ? size : kSshBannerPrefix.size();
  bool prefix_ok = n == 0 || std::memcmp(data, kSshBannerPrefix.data(), n) == 0;
  PeekVerdict expect = !prefix_ok ? PeekVerdict::NotSsh
                       : n == kSshBannerPrefix.size() ? PeekVerdict::Ssh
                                                      : PeekVerdict::NeedMore;
  if (whole != expect) std::abort();
  PeekVerdict prev = PeekVerdict::NeedMore;
  for (size_t i = 0; i <= size && i <= 16; ++i) {
    PeekVerdict v = classify_first_bytes(all.first(i));
    if (prev != PeekVerdict::NeedMore && v != prev) std::abort();
    prev = v;
  }
  return 0;
}
