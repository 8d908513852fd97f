#include "ssh/keys.hpp"

#include <openssl/base64.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace alk::ssh {
namespace {

// Certificates with many principals/options are the largest blobs we accept; 64 KiB is far above
// anything ssh-keygen produces and bounds the work per line.
constexpr size_t kMaxBlobBytes = 64 * 1024;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

std::string_view next_token(std::string_view& s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  size_t n = 0;
  while (n < s.size() && !is_space(s[n])) ++n;
  std::string_view tok = s.substr(0, n);
  s.remove_prefix(n);
  return tok;
}

}  // namespace

PrivateKeyFormat sniff_private_key(std::string_view text) {
  // A UTF-8 BOM is what some editors leave behind; it is not part of the armour.
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  if (text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")) return PrivateKeyFormat::OpenSSH;
  static constexpr std::array<std::string_view, 5> pem = {
      "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN EC PRIVATE KEY-----", "-----BEGIN DSA PRIVATE KEY-----",
      "-----BEGIN ENCRYPTED PRIVATE KEY-----", "-----BEGIN PRIVATE KEY-----"};
  for (auto p : pem)
    if (text.starts_with(p)) return PrivateKeyFormat::Pem;
  return PrivateKeyFormat::Unknown;
}

bool is_certificate_type(std::string_view type) { return type.ends_with("-cert-v01@openssh.com"); }

bool is_known_key_type(std::string_view type) {
  static constexpr std::array<std::string_view, 8> plain = {
      "ssh-ed25519",         "ssh-rsa",
      "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
      "ecdsa-sha2-nistp521", "ssh-dss",
      "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"};
  for (auto p : plain)
    if (type == p) return true;
  static constexpr std::array<std::string_view, 8> certs = {
      "ssh-ed25519-cert-v01@openssh.com",         "ssh-rsa-cert-v01@openssh.com",
      "ecdsa-sha2-nistp256-cert-v01@openssh.com", "ecdsa-sha2-nistp384-cert-v01@openssh.com",
      "ecdsa-sha2-nistp521-cert-v01@openssh.com", "ssh-dss-cert-v01@openssh.com",
      "sk-ssh-ed25519-cert-v01@openssh.com",      "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com"};
  for (auto c : certs)
    if (type == c) return true;
  return false;
}

std::optional<PublicKey> public_key_from_blob(std::span<const uint8_t> blob) {
  if (blob.size() > kMaxBlobBytes) return std::nullopt;
  WireReader r(blob);
  std::string type;
  if (!r.string(type) || !is_known_key_type(type) || r.remaining() == 0) return std::nullopt;
  return PublicKey{std::move(type), std::vector<uint8_t>(blob.begin(), blob.end()), {}};
}

std::optional<PublicKey> parse_public_key_line(std::string_view line) {
  std::string_view rest = line;
  std::string_view type = next_token(rest);
  std::string_view b64 = next_token(rest);
  if (type.empty() || b64.empty() || !is_known_key_type(type)) return std::nullopt;
  if (b64.size() > kMaxBlobBytes * 4 / 3 + 4) return std::nullopt;
  auto blob = base64_decode(b64);
  if (!blob) return std::nullopt;
  auto key = public_key_from_blob(*blob);
  if (!key || key->type != type) return std::nullopt;
  key->comment = std::string(trim(rest));
  return key;
}

std::string public_key_line(const PublicKey& key) {
  std::string out = key.type + " " + base64_encode(key.blob);
  if (!key.comment.empty()) out += " " + key.comment;
  return out;
}

std::string fingerprint_sha256(std::span<const uint8_t> blob) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(blob.data(), blob.size(), digest);
  std::string b64 = base64_encode(digest);
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "SHA256:" + b64;
}

std::optional<std::vector<uint8_t>> base64_decode(std::string_view text) {
  std::string padded(text);
  // Tolerate stripped padding; a remainder of 1 can never be valid base64.
  if (padded.size() % 4 == 1) return std::nullopt;
  while (padded.size() % 4 != 0) padded.push_back('=');
  size_t max_out = 0;
  if (!EVP_DecodedLength(&max_out, padded.size())) return std::nullopt;
  std::vector<uint8_t> out(max_out);
  size_t out_len = 0;
  if (!EVP_DecodeBase64(out.data(), &out_len, out.size(), reinterpret_cast<const uint8_t*>(padded.data()),
                        padded.size()))
    return std::nullopt;
  out.resize(out_len);
  return out;
}

std::string base64_encode(std::span<const uint8_t> bytes) {
  size_t len = 0;
  if (!EVP_EncodedLength(&len, bytes.size())) return {};
  std::string out(len, '\0');
  size_t written = EVP_EncodeBlock(reinterpret_cast<uint8_t*>(out.data()), bytes.data(), bytes.size());
  out.resize(written);
  return out;
}

