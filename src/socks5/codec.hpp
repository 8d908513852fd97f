// SOCKS5 (RFC 1928), username/password sub-negotiation (RFC 1929) and SOCKS4/4a wire codec.
//
// Sans-I/O: every parser takes the bytes received so far and says what to do next.
//   Incomplete -> the bytes are a valid prefix; read more and call again with the whole buffer.
//   Ok         -> `value` is filled in and exactly `consumed` bytes belong to this message; any
//                 bytes after them (pipelined data) are left for the next step.
//   Invalid    -> the peer is broken or hostile; send the reply for `rep` (where the protocol has
//                 one) and close. No input can make a parser read out of bounds or allocate more
//                 than the protocol's own field limits (at most 255 bytes per variable field).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace alk::socks5 {

enum class Rep : uint8_t {
  Succeeded = 0x00,
  GeneralFailure = 0x01,
  NotAllowed = 0x02,
  NetworkUnreachable = 0x03,
  HostUnreachable = 0x04,
  ConnectionRefused = 0x05,
  TtlExpired = 0x06,
  CommandNotSupported = 0x07,
  AddressTypeNotSupported = 0x08,
};
enum class Cmd : uint8_t { Connect = 1, Bind = 2, UdpAssociate = 3 };
enum class AddrType : uint8_t { IPv4 = 1, Domain = 3, IPv6 = 4 };

constexpr uint8_t kVersion5 = 0x05;
constexpr uint8_t kVersion4 = 0x04;
constexpr uint8_t kUserPassVersion = 0x01;
constexpr uint8_t kMethodNoAuth = 0x00, kMethodUserPass = 0x02, kMethodNoAcceptable = 0xFF;
constexpr uint8_t kSocks4Connect = 1, kSocks4Bind = 2;

enum class Status { Incomplete, Ok, Invalid };

template <class T>
struct Parsed {
  Status status;
  T value{};
  size_t consumed = 0;
  Rep rep = Rep::GeneralFailure;  // reply to send when Invalid
};

// host: dotted IPv4, RFC 5952 IPv6 text (no brackets), or the domain name exactly as sent
// (1..255 bytes, never containing NUL).
struct Address {
  AddrType type = AddrType::IPv4;
  std::string host;
  uint16_t port = 0;
  bool operator==(const Address &) const = default;
};

// version is 5, or 4 when the first byte announced a SOCKS4 request: then nothing is consumed
// (consumed == 0) and the caller hands the same buffer to parse_socks4_request.
struct Greeting {
  uint8_t version = 0;
  std::vector<uint8_t> methods;
};
struct Request {
  Cmd cmd = Cmd::Connect;
  Address dst;
};
struct UserPass {
  std::string user, pass;
};
struct UdpDatagram {
  uint8_t frag = 0;  // RFC 1928 §7: we do not reassemble, so callers drop frag != 0
  Address dst;
  size_t header_len = 0;  // payload = input.subspan(header_len)
};
struct Socks4Request {
  uint8_t cmd = 0;  // kSocks4Connect or kSocks4Bind
  Address dst;      // IPv4, or Domain for SOCKS4a
  std::string userid;
};

Parsed<Greeting> parse_greeting(std::span<const uint8_t> in);
// Picks kMethodNoAuth / kMethodUserPass / kMethodNoAcceptable. When require_userpass is set only
// username/password is acceptable; otherwise only NO AUTH is (a client that offers nothing but
// username/password while we have no credentials configured gets kMethodNoAcceptable).
uint8_t choose_method(const Greeting &greeting, bool require_userpass);
std::array<uint8_t, 2> encode_method_choice(uint8_t method);

// RFC 1929 sub-negotiation (version 0x01). Empty user or password fields are accepted (some
// clients send an empty password); the credential check decides.
Parsed<UserPass> parse_userpass(std::span<const uint8_t> in);
std::array<uint8_t, 2> encode_userpass_status(bool ok);

// Version 5 request. Unknown CMD -> Invalid/CommandNotSupported, unknown ATYP ->
// Invalid/AddressTypeNotSupported, empty domain or domain containing NUL -> Invalid/GeneralFailure.
// BIND and UDP ASSOCIATE parse as Ok: refusing them is policy, left to the caller.
Parsed<Request> parse_request(std::span<const uint8_t> in);
// bound == nullptr -> ATYP IPv4 0.0.0.0:0. A bound address whose host cannot be encoded for its
// type (bad IP text, empty or over-long domain) is sent as 0.0.0.0 with its port.
std::vector<uint8_t> encode_reply(Rep rep, const Address *bound = nullptr);

// RFC 1928 §7 UDP request header; RSV must be 0. A datagram arrives whole, so callers treat
// anything but Ok (including Incomplete, i.e. a truncated header) as "drop it".
Parsed<UdpDatagram> parse_udp_datagram(std::span<const uint8_t> in);
// RSV=0, FRAG=0, then the address (same fallback as encode_reply for unencodable hosts).
std::vector<uint8_t> encode_udp_header(const Address &dst);

// Appends ATYP, address and port. Returns false (appending nothing) when host is not valid for
// type: IPv4/IPv6 text that inet_pton rejects, or a domain that is empty, > 255 bytes or has NUL.
bool append_address(std::vector<uint8_t> &out, const Address &addr);

// SOCKS4 (VN=4): CD, DSTPORT, DSTIP, USERID NUL; SOCKS4a when DSTIP is 0.0.0.x (x != 0), followed
// by DOMAIN NUL. USERID and DOMAIN are each at most 255 bytes; longer -> Invalid. CD other than
// CONNECT/BIND -> Invalid/CommandNotSupported.
Parsed<Socks4Request> parse_socks4_request(std::span<const uint8_t> in);
// VN=0, CD=90 (granted) or 91 (rejected), DSTPORT and DSTIP zero.
std::array<uint8_t, 8> encode_socks4_reply(bool granted);

// Compares without an early exit so the time taken does not reveal how many leading bytes of a
// guessed credential were right. Lengths still matter to the result but not to the position of
// the first difference.
bool constant_time_equal(std::string_view a, std::string_view b);

// Address text helpers used by the parsers; exposed because they are pure and handy elsewhere.
std::string format_ipv4(std::span<const uint8_t, 4> bytes);
// RFC 5952: lowercase, no leading zeros, longest run (>= 2) of zero groups as "::" (first on a
// tie), IPv4-mapped addresses as ::ffff:a.b.c.d.
std::string format_ipv6(std::span<const uint8_t, 16> bytes);

}  // namespace alk::socks5
