// ACME cryptography against known vectors (RFC 4648, RFC 7515 A.3, RFC 7638) and round trips
// through BoringSSL's own parsers and verifiers.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/bytestring.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "acme/crypto.hpp"

using namespace alk::acme;

namespace {

// The P-256 key of RFC 7515 Appendix A.3, as PEM.
std::string rfc7515_key_pem() {
  auto d = base64url_decode("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
  REQUIRE(d);
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_X9_62_prime256v1));
  bssl::UniquePtr<BIGNUM> priv(BN_bin2bn(reinterpret_cast<const uint8_t *>(d->data()), d->size(), nullptr));
  REQUIRE(EC_KEY_set_private_key(ec.get(), priv.get()));
  bssl::UniquePtr<EC_POINT> pub(EC_POINT_new(EC_KEY_get0_group(ec.get())));
  REQUIRE(EC_POINT_mul(EC_KEY_get0_group(ec.get()), pub.get(), priv.get(), nullptr, nullptr, nullptr));
  REQUIRE(EC_KEY_set_public_key(ec.get(), pub.get()));
  bssl::UniquePtr<EVP_PKEY> pk(EVP_PKEY_new());
  REQUIRE(EVP_PKEY_set1_EC_KEY(pk.get(), ec.get()));
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  REQUIRE(PEM_write_bio_PrivateKey(bio.get(), pk.get(), nullptr, nullptr, 0, nullptr, nullptr));
  const uint8_t *p;
  size_t n;
  BIO_mem_contents(bio.get(), &p, &n);
  return std::string(reinterpret_cast<const char *>(p), n);
}

// Verifies a JWS r||s signature over input with key's public half.
bool verify_es256(const EcKey &key, const std::string &input, const std::string &sig) {
  if (sig.size() != 64) return false;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t *>(input.data()), input.size(), digest);
  bssl::UniquePtr<ECDSA_SIG> s(ECDSA_SIG_new());
  BIGNUM *r = BN_bin2bn(reinterpret_cast<const uint8_t *>(sig.data()), 32, nullptr);
  BIGNUM *ss = BN_bin2bn(reinterpret_cast<const uint8_t *>(sig.data()) + 32, 32, nullptr);
  ECDSA_SIG_set0(s.get(), r, ss);
  return ECDSA_do_verify(digest, sizeof digest, s.get(), EVP_PKEY_get0_EC_KEY(key.native())) == 1;
}

bssl::UniquePtr<X509> parse_cert(const std::string &pem) {
  bssl::UniquePtr<BIO> bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
  return bssl::UniquePtr<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

}  // namespace

TEST_CASE("base64url: RFC 4648 vectors, URL alphabet, no padding") {
  CHECK(base64url(std::string_view("")) == "");
  CHECK(base64url(std::string_view("f")) == "Zg");
  CHECK(base64url(std::string_view("fo")) == "Zm8");
  CHECK(base64url(std::string_view("foo")) == "Zm9v");
  CHECK(base64url(std::string_view("foob")) == "Zm9vYg");
  CHECK(base64url(std::string_view("fooba")) == "Zm9vYmE");
  CHECK(base64url(std::string_view("foobar")) == "Zm9vYmFy");
  CHECK(base64url(std::string_view("\xfb\xff", 2)) == "-_8");
  CHECK(base64url_decode("Zm9vYmE") == std::optional<std::string>("fooba"));
  CHECK(base64url_decode("-_8") == std::optional<std::string>("\xfb\xff"));
  CHECK(base64url_decode("") == std::optional<std::string>(""));
}

TEST_CASE("base64url_decode refuses padding, the standard alphabet's +/, junk and non-canonical tails") {
  CHECK_FALSE(base64url_decode("Zg=="));
  CHECK_FALSE(base64url_decode("+/8"));
  CHECK_FALSE(base64url_decode("Zm9v YmE"));
  CHECK_FALSE(base64url_decode("Z"));      // 6 bits cannot be a byte
  CHECK_FALSE(base64url_decode("Zh"));     // 'h' leaves non-zero spare bits
  for (int i = 0; i < 256; ++i) {
    std::string s(size_t(i % 7), char(i));
    CHECK(base64url_decode(base64url(s)) == std::optional<std::string>(s));
  }
}

TEST_CASE("EcKey: the RFC 7515 A.3 key gives the RFC's JWK coordinates and RFC 7638 thumbprint") {
  auto key = EcKey::from_pem(rfc7515_key_pem());
  REQUIRE(key);
  CHECK(key->jwk_json() ==
        R"({"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})");
  // SHA-256 of exactly that member order, computed independently.
  CHECK(key->thumbprint() == "oKIywvGUpTVTyxMQ3bwIIeQUudfr_CkLMjCE19ECD-U");
  auto again = EcKey::from_pem(key->to_pem());
  REQUIRE(again);
  CHECK(again->jwk_json() == key->jwk_json());
}

