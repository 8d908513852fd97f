#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "socks5/udp.hpp"

using namespace alk::socks5;

namespace {
std::vector<uint8_t> bytes(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int b : v) out.push_back(uint8_t(b));
  return out;
}
std::span<const uint8_t> sp(const std::vector<uint8_t> &v) { return v; }
}  // namespace

TEST_CASE("udp frame: round trip of an IPv4 datagram") {
  std::vector<uint8_t> out;
  auto payload = bytes({'h', 'i'});
  REQUIRE(append_udp_frame(out, Address{AddrType::IPv4, "10.1.2.3", 53}, payload));
  CHECK(out == bytes({0, 12, 0, 0, 0, 1, 10, 1, 2, 3, 0, 53, 'h', 'i'}));
  auto f = parse_udp_frame(out);
  REQUIRE(f.status == Status::Ok);
  CHECK(f.consumed == out.size());
  CHECK(f.value.usable);
  CHECK(f.value.dst == Address{AddrType::IPv4, "10.1.2.3", 53});
  CHECK(std::vector<uint8_t>(f.value.payload.begin(), f.value.payload.end()) == payload);
  CHECK(f.value.body.size() == 12);
}

TEST_CASE("udp frame: domain and IPv6 destinations, empty payload") {
  std::vector<uint8_t> out;
  REQUIRE(append_udp_frame(out, Address{AddrType::Domain, "dns.example", 53}, {}));
  REQUIRE(append_udp_frame(out, Address{AddrType::IPv6, "2001:db8::1", 443}, bytes({7})));
  auto a = parse_udp_frame(out);
  REQUIRE(a.status == Status::Ok);
  CHECK(a.value.dst == Address{AddrType::Domain, "dns.example", 53});
  CHECK(a.value.payload.empty());
  auto b = parse_udp_frame(sp(out).subspan(a.consumed));
  REQUIRE(b.status == Status::Ok);
  CHECK(b.value.dst == Address{AddrType::IPv6, "2001:db8::1", 443});
  CHECK(b.value.payload.size() == 1);
  CHECK(a.consumed + b.consumed == out.size());
}

TEST_CASE("udp frame: every strict prefix is Incomplete") {
  std::vector<uint8_t> out;
  REQUIRE(append_udp_frame(out, Address{AddrType::IPv4, "1.2.3.4", 9}, bytes({1, 2, 3})));
  for (size_t n = 0; n < out.size(); ++n) CHECK(parse_udp_frame(sp(out).first(n)).status == Status::Incomplete);
}

TEST_CASE("udp frame: zero length is Invalid") {
  CHECK(parse_udp_frame(bytes({0, 0, 1, 2})).status == Status::Invalid);
}

TEST_CASE("udp frame: bad header or fragment is consumed but not usable") {
  // FRAG = 1
  auto frag = bytes({0, 10, 0, 0, 1, 1, 1, 1, 1, 1, 0, 53, 0xAA});
  auto f = parse_udp_frame(frag);
  REQUIRE(f.status == Status::Ok);
  CHECK_FALSE(f.value.usable);
  CHECK(f.consumed == 12);
  // RSV != 0
  auto rsv = bytes({0, 10, 1, 0, 0, 1, 1, 1, 1, 1, 0, 53});
  CHECK_FALSE(parse_udp_frame(rsv).value.usable);
  // Header longer than the frame (truncated inside the frame)
  auto trunc = bytes({0, 5, 0, 0, 0, 1, 1, 0, 0});
  auto t = parse_udp_frame(trunc);
  REQUIRE(t.status == Status::Ok);
  CHECK_FALSE(t.value.usable);
  CHECK(t.consumed == 7);
  // Unknown ATYP
  CHECK_FALSE(parse_udp_frame(bytes({0, 4, 0, 0, 0, 9})).value.usable);
}

TEST_CASE("udp frame: a SOCKS client datagram becomes a frame unchanged") {
  auto dgram = bytes({0, 0, 0, 3, 3, 'a', 'b', 'c', 0, 80, 'x', 'y'});
  std::vector<uint8_t> out{9};  // appends after what is there
  REQUIRE(append_frame_for_datagram(out, dgram));
  REQUIRE(out.size() == 1 + 2 + dgram.size());
  CHECK(out[1] == 0);
  CHECK(out[2] == dgram.size());
  CHECK(std::equal(dgram.begin(), dgram.end(), out.begin() + 3));
  auto f = parse_udp_frame(sp(out).subspan(1));
  REQUIRE(f.status == Status::Ok);
  CHECK(f.value.dst == Address{AddrType::Domain, "abc", 80});
}

