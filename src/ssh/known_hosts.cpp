#include "ssh/known_hosts.hpp"

#include <openssl/digest.h>
#include <openssl/base64.h>
#include <openssl/hmac.h>

#include <cstring>

#include "ssh/authorized_keys.hpp"

namespace alk::ssh {
namespace {

constexpr size_t kMaxLineBytes = 128 * 1024;

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string_view next_field(std::string_view& s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  size_t n = 0;
  while (n < s.size() && !is_blank(s[n])) ++n;
  auto f = s.substr(0, n);
  s.remove_prefix(n);
  return f;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return out;
}

// HMAC-SHA1 of token under salt; returns the digest length (20), 0 on failure.
unsigned hmac_sha1(std::span<const uint8_t> key, std::string_view data, uint8_t (&out)[EVP_MAX_MD_SIZE]) {
  unsigned len = 0;
  if (!HMAC(EVP_sha1(), key.data(), key.size(), reinterpret_cast<const uint8_t*>(data.data()), data.size(), out,
            &len))
    return 0;
  return len;
}

// Decodes a 20-byte SHA-1-sized value (28 base64 characters) without allocating: known_hosts
// files can be long and every hashed line is checked for every lookup.
bool decode_sha1_field(std::string_view b64, uint8_t (&out)[20]) {
  if (b64.size() != 28) return false;
  uint8_t buf[21];
  size_t len = 0;
  if (!EVP_DecodeBase64(buf, &len, sizeof buf, reinterpret_cast<const uint8_t*>(b64.data()), b64.size()) ||
      len != 20)
    return false;
  std::memcpy(out, buf, 20);
  return true;
}

bool hashed_host_matches(std::string_view field, std::string_view token) {
  // "|1|salt|hash", SHA-1 sized salt and hash as ssh-keygen writes them; anything else is corrupt.
  field.remove_prefix(3);
  auto bar = field.find('|');
  if (bar == std::string_view::npos) return false;
  uint8_t salt[20], hash[20], mac[EVP_MAX_MD_SIZE];
  if (!decode_sha1_field(field.substr(0, bar), salt) || !decode_sha1_field(field.substr(bar + 1), hash)) return false;
  return hmac_sha1(salt, token, mac) == 20 && blobs_equal_ct(std::span<const uint8_t>(mac, 20), hash);
}

// token is already lower-case; the field is folded once, then matched piece by piece in place.
bool host_field_matches(std::string_view field, std::string_view token) {
  if (field.starts_with("|1|")) return hashed_host_matches(field, token);
  const std::string folded = lower(field);
  std::string_view rest = folded;
  bool got_positive = false;
  for (;;) {
    auto comma = rest.find(',');
    std::string_view p = rest.substr(0, comma);
    bool negated = !p.empty() && p.front() == '!';
    if (negated) p.remove_prefix(1);
    if (match_wildcard(token, p)) {
      if (negated) return false;
      got_positive = true;
    }
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  return got_positive;
}

}  // namespace

std::string known_hosts_host_token(std::string_view host, uint16_t port) {
  if (port == 0 || port == 22) return lower(host);
  return "[" + lower(host) + "]:" + std::to_string(port);
}

HostKeyStatus check_known_host(std::string_view text, std::string_view host, uint16_t port, const PublicKey& key) {
  const std::string token = known_hosts_host_token(host, port);
  bool revoked = false, known = false, other = false;
  while (!text.empty()) {
    auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.size() > kMaxLineBytes) continue;

    std::string_view rest = line;
    std::string_view first = next_field(rest);
    if (first.empty() || first.front() == '#') continue;
    bool revoked_marker = false;
    if (first.front() == '@') {
      if (first != "@revoked") continue;  // @cert-authority and unknown markers: not ours to judge
      revoked_marker = true;
      first = next_field(rest);
    }
    if (first.empty() || !host_field_matches(first, token)) continue;
    auto listed = parse_public_key_line(rest);
    if (!listed) continue;
    bool same = blobs_equal_ct(listed->blob, key.blob);
    if (revoked_marker) {
      revoked = revoked || same;
    } else if (same) {
      known = true;
    } else {
      other = true;
    }
  }
  if (revoked) return HostKeyStatus::Revoked;
  if (known) return HostKeyStatus::Known;
  if (other) return HostKeyStatus::Changed;
  return HostKeyStatus::Unknown;
}

std::string known_hosts_line(std::string_view host, uint16_t port, const PublicKey& key) {
  return known_hosts_host_token(host, port) + " " + key.type + " " + base64_encode(key.blob) + "\n";
}

std::string hash_known_hosts_token(std::string_view token, std::span<const uint8_t> salt) {
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned len = hmac_sha1(salt, token, mac);
  return "|1|" + base64_encode(salt) + "|" + base64_encode(std::span<const uint8_t>(mac, len));
}

}  // namespace alk::ssh
