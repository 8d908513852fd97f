// Feeds one input to the UDP relay framing as the channel reader sees it (a stream of frames)
// and as a SOCKS client datagram, and checks what the relays rely on: frames never claim more
// than the input, usable frames re-encode to the same body, and a datagram accepted as a frame
// parses back to itself.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "socks5/udp.hpp"
#include "fuzz_check.hpp"

using namespace alk::socks5;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::span<const uint8_t> in(data, size);

  // As a stream of frames, consumed one after another like the channel reader does.
  std::span<const uint8_t> rest = in;
  while (!rest.empty()) {
    auto f = parse_udp_frame(rest);
    if (f.status != Status::Ok) {
      if (f.status == Status::Incomplete) FUZZ_CHECK(rest.size() < 2 || rest.size() < 2 + (size_t(rest[0]) << 8 | rest[1]));
      break;
    }
    FUZZ_CHECK(f.consumed >= 3 && f.consumed <= rest.size());
    FUZZ_CHECK(f.value.body.size() == f.consumed - kUdpFrameLenSize);
    FUZZ_CHECK(f.value.body.data() == rest.data() + kUdpFrameLenSize);
    if (f.value.usable) {
      FUZZ_CHECK(f.value.payload.data() + f.value.payload.size() == f.value.body.data() + f.value.body.size());
      // Frames we build from the parsed address carry the same payload. The header may differ
      // only when the address text normalised differently (e.g. IPv6 spelling), never in size.
      std::vector<uint8_t> again;
      FUZZ_CHECK(append_udp_frame(again, f.value.dst, f.value.payload));
      FUZZ_CHECK(again.size() == f.consumed);
      FUZZ_CHECK(std::memcmp(again.data() + again.size() - f.value.payload.size(), f.value.payload.data(),
                             f.value.payload.size()) == 0);
      auto back = parse_udp_frame(again);
      FUZZ_CHECK(back.status == Status::Ok && back.value.usable && back.value.dst == f.value.dst);
    }
    rest = rest.subspan(f.consumed);
  }

  // Through the reader in small, input-chosen chunks: it must find the same frames as the
  // direct walk above and never hand out an empty room.
  {
    UdpFrameReader rd(1 + (size ? data[0] % 64 : 0));
    size_t fed = 0, frames = 0, direct = 0;
    for (std::span<const uint8_t> r = in;;) {
      auto f = parse_udp_frame(r);
      if (f.status != Status::Ok) break;
      ++direct;
      r = r.subspan(f.consumed);
    }
    for (;;) {
      auto f = rd.next();
      if (f.status == Status::Invalid) break;
      if (f.status == Status::Ok) {
        ++frames;
        continue;
      }
      if (fed == size) break;
      auto room = rd.room();
      FUZZ_CHECK(!room.empty());
      size_t n = std::min({room.size(), size - fed, size_t(1 + data[fed] % 97)});
      std::memcpy(room.data(), data + fed, n);
      rd.commit(n);
      fed += n;
    }
    FUZZ_CHECK(frames == direct);
  }

  // As a datagram from a SOCKS client.
  std::vector<uint8_t> frame{0xEE};
  bool ok = append_frame_for_datagram(frame, in);
  if (ok) {
    FUZZ_CHECK(frame.size() == 1 + kUdpFrameLenSize + size);
    auto f = parse_udp_frame(std::span<const uint8_t>(frame).subspan(1));
    FUZZ_CHECK(f.status == Status::Ok && f.value.usable && f.consumed == frame.size() - 1);
    FUZZ_CHECK(size == 0 || std::memcmp(f.value.body.data(), data, size) == 0);
  } else {
    FUZZ_CHECK(frame.size() == 1);
  }
  return 0;
}
