// The small HTTP/1.1 client side ACME needs, split so that everything that looks at bytes
// from the network is a pure, bounded function (unit-tested and fuzzed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace alk::acme {

struct Url {
  bool https = true;
  std::string host;  // name or IP literal, without brackets
  uint16_t port = 443;
  std::string target;  // path and query, at least "/"
};

// http:// and https:// URLs only; nullopt for anything else (userinfo, fragments, bad ports).
std::optional<Url> parse_url(std::string_view url);

// One request with Connection: close; body (if any) is sent as application/jose+json.
std::string build_request(std::string_view method, const Url &url, std::string_view body,
                          std::string_view accept = "application/json");

struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;
  // First value of a header (name lower-case), or empty.
  std::string header(std::string_view name) const;
};

enum class ParseState { NeedMore, Done, Bad };

struct ParseResult {
  ParseState state = ParseState::NeedMore;
  HttpResponse response;  // set when Done
  std::string error;      // set when Bad
};

inline constexpr size_t kMaxHeaderBytes = 64 * 1024;
inline constexpr size_t kMaxBodyBytes = 1024 * 1024;

// Parses a response from the bytes received so far. eof says the peer closed: a body without
// Content-Length or chunked framing ends there. Content-Length and chunked bodies are
// supported; headers beyond kMaxHeaderBytes and bodies beyond kMaxBodyBytes are Bad. A HEAD
// request's response has no body (head = true).
ParseResult parse_response(std::string_view bytes, bool eof, bool head = false);

// The server side of http-01 (RFC 8555 §8.3): the request head a validator sends.
struct Http01Request {
  ParseState state = ParseState::NeedMore;
  std::string token;  // set when Done
};
inline constexpr std::string_view kHttp01Prefix = "/.well-known/acme-challenge/";
inline constexpr size_t kMaxHttp01Head = 8192;
// Done once the head ("GET /.well-known/acme-challenge/TOKEN HTTP/1.x ... CRLF CRLF") is
// complete and TOKEN is base64url; Bad for any other request or a head over kMaxHttp01Head.
Http01Request parse_http01_request(std::string_view bytes);

}  // namespace alk::acme
