#include <catch2/catch.hpp>

#include <cstring>
#include <initializer_list>

#include "socks5/codec.hpp"

using namespace alk::socks5;

namespace {

using Bytes = std::vector<uint8_t>;

Bytes bytes(std::initializer_list<int> l) {
  Bytes out;
  for (int v : l) out.push_back(static_cast<uint8_t>(v));
  return out;
}

Bytes cat(Bytes a, const Bytes &b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes str(std::string_view s) { return Bytes(s.begin(), s.end()); }

std::span<const uint8_t> sp(const Bytes &b) { return {b.data(), b.size()}; }

// Every strict prefix of a complete message must ask for more bytes, never guess or reject.
template <class F>
void require_prefixes_incomplete(const Bytes &msg, F parse) {
  for (size_t n = 0; n < msg.size(); ++n) {
    INFO("prefix length " << n << " of " << msg.size());
    auto r = parse(std::span<const uint8_t>(msg.data(), n));
    REQUIRE(r.status == Status::Incomplete);
  }
}

Bytes ipv6_request(std::initializer_list<int> addr16, uint16_t port) {
  Bytes b = bytes({5, 1, 0, 4});
  for (int v : addr16) b.push_back(static_cast<uint8_t>(v));
  b.push_back(static_cast<uint8_t>(port >> 8));
  b.push_back(static_cast<uint8_t>(port & 0xff));
  return b;
}

std::string ipv6_text(std::initializer_list<int> addr16) {
  auto r = parse_request(sp(ipv6_request(addr16, 1)));
  REQUIRE(r.status == Status::Ok);
  REQUIRE(r.value.dst.type == AddrType::IPv6);
  return r.value.dst.host;
}

}  // namespace

// ---------------------------------------------------------------- greeting

TEST_CASE("greeting: valid SOCKS5 greeting lists the offered methods") {
  Bytes msg = bytes({5, 2, 0x00, 0x02});
  auto r = parse_greeting(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == 4);
  CHECK(r.value.version == 5);
  CHECK(r.value.methods == bytes({0x00, 0x02}));
}

TEST_CASE("greeting: every prefix is Incomplete") {
  require_prefixes_incomplete(bytes({5, 3, 0x00, 0x01, 0x02}), parse_greeting);
}

TEST_CASE("greeting: pipelined request bytes are not consumed") {
  Bytes msg = cat(bytes({5, 1, 0}), bytes({5, 1, 0, 1, 127, 0, 0, 1, 0, 80}));
  auto r = parse_greeting(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == 3);
  auto req = parse_request(sp(msg).subspan(r.consumed));
  REQUIRE(req.status == Status::Ok);
  CHECK(req.consumed == 10);
}

TEST_CASE("greeting: malformed input is Invalid") {
  SECTION("NMETHODS = 0") { CHECK(parse_greeting(sp(bytes({5, 0}))).status == Status::Invalid); }
  SECTION("NMETHODS = 0 with trailing bytes") {
    CHECK(parse_greeting(sp(bytes({5, 0, 0, 0}))).status == Status::Invalid);
  }
  SECTION("version 6") { CHECK(parse_greeting(sp(bytes({6, 1, 0}))).status == Status::Invalid); }
  SECTION("HTTP request") { CHECK(parse_greeting(sp(str("GET / HTTP/1.1\r\n"))).status == Status::Invalid); }
  SECTION("TLS ClientHello") { CHECK(parse_greeting(sp(bytes({0x16, 3, 1}))).status == Status::Invalid); }
  SECTION("zero byte") { CHECK(parse_greeting(sp(bytes({0}))).status == Status::Invalid); }
}

TEST_CASE("greeting: 255 methods is the largest greeting") {
  Bytes msg = bytes({5, 255});
  for (int i = 0; i < 255; ++i) msg.push_back(static_cast<uint8_t>(i));
  auto r = parse_greeting(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == 257);
  CHECK(r.value.methods.size() == 255);
  CHECK(parse_greeting(sp(msg).first(256)).status == Status::Incomplete);
}

TEST_CASE("greeting: first byte 4 is detected as SOCKS4 without consuming") {
  Bytes msg = bytes({4, 1, 0, 80, 10, 0, 0, 1, 0});
  for (size_t n = 1; n <= msg.size(); ++n) {
    auto r = parse_greeting(sp(msg).first(n));
    REQUIRE(r.status == Status::Ok);
    CHECK(r.value.version == 4);
    CHECK(r.consumed == 0);
  }
  CHECK(parse_greeting({}).status == Status::Incomplete);
}

// ---------------------------------------------------------------- method choice

TEST_CASE("choose_method picks what the server requires, or none") {
  Greeting both{5, {0x00, 0x02}};
  Greeting noauth{5, {0x00}};
  Greeting userpass_only{5, {0x02}};
  Greeting gssapi_only{5, {0x01}};
  CHECK(choose_method(both, false) == kMethodNoAuth);
  CHECK(choose_method(both, true) == kMethodUserPass);
  CHECK(choose_method(noauth, false) == kMethodNoAuth);
  CHECK(choose_method(noauth, true) == kMethodNoAcceptable);
  CHECK(choose_method(userpass_only, true) == kMethodUserPass);
  CHECK(choose_method(userpass_only, false) == kMethodNoAcceptable);
  CHECK(choose_method(gssapi_only, false) == kMethodNoAcceptable);
  CHECK(choose_method(Greeting{4, {}}, false) == kMethodNoAcceptable);
}

TEST_CASE("encode_method_choice") {
  CHECK(encode_method_choice(kMethodNoAuth) == std::array<uint8_t, 2>{5, 0x00});
  CHECK(encode_method_choice(kMethodUserPass) == std::array<uint8_t, 2>{5, 0x02});
  CHECK(encode_method_choice(kMethodNoAcceptable) == std::array<uint8_t, 2>{5, 0xFF});
}

// ---------------------------------------------------------------- RFC 1929

TEST_CASE("userpass: valid sub-negotiation") {
  Bytes msg = cat(cat(bytes({1, 5}), str("alice")), cat(bytes({6}), str("s3cr3t")));
  auto r = parse_userpass(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == msg.size());
  CHECK(r.value.user == "alice");
  CHECK(r.value.pass == "s3cr3t");
  require_prefixes_incomplete(msg, parse_userpass);

  SECTION("pipelined request follows") {
    Bytes more = cat(msg, bytes({5, 1, 0, 1, 1, 2, 3, 4, 0, 22}));
    auto r2 = parse_userpass(sp(more));
    REQUIRE(r2.status == Status::Ok);
    CHECK(r2.consumed == msg.size());
  }
}

TEST_CASE("userpass: empty fields and binary bytes are kept verbatim") {
  Bytes msg = bytes({1, 0, 3, 0, 0xff, 'x'});
  auto r = parse_userpass(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.user.empty());
  CHECK(r.value.pass == std::string("\0\xff" "x", 3));
}

TEST_CASE("userpass: 255-byte fields") {
  Bytes msg = cat(cat(bytes({1, 255}), Bytes(255, 'u')), cat(bytes({255}), Bytes(255, 'p')));
  auto r = parse_userpass(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.user.size() == 255);
  CHECK(r.value.pass.size() == 255);
  CHECK(r.consumed == 2 + 255 + 1 + 255);
}

TEST_CASE("userpass: wrong version is Invalid") {
  CHECK(parse_userpass(sp(bytes({5, 1, 'a', 1, 'b'}))).status == Status::Invalid);
  CHECK(parse_userpass(sp(bytes({0}))).status == Status::Invalid);
}

TEST_CASE("encode_userpass_status") {
  CHECK(encode_userpass_status(true) == std::array<uint8_t, 2>{1, 0});
  auto fail = encode_userpass_status(false);
  CHECK(fail[0] == 1);
  CHECK(fail[1] != 0);
}

TEST_CASE("constant_time_equal") {
  CHECK(constant_time_equal("", ""));
  CHECK(constant_time_equal("secret", "secret"));
  CHECK_FALSE(constant_time_equal("secret", "secreT"));
  CHECK_FALSE(constant_time_equal("secret", "secret2"));
  CHECK_FALSE(constant_time_equal("secret", ""));
  CHECK_FALSE(constant_time_equal("", "x"));
  // A prefix padded with NULs must not compare equal to the shorter string.
  CHECK_FALSE(constant_time_equal(std::string_view("ab\0", 3), "ab"));
  CHECK(constant_time_equal(std::string_view("a\0b", 3), std::string_view("a\0b", 3)));
}

// ---------------------------------------------------------------- requests

TEST_CASE("request: CONNECT IPv4") {
  Bytes msg = bytes({5, 1, 0, 1, 192, 168, 1, 20, 0x1f, 0x90});
  auto r = parse_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == 10);
  CHECK(r.value.cmd == Cmd::Connect);
  CHECK(r.value.dst == Address{AddrType::IPv4, "192.168.1.20", 8080});
  require_prefixes_incomplete(msg, parse_request);
}