bool blobs_equal_ct(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::optional<std::string> read_small_file(const std::string& path, size_t max_bytes, std::string* err) {
  auto fail = [&](std::string why) -> std::optional<std::string> {
    if (err) *err = "cannot read " + path + ": " + why;
    return std::nullopt;
  };
  struct Closer {
    void operator()(FILE* f) const { std::fclose(f); }
  };
  std::unique_ptr<FILE, Closer> f(std::fopen(path.c_str(), "rb"));
  if (!f) return fail(std::strerror(errno));
  std::string out;
  char buf[4096];
  for (;;) {
    size_t n = std::fread(buf, 1, sizeof buf, f.get());
    if (n > 0) {
      if (out.size() + n > max_bytes) return fail("file larger than " + std::to_string(max_bytes) + " bytes");
      out.append(buf, n);
    }
    if (n < sizeof buf) {
      // fopen succeeds on a directory; the read is where EISDIR surfaces.
      if (std::ferror(f.get())) return fail(std::strerror(errno));
      break;
    }
  }
  return out;
}

bool WireReader::u32(uint32_t& out) {
  if (!ok_ || remaining() < 4) return ok_ = false;
  const uint8_t* p = data_.data() + pos_;
  out = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
  pos_ += 4;
  return true;
}

bool WireReader::u64(uint64_t& out) {
  uint32_t hi = 0, lo = 0;
  if (!u32(hi) || !u32(lo)) return false;
  out = (uint64_t{hi} << 32) | lo;
  return true;
}

bool WireReader::bytes(std::span<const uint8_t>& out) {
  uint32_t len = 0;
  if (!u32(len)) return false;
  if (remaining() < len) return ok_ = false;
  out = data_.subspan(pos_, len);
  pos_ += len;
  return true;
}

bool WireReader::string(std::string& out) {
  std::span<const uint8_t> b;
  if (!bytes(b)) return false;
  out.assign(b.begin(), b.end());
  return true;
}

void wire_put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

void wire_put_string(std::vector<uint8_t>& out, std::span<const uint8_t> s) {
  wire_put_u32(out, uint32_t(s.size()));
  out.insert(out.end(), s.begin(), s.end());
}

void wire_put_string(std::vector<uint8_t>& out, std::string_view s) {
  wire_put_string(out, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

std::optional<std::span<const uint8_t>> ed25519_key_bytes(std::span<const uint8_t> blob) {
  WireReader r(blob);
  std::string type;
  std::span<const uint8_t> pk;
  if (!r.string(type) || type != "ssh-ed25519" || !r.bytes(pk) || pk.size() != 32 || r.remaining() != 0)
    return std::nullopt;
  return pk;
}

std::optional<Ed25519PrivateKey> parse_openssh_ed25519_private(std::string_view text, std::string* err) {
  auto fail = [&](const char* why) -> std::optional<Ed25519PrivateKey> {
    if (err) *err = why;
    return std::nullopt;
  };
  if (sniff_private_key(text) != PrivateKeyFormat::OpenSSH) return fail("not an OpenSSH private key");
  constexpr std::string_view begin = "-----BEGIN OPENSSH PRIVATE KEY-----";
  constexpr std::string_view end = "-----END OPENSSH PRIVATE KEY-----";
  size_t b = text.find(begin), e = text.find(end);
  if (b == std::string_view::npos || e == std::string_view::npos || e < b) return fail("damaged OpenSSH private key");
  std::string b64;
  for (char c : text.substr(b + begin.size(), e - b - begin.size()))
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') b64 += c;
  auto raw = base64_decode(b64);
  constexpr std::string_view magic{"openssh-key-v1\0", 15};
  if (!raw || raw->size() < magic.size() || std::memcmp(raw->data(), magic.data(), magic.size()) != 0)
    return fail("damaged OpenSSH private key");
  WireReader r(std::span<const uint8_t>(*raw).subspan(magic.size()));
  std::string cipher, kdf;
  std::span<const uint8_t> kdf_opts, pub, priv;
  uint32_t nkeys = 0;
  if (!r.string(cipher) || !r.string(kdf) || !r.bytes(kdf_opts) || !r.u32(nkeys)) return fail("damaged OpenSSH private key");
  if (cipher != "none") return fail("passphrase-protected keys are not supported");
  if (nkeys != 1) return fail("key files with more than one key are not supported");
  if (!r.bytes(pub) || !r.bytes(priv) || r.remaining() != 0) return fail("damaged OpenSSH private key");
  if (!ed25519_key_bytes(pub)) return fail("only Ed25519 keys are supported");
  WireReader p(priv);
  uint32_t check1 = 0, check2 = 0;
  std::string type;
  std::span<const uint8_t> pk, sk;
  Ed25519PrivateKey out;
  if (!p.u32(check1) || !p.u32(check2) || check1 != check2) return fail("damaged OpenSSH private key");
  if (!p.string(type) || type != "ssh-ed25519") return fail("only Ed25519 keys are supported");
  if (!p.bytes(pk) || pk.size() != 32 || !p.bytes(sk) || sk.size() != 64 || !p.string(out.comment))
    return fail("damaged OpenSSH private key");
  // The secret's second half is the public key; it must match the public blob.
  auto pub_bytes = ed25519_key_bytes(pub);
  if (std::memcmp(sk.data() + 32, pk.data(), 32) != 0 || std::memcmp(pk.data(), pub_bytes->data(), 32) != 0)
    return fail("damaged OpenSSH private key");
  // Padding: 1, 2, 3, ... up to the block size.
  auto padding = priv.subspan(p.offset());
  if (padding.size() >= 16) return fail("damaged OpenSSH private key");
  for (size_t i = 0; i < padding.size(); ++i)
    if (padding[i] != i + 1) return fail("damaged OpenSSH private key");
  std::memcpy(out.secret.data(), sk.data(), 64);
  out.public_blob.assign(pub.begin(), pub.end());
  return out;
}

}  // namespace alk::ssh
