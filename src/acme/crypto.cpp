#include "acme/crypto.hpp"

#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cerrno>
#include <ctime>

namespace alk::acme {

namespace detail {
void PkeyFree::operator()(evp_pkey_st *k) const { EVP_PKEY_free(k); }
}  // namespace detail

namespace {

constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// id-pe-acmeIdentifier, RFC 8737 §6.1.
constexpr char kAcmeIdentifierOid[] = "1.3.6.1.5.5.7.1.31";

std::string bio_string(BIO *bio) {
  const uint8_t *p = nullptr;
  size_t n = 0;
  BIO_mem_contents(bio, &p, &n);
  return std::string(reinterpret_cast<const char *>(p), n);
}

std::string sha256(std::string_view data) {
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t *>(data.data()), data.size(), d);
  return std::string(reinterpret_cast<const char *>(d), sizeof d);
}

const EC_KEY *p256_of(const EVP_PKEY *k) {
  if (!k || EVP_PKEY_id(k) != EVP_PKEY_EC) return nullptr;
  const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(k);
  if (!ec || EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) != NID_X9_62_prime256v1) return nullptr;
  return ec;
}

int64_t asn1_time_posix(const ASN1_TIME *t) {
  // Seconds from the epoch to t, via the one comparison every BoringSSL has.
  bssl::UniquePtr<ASN1_TIME> epoch(ASN1_TIME_set(nullptr, 0));
  int days = 0, secs = 0;
  if (!epoch || !t || ASN1_TIME_diff(&days, &secs, epoch.get(), t) != 1) return 0;
  return int64_t(days) * 86400 + secs;
}

// Adds subjectAltName dNSName entries for names to a stack of extensions.
bool add_san(STACK_OF(X509_EXTENSION) * exts, const std::vector<std::string> &names) {
  bssl::UniquePtr<GENERAL_NAMES> gens(sk_GENERAL_NAME_new_null());
  if (!gens) return false;
  for (const auto &n : names) {
    bssl::UniquePtr<GENERAL_NAME> g(GENERAL_NAME_new());
    bssl::UniquePtr<ASN1_IA5STRING> s(ASN1_IA5STRING_new());
    if (!g || !s || !ASN1_STRING_set(s.get(), n.data(), int(n.size()))) return false;
    GENERAL_NAME_set0_value(g.get(), GEN_DNS, s.release());
    if (!sk_GENERAL_NAME_push(gens.get(), g.get())) return false;
    g.release();
  }
  X509_EXTENSION *ext = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens.get());
  if (!ext) return false;
  if (!sk_X509_EXTENSION_push(exts, ext)) {
    X509_EXTENSION_free(ext);
    return false;
  }
  return true;
}

bool set_cn(X509_NAME *name, std::string_view cn) {
  return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const uint8_t *>(cn.data()),
                                    int(cn.size()), -1, 0) == 1;
}

}  // namespace

std::string base64url(std::span<const uint8_t> in) {
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    uint32_t v = uint32_t(in[i]) << 16 | uint32_t(in[i + 1]) << 8 | in[i + 2];
    out += kB64Url[v >> 18];
    out += kB64Url[(v >> 12) & 63];
    out += kB64Url[(v >> 6) & 63];
    out += kB64Url[v & 63];
  }
  if (size_t rest = in.size() - i; rest > 0) {
    uint32_t v = uint32_t(in[i]) << 16 | (rest == 2 ? uint32_t(in[i + 1]) << 8 : 0);
    out += kB64Url[v >> 18];
    out += kB64Url[(v >> 12) & 63];
    if (rest == 2) out += kB64Url[(v >> 6) & 63];
  }
  return out;
}

std::string base64url(std::string_view s) {
  return base64url(std::span<const uint8_t>(reinterpret_cast<const uint8_t *>(s.data()), s.size()));
}

std::optional<std::string> base64url_decode(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
  };
  std::string out;
  out.reserve(text.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    int v = val(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero, so every byte string has exactly one encoding.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

// -- EcKey ------------------------------------------------------------------------------

rt::Result<EcKey> EcKey::generate() {
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  EcKey k;
  k.key_.reset(EVP_PKEY_new());
  if (!ec || !EC_KEY_generate_key(ec.get()) || !k.key_ || !EVP_PKEY_assign_EC_KEY(k.key_.get(), ec.release()))
    return rt::Error{ENOMEM, "acme: cannot generate a P-256 key"};
  return k;
}

rt::Result<EcKey> EcKey::from_pem(std::string_view pem) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  EcKey k;
  if (bio) k.key_.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  ERR_clear_error();
  if (!k.key_) return rt::Error{EINVAL, "not a PEM private key"};
  if (!p256_of(k.key_.get())) return rt::Error{EINVAL, "not a P-256 (ES256) key"};
  return k;
}

std::string EcKey::to_pem() const {
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr)) return {};
  return bio_string(bio.get());
}