TEST_CASE("request: CONNECT domain name, kept verbatim") {
  Bytes msg = cat(cat(bytes({5, 1, 0, 3, 11}), str("db.internal")), bytes({0x15, 0x38}));
  auto r = parse_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == msg.size());
  CHECK(r.value.dst == Address{AddrType::Domain, "db.internal", 5432});
  require_prefixes_incomplete(msg, parse_request);

  SECTION("odd bytes other than NUL are preserved") {
    std::string odd = "UPPER.\xff\x01 x";
    Bytes m = cat(cat(bytes({5, 1, 0, 3, static_cast<int>(odd.size())}), str(odd)), bytes({0, 1}));
    auto r2 = parse_request(sp(m));
    REQUIRE(r2.status == Status::Ok);
    CHECK(r2.value.dst.host == odd);
  }
  SECTION("a 255-byte name") {
    Bytes m = cat(cat(bytes({5, 1, 0, 3, 255}), Bytes(255, 'a')), bytes({0, 1}));
    auto r2 = parse_request(sp(m));
    REQUIRE(r2.status == Status::Ok);
    CHECK(r2.value.dst.host == std::string(255, 'a'));
    CHECK(r2.consumed == 5 + 255 + 2);
  }
}

TEST_CASE("request: CONNECT IPv6") {
  Bytes msg = ipv6_request({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 443);
  auto r = parse_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == 22);
  CHECK(r.value.dst == Address{AddrType::IPv6, "2001:db8::1", 443});
  require_prefixes_incomplete(msg, parse_request);
}

