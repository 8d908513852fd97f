// authorized_keys text and the sshd pattern matchers it feeds: never crash, never hang, and keep
// the properties the server's auth policy relies on.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "ssh/authorized_keys.hpp"
#include "ssh/keys.hpp"
#include "fuzz_check.hpp"

using namespace alk::ssh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);

  auto r = parse_authorized_keys(text);
  for (const auto& w : r.warnings) FUZZ_CHECK(w.starts_with("line "));
  for (const auto& k : r.keys) {
    FUZZ_CHECK(is_known_key_type(k.key.type));
    // Every accepted key re-reads identically from the line we would write for it.
    auto again = parse_public_key_line(public_key_line(k.key));
    FUZZ_CHECK(again && again->blob == k.key.blob && again->type == k.key.type);
    FUZZ_CHECK(fingerprint_sha256(k.key.blob).starts_with("SHA256:"));
    (void)match_from_patterns(k.from, "10.1.2.3", "host.example.com");
    (void)match_from_patterns(k.from, "::ffff:192.168.1.1");
    (void)match_from_patterns(k.from, "2001:db8::1", "x");
    // A pattern list never lets in what one of its own negations excludes.
    if (!k.from.empty() && k.from[0].size() > 1 && k.from[0][0] == '!')
      FUZZ_CHECK(!match_from_patterns(k.from, k.from[0].substr(1)));
  }

  // The matchers on raw input: first line = list, second = address, third = host name.
  auto take_line = [&](std::string_view& s) {
    auto nl = s.find('\n');
    auto line = s.substr(0, nl);
    s.remove_prefix(nl == std::string_view::npos ? s.size() : nl + 1);
    return line;
  };
  std::string_view rest = text;
  auto list = take_line(rest), ip = take_line(rest), host = take_line(rest);
  bool cidr = match_cidr_list(list, ip);
  auto patterns = split_commas(list);
  bool from = match_from_patterns(patterns, ip, host);
  (void)from;
  // source-address lists are a subset of from= syntax with the same meaning.
  if (cidr && host.empty()) FUZZ_CHECK(match_from_patterns(patterns, ip));
  (void)match_wildcard(host, list);

  // Base64 and key-line helpers on the same bytes.
  if (auto bytes = base64_decode(text)) {
    auto again = base64_decode(base64_encode(*bytes));
    FUZZ_CHECK(again && *again == *bytes);
  }
  (void)parse_public_key_line(text);
  (void)sniff_private_key(text);
  return 0;
}
