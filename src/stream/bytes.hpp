// A byte buffer for packet and stream data, shared by the layers that hand buffers to each
// other instead of copying them (an SSH session's sealed output to a QUIC stream).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

namespace alk::stream {

// A byte vector whose resize() leaves new bytes uninitialised: packet buffers are always
// overwritten right after they grow, and zero-filling them cost a memset per packet.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
using Bytes = std::vector<uint8_t, UninitAllocator<uint8_t>>;

}  // namespace alk::stream