TEST_CASE("request: BIND and UDP ASSOCIATE parse; refusing them is policy") {
  auto bind = parse_request(sp(bytes({5, 2, 0, 1, 0, 0, 0, 0, 0, 0})));
  REQUIRE(bind.status == Status::Ok);
  CHECK(bind.value.cmd == Cmd::Bind);
  auto udp = parse_request(sp(bytes({5, 3, 0, 1, 0, 0, 0, 0, 0, 0})));
  REQUIRE(udp.status == Status::Ok);
  CHECK(udp.value.cmd == Cmd::UdpAssociate);
}

TEST_CASE("request: malformed input gets the right reply code") {
  SECTION("unknown command") {
    auto r = parse_request(sp(bytes({5, 9, 0, 1, 1, 2, 3, 4, 0, 80})));
    CHECK(r.status == Status::Invalid);
    CHECK(r.rep == Rep::CommandNotSupported);
    // Rejected as soon as the command byte is seen; the loop need not wait for the rest.
    CHECK(parse_request(sp(bytes({5, 0}))).rep == Rep::CommandNotSupported);
    CHECK(parse_request(sp(bytes({5, 0}))).status == Status::Invalid);
  }
  SECTION("unknown address type") {
    for (int atyp : {0, 2, 5, 0xff}) {
      auto r = parse_request(sp(bytes({5, 1, 0, atyp, 1, 2, 3, 4, 0, 80})));
      CHECK(r.status == Status::Invalid);
      CHECK(r.rep == Rep::AddressTypeNotSupported);
    }
  }
  SECTION("empty domain name") {
    auto r = parse_request(sp(bytes({5, 1, 0, 3, 0, 0, 80})));
    CHECK(r.status == Status::Invalid);
    CHECK(r.rep == Rep::GeneralFailure);
  }
  SECTION("domain name containing NUL") {
    auto r = parse_request(sp(cat(bytes({5, 1, 0, 3, 5, 'a', 'b', 0, 'c', 'd'}), bytes({0, 80}))));
    CHECK(r.status == Status::Invalid);
    CHECK(r.rep == Rep::GeneralFailure);
    // ... even before the whole name has arrived: no valid completion exists.
    auto early = parse_request(sp(bytes({5, 1, 0, 3, 5, 'a', 0})));
    CHECK(early.status == Status::Invalid);
  }
  SECTION("wrong version") {
    CHECK(parse_request(sp(bytes({4, 1, 0, 1, 1, 2, 3, 4, 0, 80}))).status == Status::Invalid);
    CHECK(parse_request(sp(bytes({0}))).status == Status::Invalid);
  }
}