std::string EcKey::jwk_json() const {
  const EC_KEY *ec = p256_of(key_.get());
  if (!ec) return {};
  uint8_t pt[65];
  if (EC_POINT_point2oct(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec), POINT_CONVERSION_UNCOMPRESSED, pt,
                         sizeof pt, nullptr) != sizeof pt)
    return {};
  return R"({"crv":"P-256","kty":"EC","x":")" + base64url(std::span<const uint8_t>(pt + 1, 32)) + R"(","y":")" +
         base64url(std::span<const uint8_t>(pt + 33, 32)) + R"("})";
}

std::string EcKey::thumbprint() const { return base64url(sha256(jwk_json())); }

std::optional<std::vector<uint8_t>> EcKey::sign_es256(std::string_view data) const {
  const EC_KEY *ec = p256_of(key_.get());
  if (!ec) return std::nullopt;
  std::string digest = sha256(data);
  bssl::UniquePtr<ECDSA_SIG> sig(
      ECDSA_do_sign(reinterpret_cast<const uint8_t *>(digest.data()), digest.size(), ec));
  if (!sig) return std::nullopt;
  const BIGNUM *r = nullptr, *s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  // JWS wants fixed-width r||s, not the DER ECDSA-Sig-Value (RFC 7518 §3.4).
  std::vector<uint8_t> out(64);
  if (!BN_bn2bin_padded(out.data(), 32, r) || !BN_bn2bin_padded(out.data() + 32, 32, s)) return std::nullopt;
  return out;
}

// -- JWS --------------------------------------------------------------------------------

namespace {
// A JSON string literal. The values here (URLs, nonces) are ASCII from the server, but the
// escaping keeps a hostile value from changing the header's structure.
std::string json_str(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      out += b;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}
}  // namespace

std::optional<std::string> jws_sign(const EcKey &key, std::string_view kid, std::string_view nonce,
                                    std::string_view url, std::string_view payload) {
  std::string header = R"({"alg":"ES256",)";
  if (kid.empty()) {
    std::string jwk = key.jwk_json();
    if (jwk.empty()) return std::nullopt;
    header += R"("jwk":)" + jwk;
  } else {
    header += R"("kid":)" + json_str(kid);
  }
  header += R"(,"nonce":)" + json_str(nonce) + R"(,"url":)" + json_str(url) + "}";
  std::string protected64 = base64url(header);
  std::string payload64 = base64url(payload);
  auto sig = key.sign_es256(protected64 + "." + payload64);
  if (!sig) return std::nullopt;
  return R"({"protected":")" + protected64 + R"(","payload":")" + payload64 + R"(","signature":")" +
         base64url(*sig) + R"("})";
}

// -- CSR and certificates ---------------------------------------------------------------

std::optional<std::vector<uint8_t>> make_csr(const EcKey &key, const std::vector<std::string> &names) {
  if (names.empty() || !key.native()) return std::nullopt;
  bssl::UniquePtr<X509_REQ> req(X509_REQ_new());
  if (!req || !X509_REQ_set_version(req.get(), X509_REQ_VERSION_1)) return std::nullopt;
  if (!set_cn(X509_REQ_get_subject_name(req.get()), names.front())) return std::nullopt;
  if (!X509_REQ_set_pubkey(req.get(), key.native())) return std::nullopt;
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  if (!exts || !add_san(exts.get(), names) || !X509_REQ_add_extensions(req.get(), exts.get())) return std::nullopt;
  if (!X509_REQ_sign(req.get(), key.native(), EVP_sha256())) return std::nullopt;
  uint8_t *der = nullptr;
  int n = i2d_X509_REQ(req.get(), &der);
  if (n <= 0) return std::nullopt;
  bssl::UniquePtr<uint8_t> owned(der);
  return std::vector<uint8_t>(der, der + n);
}