TEST_CASE("ES256: the RFC 7515 A.3 signature verifies as r||s, and ours verifies the same way") {
  auto key = EcKey::from_pem(rfc7515_key_pem());
  REQUIRE(key);
  const std::string input =
      "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
  auto rfc_sig = base64url_decode("DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q");
  REQUIRE(rfc_sig);
  CHECK(verify_es256(key.value(), input, *rfc_sig));
  auto ours = key->sign_es256(input);
  REQUIRE(ours);
  REQUIRE(ours->size() == 64);
  CHECK(verify_es256(key.value(), input, std::string(ours->begin(), ours->end())));
  CHECK_FALSE(verify_es256(key.value(), input + "x", std::string(ours->begin(), ours->end())));
}

TEST_CASE("EcKey::from_pem refuses garbage and keys that are not P-256") {
  CHECK_FALSE(EcKey::from_pem("not a key"));
  bssl::UniquePtr<EC_KEY> ec(EC_KEY_new_by_curve_name(NID_secp384r1));
  REQUIRE(EC_KEY_generate_key(ec.get()));
  bssl::UniquePtr<EVP_PKEY> pk(EVP_PKEY_new());
  EVP_PKEY_set1_EC_KEY(pk.get(), ec.get());
  bssl::UniquePtr<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), pk.get(), nullptr, nullptr, 0, nullptr, nullptr);
  const uint8_t *p;
  size_t n;
  BIO_mem_contents(bio.get(), &p, &n);
  auto r = EcKey::from_pem(std::string(reinterpret_cast<const char *>(p), n));
  REQUIRE_FALSE(r);
  CHECK(r.error().what.find("P-256") != std::string::npos);
}

TEST_CASE("jws_sign: flattened JSON with jwk or kid, nonce and url, verifiable signature") {
  auto key = EcKey::generate();
  REQUIRE(key);
  for (std::string kid : {std::string(), std::string("https://ca.test/acct/7")}) {
    auto jws = jws_sign(key.value(), kid, "nonce-1", "https://ca.test/new-order", R"({"a":1})");
    REQUIRE(jws);
    auto j = nlohmann::json::parse(*jws);
    auto prot = base64url_decode(j["protected"].get<std::string>());
    REQUIRE(prot);
    auto h = nlohmann::json::parse(*prot);
    CHECK(h["alg"] == "ES256");
    CHECK(h["nonce"] == "nonce-1");
    CHECK(h["url"] == "https://ca.test/new-order");
    if (kid.empty()) {
      CHECK(h["jwk"]["kty"] == "EC");
      CHECK(h["jwk"].dump() == key->jwk_json());
      CHECK_FALSE(h.contains("kid"));
    } else {
      CHECK(h["kid"] == kid);
      CHECK_FALSE(h.contains("jwk"));
    }
    CHECK(base64url_decode(j["payload"].get<std::string>()) == std::optional<std::string>(R"({"a":1})"));
    auto sig = base64url_decode(j["signature"].get<std::string>());
    REQUIRE(sig);
    CHECK(verify_es256(key.value(), j["protected"].get<std::string>() + "." + j["payload"].get<std::string>(), *sig));
  }
  // POST-as-GET: the payload is the empty string.
  auto get = jws_sign(key.value(), "k", "n", "u", "");
  REQUIRE(get);
  CHECK(nlohmann::json::parse(*get)["payload"] == "");
  // A hostile nonce cannot change the header's structure.
  auto odd = jws_sign(key.value(), "k", "a\",\"url\":\"evil", "u", "");
  REQUIRE(odd);
  auto h = nlohmann::json::parse(*base64url_decode(nlohmann::json::parse(*odd)["protected"].get<std::string>()));
  CHECK(h["url"] == "u");
  CHECK(h["nonce"] == "a\",\"url\":\"evil");
}

TEST_CASE("make_csr: parses back, self-signature verifies, CN and every SAN present") {
  auto key = EcKey::generate();
  REQUIRE(key);
  std::vector<std::string> names = {"tunnel.example.com", "www.example.com"};
  auto der = make_csr(key.value(), names);
  REQUIRE(der);
  const uint8_t *p = der->data();
  bssl::UniquePtr<X509_REQ> req(d2i_X509_REQ(nullptr, &p, long(der->size())));
  REQUIRE(req);
  bssl::UniquePtr<EVP_PKEY> pub(X509_REQ_get_pubkey(req.get()));
  CHECK(X509_REQ_verify(req.get(), pub.get()) == 1);
  CHECK(EVP_PKEY_cmp(pub.get(), key->native()) == 1);
  char cn[256];
  X509_NAME_get_text_by_NID(X509_REQ_get_subject_name(req.get()), NID_commonName, cn, sizeof cn);
  CHECK(std::string(cn) == "tunnel.example.com");
  bssl::UniquePtr<STACK_OF(X509_EXTENSION)> exts(X509_REQ_get_extensions(req.get()));
  REQUIRE(exts);
  std::vector<std::string> sans;
  for (size_t i = 0; i < sk_X509_EXTENSION_num(exts.get()); ++i) {
    X509_EXTENSION *e = sk_X509_EXTENSION_value(exts.get(), i);
    if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) != NID_subject_alt_name) continue;
    bssl::UniquePtr<GENERAL_NAMES> gens(static_cast<GENERAL_NAMES *>(X509V3_EXT_d2i(e)));
    for (size_t k = 0; k < sk_GENERAL_NAME_num(gens.get()); ++k) {
      auto *g = sk_GENERAL_NAME_value(gens.get(), k);
      REQUIRE(g->type == GEN_DNS);
      sans.emplace_back(reinterpret_cast<const char *>(ASN1_STRING_get0_data(g->d.dNSName)),
                        size_t(ASN1_STRING_length(g->d.dNSName)));
    }
  }
  CHECK(sans == names);
  CHECK_FALSE(make_csr(key.value(), {}));
}