TEST_CASE("request: pipelined payload after the request is not consumed") {
  Bytes req = cat(cat(bytes({5, 1, 0, 3, 7}), str("example")), bytes({0, 80}));
  Bytes msg = cat(req, str("GET / HTTP/1.1\r\nHost: example\r\n\r\n"));
  auto r = parse_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == req.size());
  CHECK(r.value.dst.host == "example");
}

// ---------------------------------------------------------------- IPv6 text

TEST_CASE("IPv6 addresses are formatted per RFC 5952") {
  CHECK(ipv6_text({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}) == "::1");
  CHECK(ipv6_text({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) == "::");
  CHECK(ipv6_text({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}) == "2001:db8::1");
  CHECK(ipv6_text({0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) == "fe80::");
  // A single zero group is not compressed (§4.2.2).
  CHECK(ipv6_text({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}) == "2001:db8:0:1:1:1:1:1");
  // Longest run wins; on a tie the first run is compressed (§4.2.3).
  CHECK(ipv6_text({0x20, 0x01, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}) == "2001:0:0:1::1");
  CHECK(ipv6_text({0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1}) == "2001:db8::1:0:0:1");
  // Lowercase, no leading zeros (§4.1, §4.3).
  CHECK(ipv6_text({0x20, 0x01, 0x0D, 0xB8, 0x00, 0xAB, 0x0C, 0xDE, 0, 1, 0, 2, 0, 3, 0xFF, 0xFF}) ==
        "2001:db8:ab:cde:1:2:3:ffff");
  // IPv4-mapped uses the dotted tail (§5).
  CHECK(ipv6_text({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1}) == "::ffff:192.0.2.1");
}

// ---------------------------------------------------------------- replies

TEST_CASE("encode_reply") {
  SECTION("no bound address -> 0.0.0.0:0") {
    CHECK(encode_reply(Rep::Succeeded) == bytes({5, 0, 0, 1, 0, 0, 0, 0, 0, 0}));
    CHECK(encode_reply(Rep::HostUnreachable) == bytes({5, 4, 0, 1, 0, 0, 0, 0, 0, 0}));
  }
  SECTION("IPv4 bound address") {
    Address a{AddrType::IPv4, "10.1.2.3", 1080};
    CHECK(encode_reply(Rep::Succeeded, &a) == bytes({5, 0, 0, 1, 10, 1, 2, 3, 0x04, 0x38}));
  }
  SECTION("IPv6 bound address") {
    Address a{AddrType::IPv6, "::1", 2};
    CHECK(encode_reply(Rep::Succeeded, &a) ==
          bytes({5, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2}));
  }
  SECTION("domain bound address") {
    Address a{AddrType::Domain, "h", 258};
    CHECK(encode_reply(Rep::Succeeded, &a) == bytes({5, 0, 0, 3, 1, 'h', 1, 2}));
  }
  SECTION("unencodable bound address falls back to 0.0.0.0 with its port") {
    Bytes fallback = bytes({5, 1, 0, 1, 0, 0, 0, 0, 0, 7});
    Address bad_v4{AddrType::IPv4, "300.1.1.1", 7};
    Address bad_v6{AddrType::IPv6, "not-an-ip", 7};
    Address empty{AddrType::Domain, "", 7};
    Address too_long{AddrType::Domain, std::string(256, 'a'), 7};
    Address nul{AddrType::Domain, std::string("a\0b", 3), 7};
    Address nul_v4{AddrType::IPv4, std::string("1.2.3.4\0junk", 12), 7};
    for (const Address *a : {&bad_v4, &bad_v6, &empty, &too_long, &nul, &nul_v4})
      CHECK(encode_reply(Rep::GeneralFailure, a) == fallback);
  }
  SECTION("a reply parses back as a request-shaped message") {
    // Replies share the request layout; reuse the parser to check the address encoding.
    Address a{AddrType::IPv6, "2001:db8::1", 65535};
    auto wire = encode_reply(Rep::Succeeded, &a);
    wire[1] = 1;  // REP slot -> CMD CONNECT so parse_request accepts it
    auto r = parse_request(sp(wire));
    REQUIRE(r.status == Status::Ok);
    CHECK(r.value.dst == a);
  }
}

// ---------------------------------------------------------------- UDP

TEST_CASE("udp: parse a datagram header and find the payload") {
  Bytes hdr = bytes({0, 0, 0, 1, 8, 8, 8, 8, 0, 53});
  Bytes dgram = cat(hdr, str("dns-query"));
  auto r = parse_udp_datagram(sp(dgram));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.frag == 0);
  CHECK(r.value.dst == Address{AddrType::IPv4, "8.8.8.8", 53});
  CHECK(r.value.header_len == hdr.size());
  CHECK(r.consumed == hdr.size());
  auto payload = sp(dgram).subspan(r.value.header_len);
  CHECK(std::string(payload.begin(), payload.end()) == "dns-query");
  require_prefixes_incomplete(hdr, parse_udp_datagram);
}

TEST_CASE("udp: FRAG is reported so the caller can drop fragments") {
  auto r = parse_udp_datagram(sp(bytes({0, 0, 3, 1, 1, 1, 1, 1, 0, 1})));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.frag == 3);
}

