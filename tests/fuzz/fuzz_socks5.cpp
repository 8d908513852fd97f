// Feeds one input to every SOCKS5/SOCKS4 parser and checks the properties the accept loop relies
// on: consumed never exceeds the input, a message is Incomplete one byte short of its end and
// parses the same when cut exactly at its end, and addresses re-encode to the bytes they came from.
#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>

#include "socks5/codec.hpp"
#include "fuzz_check.hpp"

using namespace alk::socks5;

namespace {

// The properties every parser shares, whatever its message type.
template <class T, class F>
void check_common(std::span<const uint8_t> in, F parse, const Parsed<T> &r) {
  if (r.status != Status::Ok) return;
  FUZZ_CHECK(r.consumed <= in.size());
  if (r.consumed == 0) return;  // SOCKS4 detection in parse_greeting consumes nothing
  FUZZ_CHECK(parse(in.first(r.consumed - 1)).status == Status::Incomplete);
  auto exact = parse(in.first(r.consumed));
  FUZZ_CHECK(exact.status == Status::Ok);
  FUZZ_CHECK(exact.consumed == r.consumed);
}

void check_address_bytes(std::span<const uint8_t> wire_addr, const Address &a) {
  std::vector<uint8_t> re;
  FUZZ_CHECK(append_address(re, a));
  FUZZ_CHECK(re.size() == wire_addr.size());
  FUZZ_CHECK(std::memcmp(re.data(), wire_addr.data(), re.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::span<const uint8_t> in(data, size);

  auto g = parse_greeting(in);
  check_common(in, parse_greeting, g);
  if (g.status == Status::Ok) {
    FUZZ_CHECK(g.value.version == 4 || g.value.methods.size() + 2 == g.consumed);
    for (bool req : {false, true}) {
      uint8_t m = choose_method(g.value, req);
      FUZZ_CHECK(m == kMethodNoAuth || m == kMethodUserPass || m == kMethodNoAcceptable);
      (void)encode_method_choice(m);
    }
  }

  auto up = parse_userpass(in);
  check_common(in, parse_userpass, up);
  if (up.status == Status::Ok) {
    FUZZ_CHECK(up.value.user.size() <= 255 && up.value.pass.size() <= 255);
    FUZZ_CHECK(up.consumed == 3 + up.value.user.size() + up.value.pass.size());
    FUZZ_CHECK(constant_time_equal(up.value.user, up.value.user));
    FUZZ_CHECK(constant_time_equal(up.value.user, up.value.pass) == (up.value.user == up.value.pass));
  }

  auto rq = parse_request(in);
  check_common(in, parse_request, rq);
  if (rq.status == Status::Ok) {
    check_address_bytes(in.subspan(3, rq.consumed - 3), rq.value.dst);
    auto reply = encode_reply(Rep::Succeeded, &rq.value.dst);
    FUZZ_CHECK(reply.size() == rq.consumed);
    FUZZ_CHECK(std::memcmp(reply.data() + 3, in.data() + 3, reply.size() - 3) == 0);
  } else if (rq.status == Status::Invalid) {
    (void)encode_reply(rq.rep);
  }

  auto ud = parse_udp_datagram(in);
  check_common(in, parse_udp_datagram, ud);
  if (ud.status == Status::Ok) {
    FUZZ_CHECK(ud.value.header_len == ud.consumed);
    // The header we would send back for this destination is the received one with FRAG = 0.
    auto hdr = encode_udp_header(ud.value.dst);
    FUZZ_CHECK(hdr.size() == ud.value.header_len);
    FUZZ_CHECK(hdr[0] == 0 && hdr[1] == 0 && hdr[2] == 0);
    FUZZ_CHECK(std::memcmp(hdr.data() + 3, in.data() + 3, hdr.size() - 3) == 0);
    auto again = parse_udp_datagram(hdr);
    FUZZ_CHECK(again.status == Status::Ok);
    FUZZ_CHECK(again.value.dst == ud.value.dst);
    FUZZ_CHECK(again.value.header_len == hdr.size());
  }

  auto s4 = parse_socks4_request(in);
  check_common(in, parse_socks4_request, s4);
  if (s4.status == Status::Ok) {
    FUZZ_CHECK(s4.value.userid.size() <= 255);
    FUZZ_CHECK(s4.value.dst.host.size() <= 255 && !s4.value.dst.host.empty());
    FUZZ_CHECK(s4.value.userid.find('\0') == std::string::npos);
    FUZZ_CHECK(s4.value.dst.host.find('\0') == std::string::npos);
    std::vector<uint8_t> re;
    FUZZ_CHECK(append_address(re, s4.value.dst));
  }
  (void)encode_socks4_reply(s4.status == Status::Ok);

  // The IPv6 formatter must produce text that inet_pton reads back to the same 16 bytes.
  if (size >= 16) {
    std::string text = format_ipv6(in.first<16>());
    uint8_t back[16];
    FUZZ_CHECK(inet_pton(AF_INET6, text.c_str(), back) == 1);
    FUZZ_CHECK(std::memcmp(back, data, 16) == 0);
  }
  return 0;
}
