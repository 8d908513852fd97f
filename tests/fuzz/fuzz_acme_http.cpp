// The ACME client reads HTTP responses from the CA (or anyone in the path before TLS fails)
// and the http-01 responder reads requests from anyone on the internet. Besides not crashing:
// a response complete at a prefix stays complete, with the same status and body, when more
// bytes follow; results stay within their documented bounds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "acme/http.hpp"

using namespace alk::acme;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string_view all(reinterpret_cast<const char *>(data), size);
  bool head = size > 0 && (data[0] & 1);
  auto whole = parse_response(all, false, head);
  auto closed = parse_response(all, true, head);
  if (closed.state == ParseState::NeedMore) std::abort();  // EOF always decides
  if (whole.state == ParseState::Done) {
    if (whole.response.body.size() > kMaxBodyBytes) std::abort();
    if (whole.response.status < 100 || whole.response.status > 999) std::abort();
    if (closed.state != ParseState::Done || closed.response.body != whole.response.body) std::abort();
  }
  size_t cut = size > 1 ? data[size - 1] % size : 0;
  auto part = parse_response(all.substr(0, cut), false, head);
  if (part.state == ParseState::Done &&
      (whole.state != ParseState::Done || whole.response.status != part.response.status ||
       whole.response.body != part.response.body))
    std::abort();

  auto req = parse_http01_request(all);
  if (req.state == ParseState::Done) {
    if (req.token.empty() || req.token.size() > 256) std::abort();
    for (char c : req.token)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) std::abort();
  }

  auto url = parse_url(all);
  if (url) {
    if (url->host.empty() || url->port == 0 || url->target.empty() || url->target[0] != '/') std::abort();
    auto again = parse_url((url->https ? "https://" : "http://") +
                           (url->host.find(':') != std::string::npos ? "[" + url->host + "]" : url->host) + ":" +
                           std::to_string(url->port) + url->target);
    if (!again || again->host != url->host || again->port != url->port || again->target != url->target) std::abort();
    (void)build_request("POST", *url, all.substr(0, 64));
  }
  return 0;
}