TEST_CASE("udp: malformed headers are Invalid") {
  CHECK(parse_udp_datagram(sp(bytes({1, 0, 0, 1, 1, 1, 1, 1, 0, 1}))).status == Status::Invalid);
  CHECK(parse_udp_datagram(sp(bytes({0, 1, 0, 1, 1, 1, 1, 1, 0, 1}))).status == Status::Invalid);
  CHECK(parse_udp_datagram(sp(bytes({0, 1}))).status == Status::Invalid);
  auto atyp = parse_udp_datagram(sp(bytes({0, 0, 0, 7, 1, 1, 1, 1, 0, 1})));
  CHECK(atyp.status == Status::Invalid);
  CHECK(atyp.rep == Rep::AddressTypeNotSupported);
  CHECK(parse_udp_datagram(sp(bytes({0, 0, 0, 3, 0, 0, 1}))).status == Status::Invalid);
  CHECK(parse_udp_datagram(sp(bytes({0, 0, 0, 3, 2, 'a', 0, 0, 1}))).status == Status::Invalid);
}

TEST_CASE("udp: encode_udp_header round-trips through parse_udp_datagram") {
  const Address cases[] = {
      {AddrType::IPv4, "127.0.0.1", 5353},
      {AddrType::IPv4, "0.0.0.0", 0},
      {AddrType::IPv4, "255.255.255.255", 65535},
      {AddrType::IPv6, "::1", 53},
      {AddrType::IPv6, "2001:db8::1", 443},
      {AddrType::IPv6, "fe80::1:2:3:4", 9},
      {AddrType::IPv6, "::ffff:10.0.0.1", 9},
      {AddrType::Domain, "alknet-udp", 1},
      {AddrType::Domain, std::string(255, 'z'), 2},
  };
  for (const auto &a : cases) {
    INFO(a.host);
    Bytes wire = encode_udp_header(a);
    Bytes dgram = cat(wire, str("payload"));
    auto r = parse_udp_datagram(sp(dgram));
    REQUIRE(r.status == Status::Ok);
    CHECK(r.value.dst == a);
    CHECK(r.value.frag == 0);
    CHECK(r.value.header_len == wire.size());
    CHECK(encode_udp_header(r.value.dst) == wire);
  }
}

