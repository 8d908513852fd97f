// The connection-protocol codec (RFC 4254 messages): every message type round-trips, every
// truncation is refused with a reason, and the type-specific data of tcpip opens, forward
// requests and exit-status is checked the way the session relies on.
#include <catch2/catch.hpp>
#include <deque>

#include "ssh/connection.hpp"
#include "ssh/kex.hpp"
#include "ssh/keys.hpp"
#include "ssh/packet.hpp"

using namespace alk::ssh;
using namespace alk::ssh::conn;

namespace {

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

// Decoded spans point into the encoded bytes: keep every encoding for the test's lifetime.
std::deque<std::vector<uint8_t>> wires;

template <class T>
T round_trip(const T &m) {
  const auto &wire = wires.emplace_back(encode(m));
  std::string err;
  auto back = decode(wire, &err);
  REQUIRE(back);
  REQUIRE(std::holds_alternative<T>(*back));
  CHECK(encode(*back) == wire);
  return std::get<T>(*back);
}

bool same(std::span<const uint8_t> a, std::span<const uint8_t> b) { return std::equal(a.begin(), a.end(), b.begin(), b.end()); }

}  // namespace

TEST_CASE("every connection message round-trips") {
  const auto blob = bytes("payload\0bytes");
  auto g = round_trip(GlobalRequest{"tcpip-forward", true, blob});
  CHECK(g.name == "tcpip-forward");
  CHECK(g.want_reply);
  CHECK(same(g.data, blob));
  auto gr = round_trip(GlobalReply{true, blob});
  CHECK(gr.success);
  CHECK(same(gr.data, blob));
  CHECK_FALSE(round_trip(GlobalReply{false, {}}).success);
  auto o = round_trip(Open{"direct-tcpip", 7, 2u << 20, 32768, blob});
  CHECK(o.type == "direct-tcpip");
  CHECK((o.sender == 7 && o.window == 2u << 20 && o.max_packet == 32768));
  CHECK(same(o.data, blob));
  auto c = round_trip(OpenConfirmation{1, 2, 3, 4});
  CHECK((c.recipient == 1 && c.sender == 2 && c.window == 3 && c.max_packet == 4));
  auto f = round_trip(OpenFailure{9, 2, "Connection refused"});
  CHECK((f.recipient == 9 && f.reason == 2 && f.description == "Connection refused"));
  auto w = round_trip(WindowAdjust{5, 0xffffffffu});
  CHECK((w.recipient == 5 && w.bytes == 0xffffffffu));
  auto d = round_trip(Data{3, blob});
  CHECK((d.recipient == 3 && same(d.data, blob)));
  auto x = round_trip(ExtendedData{3, 1, blob});
  CHECK((x.recipient == 3 && x.code == 1 && same(x.data, blob)));
  CHECK(round_trip(Eof{11}).recipient == 11);
  CHECK(round_trip(Close{12}).recipient == 12);
  const auto status = encode_exit_status(5);
  auto q = round_trip(Request{4, "exit-status", false, status});
  CHECK((q.recipient == 4 && q.name == "exit-status" && !q.want_reply));
  CHECK(decode_exit_status(q.data) == 5u);
  auto rr = round_trip(RequestReply{6, true});
  CHECK((rr.recipient == 6 && rr.success));
  CHECK_FALSE(round_trip(RequestReply{6, false}).success);
}

TEST_CASE("message numbers outside the connection protocol decode as Other") {
  for (uint8_t t : {uint8_t(1), uint8_t(20), uint8_t(50), uint8_t(79), uint8_t(83), uint8_t(89), uint8_t(101), uint8_t(255)}) {
    const std::vector<uint8_t> p{t, 1, 2, 3};
    auto m = decode(p);
    REQUIRE(m);
    REQUIRE(std::holds_alternative<Other>(*m));
    CHECK(std::get<Other>(*m).type == t);
    CHECK_FALSE(recipient(*m));
  }
  std::string err;
  CHECK_FALSE(decode({}, &err));
  CHECK(err == "bad empty message");
}

TEST_CASE("every truncation of a message with required fields is refused with a reason") {
  const auto blob = bytes("abc");
  const std::vector<Message> all{GlobalRequest{"x", true, {}}, Open{"session", 1, 2, 3, {}}, OpenConfirmation{1, 2, 3, 4},
                                 OpenFailure{1, 2, "d"},      WindowAdjust{1, 2},           Data{1, blob},
                                 ExtendedData{1, 1, blob},    Eof{1},                       Close{1},
                                 Request{1, "exit-status", false, {}}, RequestReply{1, true}};
  for (const auto &m : all) {
    const auto wire = encode(m);
    CHECK(decode(wire));
    // Cut before the last required byte: the required part of OpenFailure ends after the reason
    // (its description is optional in practice), and a request's data may be empty.
    size_t required = wire.size();
    if (std::holds_alternative<OpenFailure>(m)) required = 1 + 4 + 4;
    for (size_t n = 1; n < required; ++n) {
      std::string err;
      auto cut = decode(std::span<const uint8_t>(wire).first(n), &err);
      INFO("type " << int(wire[0]) << " cut at " << n);
      CHECK_FALSE(cut);
      CHECK(err.rfind("bad ", 0) == 0);
    }
  }
}