TEST_CASE("tls-alpn-01 certificate: critical id-pe-acmeIdentifier holding SHA-256(keyAuthorization)") {
  const std::string ka = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI";
  auto c = self_signed("tunnel.example.com", ka);
  REQUIRE(c);
  auto x = parse_cert(c->chain);
  REQUIRE(x);
  bssl::UniquePtr<ASN1_OBJECT> oid(OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1));
  int idx = X509_get_ext_by_OBJ(x.get(), oid.get(), -1);
  REQUIRE(idx >= 0);
  X509_EXTENSION *ext = X509_get_ext(x.get(), idx);
  CHECK(X509_EXTENSION_get_critical(ext) == 1);
  const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
  std::string got(reinterpret_cast<const char *>(ASN1_STRING_get0_data(v)), size_t(ASN1_STRING_length(v)));
  uint8_t digest[32];
  SHA256(reinterpret_cast<const uint8_t *>(ka.data()), ka.size(), digest);
  CHECK(got == std::string("\x04\x20", 2) + std::string(reinterpret_cast<char *>(digest), 32));
  auto info = cert_info(c->chain);
  REQUIRE(info);
  CHECK(info->dns_names == std::vector<std::string>{"tunnel.example.com"});
  // A stand-in certificate has no such extension.
  auto plain = self_signed("tunnel.example.com", std::nullopt);
  REQUIRE(plain);
  auto px = parse_cert(plain->chain);
  CHECK(X509_get_ext_by_OBJ(px.get(), oid.get(), -1) < 0);
}

TEST_CASE("cert_info and cert_usable: names, validity window, key match") {
  auto c = self_signed("a.example.com", std::nullopt);
  REQUIRE(c);
  auto info = cert_info(c->chain);
  REQUIRE(info);
  int64_t now = int64_t(std::time(nullptr));
  CHECK(info->not_before <= now);
  CHECK(info->not_after > now + 6 * 86400);
  CHECK(info->not_after - info->not_before == 7 * 86400 + 3600);
  CHECK_FALSE(info->serial_hex.empty());
  CHECK(cert_usable(*c, {"a.example.com"}, now));
  CHECK_FALSE(cert_usable(*c, {"a.example.com", "b.example.com"}, now));
  CHECK_FALSE(cert_usable(*c, {"a.example.com"}, info->not_after));
  CHECK_FALSE(cert_usable(*c, {"a.example.com"}, info->not_before - 1));
  auto other = self_signed("a.example.com", std::nullopt);
  CHECK_FALSE(cert_usable(CertPem{c->chain, other->key}, {"a.example.com"}, now));
  CHECK_FALSE(cert_info("garbage"));
  CHECK_FALSE(cert_usable(CertPem{"garbage", c->key}, {"a.example.com"}, now));
}

TEST_CASE("renewal_time: two thirds into the lifetime, jitter earlier by at most a twentieth (max a day)") {
  const int64_t nb = 1'700'000'000, day = 86400;
  CHECK(renewal_time(nb, nb + 90 * day, 0) == nb + 60 * day);
  for (uint64_t r : {1ull, 12345ull, ~0ull}) {
    int64_t t = renewal_time(nb, nb + 90 * day, r);
    CHECK(t <= nb + 60 * day);
    CHECK(t >= nb + 59 * day);
  }
  // A 60-second certificate renews between 37 and 40 seconds in.
  CHECK(renewal_time(nb, nb + 60, 0) == nb + 40);
  CHECK(renewal_time(nb, nb + 60, 3) == nb + 37);
  CHECK(renewal_time(nb, nb + 60, 4) == nb + 40);
  CHECK(renewal_time(nb, nb, 7) == nb);  // nonsense lifetime: renew now
}

TEST_CASE("retry_delay: exponential from 10 s, capped at an hour (+25% jitter), never past latest") {
  CHECK(retry_delay(0, 0) == 10);
  CHECK(retry_delay(1, 0) == 20);
  CHECK(retry_delay(3, 0) == 80);
  CHECK(retry_delay(20, 0) == 3600);
  CHECK(retry_delay(100, 0) == 3600);
  CHECK(retry_delay(0, 2) == 12);
  CHECK(retry_delay(0, 3) == 10);
  for (uint64_t r = 0; r < 1000; r += 37) CHECK(retry_delay(30, r) <= 4500);
  CHECK(retry_delay(10, 5, 7) == 7);
  CHECK(retry_delay(10, 5, -1) == 3600 + 5);
}