TEST_CASE("udp: non-canonical IPv6 text is encoded to the same bytes") {
  Bytes a = encode_udp_header({AddrType::IPv6, "2001:0DB8:0000::0001", 1});
  Bytes b = encode_udp_header({AddrType::IPv6, "2001:db8::1", 1});
  CHECK(a == b);
  auto r = parse_udp_datagram(sp(a));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.dst.host == "2001:db8::1");
}

// ---------------------------------------------------------------- SOCKS4 / 4a

TEST_CASE("socks4: CONNECT with IPv4 and user id") {
  Bytes msg = cat(bytes({4, 1, 0x00, 0x50, 93, 184, 216, 34}), cat(str("bob"), bytes({0})));
  auto r = parse_socks4_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == msg.size());
  CHECK(r.value.cmd == kSocks4Connect);
  CHECK(r.value.dst == Address{AddrType::IPv4, "93.184.216.34", 80});
  CHECK(r.value.userid == "bob");
  require_prefixes_incomplete(msg, parse_socks4_request);

  SECTION("empty user id") {
    auto e = parse_socks4_request(sp(bytes({4, 1, 0, 22, 10, 0, 0, 1, 0})));
    REQUIRE(e.status == Status::Ok);
    CHECK(e.value.userid.empty());
    CHECK(e.consumed == 9);
  }
  SECTION("DSTIP 0.0.0.0 is plain IPv4, not 4a") {
    auto z = parse_socks4_request(sp(bytes({4, 1, 0, 22, 0, 0, 0, 0, 0})));
    REQUIRE(z.status == Status::Ok);
    CHECK(z.value.dst == Address{AddrType::IPv4, "0.0.0.0", 22});
  }
}

TEST_CASE("socks4a: domain name after the user id") {
  Bytes msg = cat(cat(bytes({4, 1, 0x01, 0xbb, 0, 0, 0, 1}), cat(str("u"), bytes({0}))),
                  cat(str("example.com"), bytes({0})));
  auto r = parse_socks4_request(sp(msg));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.consumed == msg.size());
  CHECK(r.value.dst == Address{AddrType::Domain, "example.com", 443});
  CHECK(r.value.userid == "u");
  require_prefixes_incomplete(msg, parse_socks4_request);

  SECTION("pipelined payload follows") {
    Bytes more = cat(msg, str("hello"));
    auto r2 = parse_socks4_request(sp(more));
    REQUIRE(r2.status == Status::Ok);
    CHECK(r2.consumed == msg.size());
  }
}