std::optional<CertPem> self_signed(std::string_view name, std::optional<std::string_view> key_authorization) {
  auto key = EcKey::generate();
  if (!key) return std::nullopt;
  bssl::UniquePtr<X509> x(X509_new());
  if (!x || !X509_set_version(x.get(), X509_VERSION_3)) return std::nullopt;
  uint8_t serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // positive
  bssl::UniquePtr<BIGNUM> bn(BN_bin2bn(serial, sizeof serial, nullptr));
  if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get()))) return std::nullopt;
  if (!X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) ||
      !X509_gmtime_adj(X509_getm_notAfter(x.get()), 7 * 86400))
    return std::nullopt;
  std::string n(name);
  if (!set_cn(X509_get_subject_name(x.get()), n) || !X509_set_issuer_name(x.get(), X509_get_subject_name(x.get())))
    return std::nullopt;
  if (!X509_set_pubkey(x.get(), key->native())) return std::nullopt;
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  if (!exts || !add_san(exts.get(), {n})) return std::nullopt;
  for (size_t i = 0; i < sk_X509_EXTENSION_num(exts.get()); ++i)
    if (!X509_add_ext(x.get(), sk_X509_EXTENSION_value(exts.get(), i), -1)) return std::nullopt;
  sk_X509_EXTENSION_pop_free(exts.release(), X509_EXTENSION_free);
  if (key_authorization) {
    // extnValue is the DER of an OCTET STRING holding the 32-byte digest.
    std::string digest = sha256(*key_authorization);
    std::string der = std::string("\x04\x20", 2) + digest;
    bssl::UniquePtr<ASN1_OBJECT> oid(OBJ_txt2obj(kAcmeIdentifierOid, 1));
    bssl::UniquePtr<ASN1_OCTET_STRING> val(ASN1_OCTET_STRING_new());
    if (!oid || !val || !ASN1_OCTET_STRING_set(val.get(), reinterpret_cast<const uint8_t *>(der.data()), int(der.size())))
      return std::nullopt;
    bssl::UniquePtr<X509_EXTENSION> ext(X509_EXTENSION_create_by_OBJ(nullptr, oid.get(), 1, val.get()));
    if (!ext || !X509_add_ext(x.get(), ext.get(), -1)) return std::nullopt;
  }
  if (!X509_sign(x.get(), key->native(), EVP_sha256())) return std::nullopt;
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_X509(bio.get(), x.get())) return std::nullopt;
  return CertPem{bio_string(bio.get()), key->to_pem()};
}

std::optional<CertInfo> cert_info(std::string_view chain_pem) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(chain_pem.data(), int(chain_pem.size())));
  bssl::UniquePtr<X509> x(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!x) return std::nullopt;
  CertInfo info;
  info.not_before = asn1_time_posix(X509_get0_notBefore(x.get()));
  info.not_after = asn1_time_posix(X509_get0_notAfter(x.get()));
  bssl::UniquePtr<GENERAL_NAMES> gens(
      static_cast<GENERAL_NAMES *>(X509_get_ext_d2i(x.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens.get()); ++i) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens.get(), i);
    if (g->type != GEN_DNS) continue;
    const ASN1_IA5STRING *s = g->d.dNSName;
    info.dns_names.emplace_back(reinterpret_cast<const char *>(ASN1_STRING_get0_data(s)), size_t(ASN1_STRING_length(s)));
  }
  if (bssl::UniquePtr<BIGNUM> bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(x.get()), nullptr)); bn) {
    char *hex = BN_bn2hex(bn.get());
    if (hex) {
      info.serial_hex = hex;
      OPENSSL_free(hex);
    }
  }
  return info;
}

bool cert_usable(const CertPem &cert, const std::vector<std::string> &names, int64_t now) {
  auto info = cert_info(cert.chain);
  if (!info || now < info->not_before || now >= info->not_after) return false;
  for (const auto &n : names)
    if (std::find(info->dns_names.begin(), info->dns_names.end(), n) == info->dns_names.end()) return false;
  auto key = EcKey::from_pem(cert.key);
  if (!key) return false;
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(cert.chain.data(), int(cert.chain.size())));
  bssl::UniquePtr<X509> x(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  bool match = x && X509_check_private_key(x.get(), key->native()) == 1;
  ERR_clear_error();
  return match;
}

int64_t renewal_time(int64_t not_before, int64_t not_after, uint64_t random) {
  if (not_after <= not_before) return not_before;
  int64_t life = not_after - not_before;
  int64_t spread = std::min<int64_t>(life / 20, 86400);
  int64_t jitter = spread > 0 ? int64_t(random % uint64_t(spread + 1)) : 0;
  return not_before + life / 3 * 2 + (life % 3) * 2 / 3 - jitter;
}

int64_t retry_delay(unsigned attempt, uint64_t random, int64_t latest) {
  int64_t base = attempt >= 9 ? 3600 : std::min<int64_t>(int64_t(10) << attempt, 3600);
  int64_t d = base + int64_t(random % uint64_t(base / 4 + 1));
  if (latest > 0) d = std::min(d, latest);
  return std::max<int64_t>(d, 1);
}

}  // namespace alk::acme
