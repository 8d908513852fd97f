// known_hosts files are user-editable and may be shared; the checker must never crash and must
// keep its verdicts consistent.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "ssh/keys.hpp"
#include "ssh/known_hosts.hpp"
#include "fuzz_check.hpp"

using namespace alk::ssh;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // The presented key: the first line if it is a key line (so inputs can list the same key),
  // otherwise a fixed Ed25519 key.
  PublicKey key;
  auto nl = text.find('\n');
  if (auto k = parse_public_key_line(text.substr(0, nl))) {
    key = *k;
  } else {
    wire_put_string(key.blob, "ssh-ed25519");
    wire_put_string(key.blob, std::string(32, '\x42'));
    key.type = "ssh-ed25519";
  }
  for (auto [host, port] : {std::pair<std::string_view, uint16_t>{"host.test", 22}, {"Host.Test", 2222},
                            {"2001:db8::1", 8022}}) {
    auto status = check_known_host(text, host, port, key);
    FUZZ_CHECK(status == HostKeyStatus::Known || status == HostKeyStatus::Unknown ||
               status == HostKeyStatus::Changed || status == HostKeyStatus::Revoked);
    // Appending the line trust-on-first-use writes makes the key Known - unless it is revoked.
    std::string appended(text);
    if (!appended.empty() && appended.back() != '\n') appended += '\n';
    appended += known_hosts_line(host, port, key);
    auto after = check_known_host(appended, host, port, key);
    FUZZ_CHECK(after == (status == HostKeyStatus::Revoked ? HostKeyStatus::Revoked : HostKeyStatus::Known));
  }
  return 0;
}