TEST_CASE("udp frame: malformed, fragmented or oversized client datagrams are refused") {
  std::vector<uint8_t> out;
  CHECK_FALSE(append_frame_for_datagram(out, bytes({0, 0, 1, 1, 1, 1, 1, 1, 0, 53})));  // FRAG
  CHECK_FALSE(append_frame_for_datagram(out, bytes({0, 0, 0, 1, 1, 1})));              // truncated
  CHECK_FALSE(append_frame_for_datagram(out, bytes({0, 1, 0, 1, 1, 1, 1, 1, 0, 53})));  // RSV
  CHECK_FALSE(append_frame_for_datagram(out, {}));
  std::vector<uint8_t> big(kUdpMaxFrameBody + 1, 0);
  big[3] = 1;
  CHECK_FALSE(append_frame_for_datagram(out, big));
  CHECK(out.empty());
  big.resize(kUdpMaxFrameBody);
  CHECK(append_frame_for_datagram(out, big));
  CHECK(out.size() == kUdpMaxFrameBody + 2);
  CHECK(out[0] == 0xFF);
  CHECK(out[1] == 0xFF);
}

TEST_CASE("udp frame: oversized payload or unencodable address appends nothing") {
  std::vector<uint8_t> out{1, 2};
  std::vector<uint8_t> big(kUdpMaxFrameBody - 10 + 1);  // IPv4 header is 10 bytes
  CHECK_FALSE(append_udp_frame(out, Address{AddrType::IPv4, "1.2.3.4", 1}, big));
  CHECK_FALSE(append_udp_frame(out, Address{AddrType::IPv4, "not-an-ip", 1}, {}));
  CHECK_FALSE(append_udp_frame(out, Address{AddrType::Domain, "", 1}, {}));
  CHECK(out == bytes({1, 2}));
  big.pop_back();
  CHECK(append_udp_frame(out, Address{AddrType::IPv4, "1.2.3.4", 1}, big));
  CHECK(out.size() == 2 + 2 + kUdpMaxFrameBody);
}

TEST_CASE("udp frame reader: frames split across reads and several per read") {
  std::vector<uint8_t> stream;
  for (int i = 0; i < 50; ++i) {
    std::vector<uint8_t> payload(size_t(i * 37), uint8_t(i));
    REQUIRE(append_udp_frame(stream, Address{AddrType::IPv4, "10.0.0.1", uint16_t(1000 + i)}, payload));
  }
  UdpFrameReader rd(100);  // small chunks: many partial frames
  size_t fed = 0;
  int seen = 0;
  for (;;) {
    auto f = rd.next();
    REQUIRE(f.status != Status::Invalid);
    if (f.status == Status::Incomplete) {
      if (fed == stream.size()) break;
      auto room = rd.room();
      REQUIRE(!room.empty());
      size_t n = std::min({room.size(), stream.size() - fed, size_t(7 + seen)});
      std::copy_n(stream.begin() + ptrdiff_t(fed), n, room.begin());
      rd.commit(n);
      fed += n;
      continue;
    }
    REQUIRE(f.value.usable);
    CHECK(f.value.dst.port == 1000 + seen);
    CHECK(f.value.payload.size() == size_t(seen * 37));
    CHECK(std::all_of(f.value.payload.begin(), f.value.payload.end(), [&](uint8_t b) { return b == seen; }));
    ++seen;
  }
  CHECK(seen == 50);
}

TEST_CASE("udp frame reader: a maximal frame fits, and a broken stream is Invalid") {
  UdpFrameReader rd(1);
  std::vector<uint8_t> big;
  REQUIRE(append_udp_frame(big, Address{AddrType::IPv4, "1.1.1.1", 1}, std::vector<uint8_t>(kUdpMaxFrameBody - 10, 5)));
  big.push_back(0);
  big.push_back(0);  // then a zero length: Invalid
  size_t fed = 0;
  int frames = 0;
  Status last = Status::Incomplete;
  for (;;) {
    auto f = rd.next();
    last = f.status;
    if (f.status == Status::Invalid) break;
    if (f.status == Status::Ok) {
      ++frames;
      continue;
    }
    if (fed == big.size()) break;
    auto room = rd.room();
    REQUIRE(!room.empty());
    size_t n = std::min(room.size(), big.size() - fed);
    std::copy_n(big.begin() + ptrdiff_t(fed), n, room.begin());
    rd.commit(n);
    fed += n;
  }
  CHECK(frames == 1);
  CHECK(last == Status::Invalid);
}