TEST_CASE("channel messages name their recipient; the others have none") {
  CHECK(recipient(Data{42, {}}) == 42u);
  CHECK(recipient(OpenConfirmation{43, 0, 0, 0}) == 43u);
  CHECK(recipient(RequestReply{44, false}) == 44u);
  CHECK_FALSE(recipient(GlobalRequest{}));
  CHECK_FALSE(recipient(GlobalReply{}));
  CHECK_FALSE(recipient(Open{}));
}

TEST_CASE("an open failure without description (some peers send none) is accepted") {
  std::vector<uint8_t> p{msg::kChannelOpenFailure, 0, 0, 0, 1, 0, 0, 0, 2};
  auto m = decode(p);
  REQUIRE(m);
  CHECK(std::get<OpenFailure>(*m).reason == 2);
  CHECK(std::get<OpenFailure>(*m).description.empty());
}

TEST_CASE("a data message longer than its packet is refused") {
  std::vector<uint8_t> p{msg::kChannelData, 0, 0, 0, 1, 0, 0, 0, 9, 'a', 'b'};
  std::string err;
  CHECK_FALSE(decode(p, &err));
  CHECK(err == "bad CHANNEL_DATA");
}

TEST_CASE("tcpip open data: ports and host lengths are checked") {
  auto e = decode_tcpip(encode_tcpip({"db.internal", 5432, "10.0.0.2", 40000}));
  REQUIRE(e);
  CHECK((e->host == "db.internal" && e->port == 5432 && e->orig_host == "10.0.0.2" && e->orig_port == 40000));
  CHECK(decode_tcpip(encode_tcpip({std::string(kMaxHost, 'h'), 1, "", 0})));
  CHECK_FALSE(decode_tcpip(encode_tcpip({std::string(kMaxHost + 1, 'h'), 1, "", 0})));
  CHECK_FALSE(decode_tcpip(encode_tcpip({"", 1, std::string(kMaxHost + 1, 'o'), 0})));
  // A port above 65535 cannot come from encode_tcpip: build it by hand.
  std::vector<uint8_t> big;
  wire_put_string(big, std::string_view("h"));
  wire_put_u32(big, 65536);
  wire_put_string(big, std::string_view("o"));
  wire_put_u32(big, 1);
  CHECK_FALSE(decode_tcpip(big));
  const auto good = encode_tcpip({"h", 80, "o", 1});
  for (size_t n = 0; n < good.size(); ++n) CHECK_FALSE(decode_tcpip(std::span<const uint8_t>(good).first(n)));
}

TEST_CASE("forward request data: a bind address is at most a DNS name long") {
  auto f = decode_forward(encode_forward({"localhost", 8080}));
  REQUIRE(f);
  CHECK((f->host == "localhost" && f->port == 8080));
  CHECK(decode_forward(encode_forward({std::string(kMaxForwardHost, 'a'), 0})));
  CHECK_FALSE(decode_forward(encode_forward({std::string(kMaxForwardHost + 1, 'a'), 0})));
  std::vector<uint8_t> big;
  wire_put_string(big, std::string_view(""));
  wire_put_u32(big, 70000);
  CHECK_FALSE(decode_forward(big));
  CHECK_FALSE(decode_forward({}));
  CHECK_FALSE(decode_exit_status(std::vector<uint8_t>{0, 0, 1}));
}

TEST_CASE("data packets grow after 4 MiB of bulk, and shrink at another channel's short packet or a new channel") {
  PacketSizer s;
  constexpr size_t shared = PacketSizer::kSharedPacket, bulk = PacketSizer::kBulkPacket;
  auto move = [&](uint32_t channel, uint64_t bytes) {
    for (uint64_t moved = 0; moved < bytes; moved += shared) s.data(channel, shared);
  };
  CHECK(s.limit() == shared);
  // Full packets (sent or received) up to one packet short of the threshold.
  move(1, PacketSizer::kBulkAfter - shared);
  CHECK(s.limit() == shared);
  s.data(1, 100);  // the bulk channel's own short packet: its source ran dry, nothing else
  CHECK(s.limit() == shared);
  s.data(1, shared);
  CHECK(s.limit() == bulk);
  s.data(1, 1);
  CHECK(s.limit() == bulk);
  s.data(1, bulk);
  CHECK(s.limit() == bulk);
  s.data(2, shared - 1);  // a short packet on another channel: something interactive
  CHECK(s.limit() == shared);
  move(2, PacketSizer::kBulkAfter);  // several bulk channels: full packets on each keep it
  move(3, shared);
  CHECK(s.limit() == bulk);
  s.opened();  // a new channel takes it back at once
  CHECK(s.limit() == shared);
  move(3, PacketSizer::kBulkAfter);
  CHECK(s.limit() == bulk);
  // A bulk packet still fits our own packet limit with its header, padding and tag.
  CHECK(bulk + 9 <= kMaxPayload - 64);
}
