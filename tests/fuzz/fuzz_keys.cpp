// Key files and key lines as the CLI and the server read them: the private-key armour sniff
// (which decides between "PEM, convert it" and handing the text to libssh), the OpenSSH
// private key container walked with WireReader the way an openssh-key-v1 body is laid out,
// public key lines and wire blobs, base64 and fingerprints. Never crash, never read out of
// bounds, and keep the round-trip properties the known_hosts and authorized_keys code relies on.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

#include "ssh/keys.hpp"
#include "fuzz_check.hpp"

using namespace alk::ssh;

namespace {

// The base64 between the OpenSSH armour lines, line breaks removed (as ssh-keygen writes it).
std::string armoured_body(std::string_view text) {
  constexpr std::string_view begin = "-----BEGIN OPENSSH PRIVATE KEY-----";
  constexpr std::string_view end = "-----END OPENSSH PRIVATE KEY-----";
  auto b = text.find(begin);
  if (b == std::string_view::npos) return {};
  text.remove_prefix(b + begin.size());
  text = text.substr(0, text.find(end));
  std::string out;
  for (char c : text)
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') out.push_back(c);
  return out;
}

// openssh-key-v1: magic, ciphername, kdfname, kdfoptions, u32 nkeys, nkeys public blobs, private
// section. Every length is attacker-chosen; the reader must refuse rather than overrun.
void walk_openssh_container(std::span<const uint8_t> body) {
  constexpr std::string_view magic{"openssh-key-v1\0", 15};
  if (body.size() < magic.size() || std::string_view(reinterpret_cast<const char*>(body.data()), magic.size()) != magic)
    return;
  WireReader r(body.subspan(magic.size()));
  std::string cipher, kdf;
  std::span<const uint8_t> kdf_opts, priv;
  uint32_t nkeys = 0;
  if (!r.string(cipher) || !r.string(kdf) || !r.bytes(kdf_opts) || !r.u32(nkeys)) return;
  for (uint32_t i = 0; i < nkeys && r.ok(); ++i) {
    std::span<const uint8_t> pub;
    if (!r.bytes(pub)) break;
    if (auto key = public_key_from_blob(pub)) {
      FUZZ_CHECK(key->blob.size() == pub.size());
      (void)fingerprint_sha256(key->blob);
    }
    (void)ed25519_key_bytes(pub);
  }
  if (!r.bytes(priv)) return;
  WireReader p(priv);
  uint32_t check1 = 0, check2 = 0;
  std::string type;
  if (!p.u32(check1) || !p.u32(check2) || !p.string(type)) return;
  std::span<const uint8_t> field;
  while (p.bytes(field)) FUZZ_CHECK(field.size() <= priv.size());
  FUZZ_CHECK(!p.ok() || p.remaining() == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::span<const uint8_t> bytes(data, size);

  // Private key files: the sniff is total, and only an OpenSSH armour gets to the container.
  auto format = sniff_private_key(text);
  if (format == PrivateKeyFormat::OpenSSH) {
    if (auto body = base64_decode(armoured_body(text))) walk_openssh_container(*body);
  }

  // A .pub line: anything accepted re-reads identically from the line we write for it.
  if (auto key = parse_public_key_line(text)) {
    FUZZ_CHECK(is_known_key_type(key->type));
    auto again = parse_public_key_line(public_key_line(*key));
    FUZZ_CHECK(again && again->type == key->type && again->blob == key->blob);
    FUZZ_CHECK(blobs_equal_ct(again->blob, key->blob));
    auto from_blob = public_key_from_blob(key->blob);
    FUZZ_CHECK(from_blob && from_blob->type == key->type);
    auto fp = fingerprint_sha256(key->blob);
    FUZZ_CHECK(fp.size() == 7 + 43 && fp.starts_with("SHA256:"));
  }

  // The raw bytes as a wire blob.
  if (auto key = public_key_from_blob(bytes)) {
    FUZZ_CHECK(is_known_key_type(key->type));
    auto line = public_key_line(*key);
    auto again = parse_public_key_line(line);
    FUZZ_CHECK(again && again->blob == key->blob);
  }
  if (auto pk = ed25519_key_bytes(bytes)) FUZZ_CHECK(pk->size() == 32 && pk->data() >= data && pk->data() + 32 <= data + size);
  walk_openssh_container(bytes);

  // base64 is a bijection on what it accepts (modulo stripped padding).
  if (auto decoded = base64_decode(text)) {
    auto encoded = base64_encode(*decoded);
    auto again = base64_decode(encoded);
    FUZZ_CHECK(again && *again == *decoded);
  }

  // Constant-time compare agrees with ==, on halves of the input.
  auto a = bytes.first(size / 2), b = bytes.subspan(size / 2, size / 2);
  FUZZ_CHECK(blobs_equal_ct(a, b) == std::equal(a.begin(), a.end(), b.begin(), b.end()));
  return 0;
}
