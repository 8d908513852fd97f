// SSH key material as text and wire blobs: sniffing private key files, parsing public key
// lines, fingerprints, base64, and a bounds-checked reader for the SSH wire encoding
// (RFC 4251 §5). Pure functions: nothing here touches libssh or the file system, except
// read_small_file, which the CLI uses to load keys before handing the text to the parsers.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace alk::ssh {

enum class PrivateKeyFormat { OpenSSH, Pem, Unknown };

// Looks only at the armour line (after leading whitespace): "-----BEGIN OPENSSH PRIVATE KEY-----"
// is OpenSSH; "-----BEGIN (RSA |EC |DSA |ENCRYPTED )?PRIVATE KEY-----" is PEM, which we refuse
// with a clear message instead of letting libssh fail obscurely.
PrivateKeyFormat sniff_private_key(std::string_view file_text);

struct PublicKey {
  std::string type;           // e.g. "ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"
  std::vector<uint8_t> blob;  // the SSH wire blob (starts with string(type))
  std::string comment;
};

// True for the key type names OpenSSH writes in .pub, authorized_keys and known_hosts files.
bool is_known_key_type(std::string_view type);
bool is_certificate_type(std::string_view type);

// "ssh-ed25519 AAAA... comment". The base64 blob must decode and start with the same type name,
// so a type/blob mismatch is refused. Leading/trailing whitespace and a trailing '\r' are ignored.
std::optional<PublicKey> parse_public_key_line(std::string_view line);
// The key type is taken from the blob itself.
std::optional<PublicKey> public_key_from_blob(std::span<const uint8_t> blob);
// "type base64[ comment]", the .pub / authorized_keys form.
std::string public_key_line(const PublicKey& key);

// "SHA256:" + unpadded base64 of SHA-256(blob), the same string `ssh-keygen -l` prints.
std::string fingerprint_sha256(std::span<const uint8_t> blob);

// Standard alphabet. Decoding rejects whitespace and bad characters; missing '=' padding is
// tolerated (some tools strip it).
std::optional<std::vector<uint8_t>> base64_decode(std::string_view text);
std::string base64_encode(std::span<const uint8_t> bytes);

// Constant time for equal lengths; different lengths compare unequal at once (lengths are public).
bool blobs_equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b);

// Reads at most max_bytes; a larger file is an error rather than silently truncated.
// err gets e.g. "cannot read PATH: No such file or directory".
std::optional<std::string> read_small_file(const std::string& path, size_t max_bytes, std::string* err);

// Bounds-checked cursor over SSH wire encoding. Every read fails (returns false / nullopt) instead
// of reading past the end; after a failure the reader stays failed.
class WireReader {
 public:
  explicit WireReader(std::span<const uint8_t> data) : data_(data) {}
  bool u32(uint32_t& out);
  bool u64(uint64_t& out);
  // A length-prefixed string; the returned span points into the input.
  bool bytes(std::span<const uint8_t>& out);
  bool string(std::string& out);
  size_t offset() const { return pos_; }
  size_t remaining() const { return data_.size() - pos_; }
  bool ok() const { return ok_; }

 private:
  std::span<const uint8_t> data_;
  size_t pos_ = 0;
  bool ok_ = true;
};

void wire_put_u32(std::vector<uint8_t>& out, uint32_t v);
void wire_put_string(std::vector<uint8_t>& out, std::span<const uint8_t> s);
void wire_put_string(std::vector<uint8_t>& out, std::string_view s);

// For an "ssh-ed25519" public key blob, the 32 raw key bytes; nullopt for anything else.
std::optional<std::span<const uint8_t>> ed25519_key_bytes(std::span<const uint8_t> blob);

// An unencrypted Ed25519 key from an OpenSSH private key file ("openssh-key-v1" container).
struct Ed25519PrivateKey {
  std::array<uint8_t, 64> secret{};  // BoringSSL layout: 32-byte seed || 32-byte public key
  std::vector<uint8_t> public_blob;  // string("ssh-ed25519") || string(public key)
  std::string comment;
};
// err gets a user-facing reason: not OpenSSH format, passphrase-protected, not Ed25519, damaged.
std::optional<Ed25519PrivateKey> parse_openssh_ed25519_private(std::string_view file_text, std::string* err);

}  // namespace alk::ssh