TEST_CASE("socks4: bounded fields and malformed input") {
  SECTION("255-byte user id is accepted, 256 is Invalid") {
    Bytes ok = cat(cat(bytes({4, 1, 0, 80, 1, 2, 3, 4}), Bytes(255, 'u')), bytes({0}));
    CHECK(parse_socks4_request(sp(ok)).status == Status::Ok);
    Bytes too_long = cat(bytes({4, 1, 0, 80, 1, 2, 3, 4}), Bytes(256, 'u'));
    CHECK(parse_socks4_request(sp(too_long)).status == Status::Invalid);
    // 255 bytes without NUL yet: still a valid prefix.
    CHECK(parse_socks4_request(sp(too_long).first(8 + 255)).status == Status::Incomplete);
  }
  SECTION("255-byte 4a domain is accepted, 256 is Invalid") {
    Bytes head = bytes({4, 1, 0, 80, 0, 0, 0, 9, 0});
    Bytes ok = cat(cat(head, Bytes(255, 'd')), bytes({0}));
    auto r = parse_socks4_request(sp(ok));
    REQUIRE(r.status == Status::Ok);
    CHECK(r.value.dst.host.size() == 255);
    CHECK(parse_socks4_request(sp(cat(head, Bytes(256, 'd')))).status == Status::Invalid);
  }
  SECTION("empty 4a domain") {
    CHECK(parse_socks4_request(sp(bytes({4, 1, 0, 80, 0, 0, 0, 1, 0, 0}))).status == Status::Invalid);
  }
  SECTION("unknown command") {
    auto r = parse_socks4_request(sp(bytes({4, 3, 0, 80, 1, 2, 3, 4, 0})));
    CHECK(r.status == Status::Invalid);
    CHECK(r.rep == Rep::CommandNotSupported);
  }
  SECTION("BIND parses; refusing it is policy") {
    auto r = parse_socks4_request(sp(bytes({4, 2, 0, 80, 1, 2, 3, 4, 0})));
    REQUIRE(r.status == Status::Ok);
    CHECK(r.value.cmd == kSocks4Bind);
  }
  SECTION("wrong version") {
    CHECK(parse_socks4_request(sp(bytes({5, 1, 0, 80, 1, 2, 3, 4, 0}))).status == Status::Invalid);
  }
}

TEST_CASE("socks4: greeting detection hands over to the SOCKS4 parser") {
  Bytes msg = cat(bytes({4, 1, 0, 80, 0, 0, 0, 1, 0}), cat(str("host.example"), bytes({0})));
  auto g = parse_greeting(sp(msg));
  REQUIRE(g.status == Status::Ok);
  REQUIRE(g.value.version == 4);
  auto r = parse_socks4_request(sp(msg).subspan(g.consumed));
  REQUIRE(r.status == Status::Ok);
  CHECK(r.value.dst.host == "host.example");
}

TEST_CASE("encode_socks4_reply") {
  CHECK(encode_socks4_reply(true) == std::array<uint8_t, 8>{0, 90, 0, 0, 0, 0, 0, 0});
  CHECK(encode_socks4_reply(false) == std::array<uint8_t, 8>{0, 91, 0, 0, 0, 0, 0, 0});
}

// ---------------------------------------------------------------- a whole conversation

TEST_CASE("a full client flight in one buffer parses step by step with exact consumption") {
  Bytes flight = cat(cat(bytes({5, 2, 0, 2}), cat(cat(bytes({1, 1}), str("u")), cat(bytes({1}), str("p")))),
                     cat(cat(bytes({5, 1, 0, 3, 4}), str("host")), cat(bytes({0, 80}), str("DATA"))));
  auto in = sp(flight);
  auto g = parse_greeting(in);
  REQUIRE(g.status == Status::Ok);
  CHECK(choose_method(g.value, true) == kMethodUserPass);
  in = in.subspan(g.consumed);
  auto up = parse_userpass(in);
  REQUIRE(up.status == Status::Ok);
  CHECK(constant_time_equal(up.value.user, "u"));
  CHECK(constant_time_equal(up.value.pass, "p"));
  in = in.subspan(up.consumed);
  auto req = parse_request(in);
  REQUIRE(req.status == Status::Ok);
  CHECK(req.value.dst == Address{AddrType::Domain, "host", 80});
  in = in.subspan(req.consumed);
  CHECK(std::string(in.begin(), in.end()) == "DATA");
}
