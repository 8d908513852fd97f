// Keys and certificates against fixtures made by ssh-keygen (tests/unit/data/ssh/gen.sh); the
// expected strings below are what `ssh-keygen -l -f` / `ssh-keygen -L -f` printed for them
// (tests/unit/data/ssh/fingerprints.txt, certs.txt).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <limits>

#include <openssl/curve25519.h>

#include "ssh/certificate.hpp"
#include "ssh/keys.hpp"

using namespace alk::ssh;

namespace {

std::string data_path(const std::string& name) {
  const char* dir = std::getenv("ALKNET_TEST_DATA");
  return std::string(dir ? dir : "tests/unit/data") + "/ssh/" + name;
}

std::string fixture(const std::string& name) {
  std::string err;
  auto text = read_small_file(data_path(name), 1 << 20, &err);
  INFO(err);
  REQUIRE(text);
  return *text;
}

PublicKey pub(const std::string& name) {
  auto k = parse_public_key_line(fixture(name));
  REQUIRE(k);
  return *k;
}

constexpr const char* kUserFp = "SHA256:Wyx/+3JTStZBSiWL5sKQTaC9eHZtEKk2MDF4d2TjX4s";
constexpr const char* kCaFp = "SHA256:N2vz4VBCKjwBP4gETGfnrrFSuHgZvLPaFRCJPEz9ye8";
constexpr uint64_t k2020 = 1577836800;        // 2020-01-01T00:00:00Z
constexpr uint64_t k20991231 = 4102358400;    // 2099-12-31T00:00:00Z
constexpr uint64_t kNow = 1795000000;         // 2026-11-18, inside every "valid" window

struct Loaded {
  std::vector<uint8_t> blob;
  Certificate cert;
};

Loaded cert(const std::string& name) {
  auto k = pub(name);
  std::string err;
  auto c = parse_certificate(k.blob, &err);
  INFO(err);
  REQUIRE(c);
  return {k.blob, *c};
}

CertVerdict verdict(const Loaded& l, const std::vector<PublicKey>& cas, std::string_view ip = "127.0.0.1",
                    uint64_t now = kNow, std::string_view user = "alknet") {
  return check_user_certificate(CertPolicyInput{l.blob, &cas, user, ip, now}, l.cert);
}

std::vector<uint8_t> bytes(std::string_view s) { return {s.begin(), s.end()}; }

// Certificates ssh-keygen refuses to make (empty principals, repeated or unknown critical options,
// bad signature algorithms), signed by a throwaway Ed25519 CA so only the tested field is wrong.
struct TestCa {
  uint8_t pk[32], sk[64];
  PublicKey key;
  TestCa() {
    ED25519_keypair(pk, sk);
    wire_put_string(key.blob, "ssh-ed25519");
    wire_put_string(key.blob, std::span<const uint8_t>(pk));
    key.type = "ssh-ed25519";
  }
};

struct CertSpec {
  uint32_t cert_type = kUserCert;
  std::vector<std::string> principals{"alknet"};
  uint64_t valid_after = 0, valid_before = UINT64_MAX;
  std::vector<std::pair<std::string, std::string>> critical, extensions{{"permit-port-forwarding", ""}};
  std::string sig_alg = "ssh-ed25519";
};

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  wire_put_u32(out, uint32_t(v >> 32));
  wire_put_u32(out, uint32_t(v));
}

std::vector<uint8_t> pack_options(const std::vector<std::pair<std::string, std::string>>& opts) {
  std::vector<uint8_t> out;
  for (auto& [name, value] : opts) {
    wire_put_string(out, name);
    std::vector<uint8_t> data;
    if (!value.empty()) wire_put_string(data, value);
    wire_put_string(out, std::span<const uint8_t>(data));
  }
  return out;
}

Loaded build_cert(const TestCa& ca, const CertSpec& spec) {
  std::vector<uint8_t> b, tmp;
  wire_put_string(b, "ssh-ed25519-cert-v01@openssh.com");
  wire_put_string(b, std::span<const uint8_t>(std::vector<uint8_t>(32, 7)));
  wire_put_string(b, std::span<const uint8_t>(std::vector<uint8_t>(32, 9)));
  put_u64(b, 42);
  wire_put_u32(b, spec.cert_type);
  wire_put_string(b, "built");
  for (auto& p : spec.principals) wire_put_string(tmp, p);
  wire_put_string(b, std::span<const uint8_t>(tmp));
  put_u64(b, spec.valid_after);
  put_u64(b, spec.valid_before);
  wire_put_string(b, std::span<const uint8_t>(pack_options(spec.critical)));
  wire_put_string(b, std::span<const uint8_t>(pack_options(spec.extensions)));
  wire_put_string(b, "");
  wire_put_string(b, std::span<const uint8_t>(ca.key.blob));
  uint8_t sig[64];
  REQUIRE(ED25519_sign(sig, b.data(), b.size(), ca.sk) == 1);
  std::vector<uint8_t> sigblob;
  wire_put_string(sigblob, spec.sig_alg);
  wire_put_string(sigblob, std::span<const uint8_t>(sig));
  wire_put_string(b, std::span<const uint8_t>(sigblob));
  std::string err;
  auto c = parse_certificate(b, &err);
  INFO(err);
  REQUIRE(c);
  return {b, *c};
}

}  // namespace

TEST_CASE("sniff_private_key tells OpenSSH keys from PEM keys", "[ssh][keys]") {
  CHECK(sniff_private_key(fixture("user_ed25519")) == PrivateKeyFormat::OpenSSH);
  CHECK(sniff_private_key(fixture("rsa_pem")) == PrivateKeyFormat::Pem);
  CHECK(sniff_private_key(fixture("user_ed25519.pub")) == PrivateKeyFormat::Unknown);
  CHECK(sniff_private_key("-----BEGIN EC PRIVATE KEY-----\nAAAA\n") == PrivateKeyFormat::Pem);
  CHECK(sniff_private_key("-----BEGIN DSA PRIVATE KEY-----\n") == PrivateKeyFormat::Pem);
  CHECK(sniff_private_key("-----BEGIN ENCRYPTED PRIVATE KEY-----\n") == PrivateKeyFormat::Pem);
  CHECK(sniff_private_key("-----BEGIN PRIVATE KEY-----\n") == PrivateKeyFormat::Pem);
  CHECK(sniff_private_key("\n  \xEF\xBB\xBF-----BEGIN OPENSSH PRIVATE KEY-----") == PrivateKeyFormat::Unknown);
  CHECK(sniff_private_key("\xEF\xBB\xBF\n-----BEGIN OPENSSH PRIVATE KEY-----\n") == PrivateKeyFormat::OpenSSH);
  CHECK(sniff_private_key("  \n-----BEGIN OPENSSH PRIVATE KEY-----\n") == PrivateKeyFormat::OpenSSH);
  CHECK(sniff_private_key("-----BEGIN CERTIFICATE-----\n") == PrivateKeyFormat::Unknown);
  CHECK(sniff_private_key("-----BEGIN OPENSSH PRIVATE KEY") == PrivateKeyFormat::Unknown);
  CHECK(sniff_private_key("") == PrivateKeyFormat::Unknown);
}

TEST_CASE("parse_public_key_line reads an Ed25519 .pub file", "[ssh][keys]") {
  auto k = pub("user_ed25519.pub");
  CHECK(k.type == "ssh-ed25519");
  CHECK(k.comment == "alice@test");
  CHECK(k.blob.size() == 4 + 11 + 4 + 32);
  CHECK(fingerprint_sha256(k.blob) == kUserFp);
  auto raw = ed25519_key_bytes(k.blob);
  REQUIRE(raw);
  CHECK(raw->size() == 32);
  CHECK(public_key_line(k) + "\n" == fixture("user_ed25519.pub"));
}

TEST_CASE("fingerprint_sha256 equals ssh-keygen -l for every key type", "[ssh][keys]") {
  CHECK(fingerprint_sha256(pub("ca_ed25519.pub").blob) == kCaFp);
  CHECK(fingerprint_sha256(pub("host_ed25519.pub").blob) == "SHA256:Z1Bi1xObocGMo67dQZ336ldxxjIz4M/6yylnGOIwjtE");
  CHECK(fingerprint_sha256(pub("other_ca_ed25519.pub").blob) == "SHA256:+CFvRD8UvlIxIxmfaazWQWPNaLlSeRHSeapvO0R0S9Q");
  auto rsa = pub("rsa_ca.pub");
  CHECK(rsa.type == "ssh-rsa");
  CHECK(fingerprint_sha256(rsa.blob) == "SHA256:PoqUdlB34fAuwOKwAO1XQ9bH7wq2BhrjvfASWXBHLVA");
  CHECK(fingerprint_sha256(pub("rsa_pem.pub").blob) == "SHA256:l0gVXbh2RmPtbcWpODee2dxVNoLPYir56wKRiH8sZp0");
  auto ecdsa = pub("user_ecdsa.pub");
  CHECK(ecdsa.type == "ecdsa-sha2-nistp256");
  CHECK(ecdsa.comment == "ecdsa@test");
  CHECK(fingerprint_sha256(ecdsa.blob) == "SHA256:mIToOVtJxIHvwjnx/k2FR7jKQlw8mfzflJJJoHzCVP8");
  // A certificate line parses as a key too (its fingerprint is of the whole cert blob, unlike -l).
  auto c = pub("user_valid.cert.pub");
  CHECK(c.type == "ssh-ed25519-cert-v01@openssh.com");
  CHECK(c.comment == "alice@test");
  CHECK(fingerprint_sha256({}) == "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
}

TEST_CASE("parse_public_key_line refuses malformed lines", "[ssh][keys]") {
  const std::string good = fixture("user_ed25519.pub");
  const std::string b64 = good.substr(12, good.find(' ', 12) - 12);
  CHECK(parse_public_key_line("ssh-ed25519 " + b64));
  CHECK(parse_public_key_line("  ssh-ed25519\t" + b64 + "  two words \r\n")->comment == "two words");
  CHECK_FALSE(parse_public_key_line("ssh-rsa " + b64 + " wrong type"));     // blob says ssh-ed25519
  CHECK_FALSE(parse_public_key_line("ssh-foo " + b64));                     // unknown type
  CHECK_FALSE(parse_public_key_line("ssh-ed25519"));                        // no blob
  CHECK_FALSE(parse_public_key_line("ssh-ed25519 !!!!"));                   // bad base64
  CHECK_FALSE(parse_public_key_line("ssh-ed25519 " + b64.substr(0, 20)));   // truncated blob
  CHECK_FALSE(parse_public_key_line(""));
  CHECK_FALSE(parse_public_key_line("AAAAC3NzaC1lZDI1NTE5 ssh-ed25519"));
  // A blob that is only a type string carries no key.
  std::vector<uint8_t> only_type;
  wire_put_string(only_type, "ssh-ed25519");
  CHECK_FALSE(parse_public_key_line("ssh-ed25519 " + base64_encode(only_type)));
  CHECK_FALSE(ed25519_key_bytes(only_type));
  CHECK_FALSE(ed25519_key_bytes(pub("rsa_ca.pub").blob));
}

TEST_CASE("base64 round-trips and rejects junk", "[ssh][keys]") {
  CHECK(base64_encode(bytes("foobar")) == "Zm9vYmFy");
  CHECK(base64_encode(bytes("fooba")) == "Zm9vYmE=");
  CHECK(base64_encode(bytes("")) == "");
  CHECK(base64_decode("Zm9vYmE=") == bytes("fooba"));
  CHECK(base64_decode("Zm9vYmE") == bytes("fooba"));  // padding stripped by some tools
  CHECK(base64_decode("Zm9vYg") == bytes("foob"));
  CHECK(base64_decode("") == bytes(""));
  CHECK_FALSE(base64_decode("Zm9vY"));      // 5 chars can never be base64
  CHECK_FALSE(base64_decode("Zm9v YmFy"));  // whitespace
  CHECK_FALSE(base64_decode("Zm9v*mFy"));
  std::vector<uint8_t> all(256);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint8_t(i);
  CHECK(base64_decode(base64_encode(all)) == all);
}

TEST_CASE("blobs_equal_ct compares content and length", "[ssh][keys]") {
  auto a = bytes("abcdef"), b = bytes("abcdef"), c = bytes("abcdeg"), d = bytes("abcde");
  CHECK(blobs_equal_ct(a, b));
  CHECK_FALSE(blobs_equal_ct(a, c));
  CHECK_FALSE(blobs_equal_ct(a, d));
  CHECK(blobs_equal_ct({}, {}));
  CHECK(blobs_equal_ct(pub("user_ed25519.pub").blob, pub("user_ed25519.pub").blob));
  CHECK_FALSE(blobs_equal_ct(pub("user_ed25519.pub").blob, pub("ca_ed25519.pub").blob));
}

TEST_CASE("read_small_file reports errors like the CLI prints them", "[ssh][keys]") {
  std::string err;
  CHECK_FALSE(read_small_file("/nonexistent/alknet-key", 1024, &err));
  CHECK(err == "cannot read /nonexistent/alknet-key: No such file or directory");
  CHECK_FALSE(read_small_file(data_path("user_ed25519"), 100, &err));
  CHECK(err == "cannot read " + data_path("user_ed25519") + ": file larger than 100 bytes");
  CHECK_FALSE(read_small_file(data_path(""), 1024, &err));
  CHECK(err == "cannot read " + data_path("") + ": Is a directory");
  auto text = read_small_file(data_path("user_ed25519.pub"), 1024, nullptr);
  REQUIRE(text);
  CHECK(text->starts_with("ssh-ed25519 AAAA"));
}

TEST_CASE("WireReader never reads past the end", "[ssh][keys]") {
  std::vector<uint8_t> buf;
  wire_put_u32(buf, 7);
  wire_put_string(buf, "hello");
  WireReader r(buf);
  uint32_t v = 0;
  std::string s;
  REQUIRE(r.u32(v));
  CHECK(v == 7);
  REQUIRE(r.string(s));
  CHECK(s == "hello");
  CHECK(r.remaining() == 0);
  CHECK_FALSE(r.u32(v));
  CHECK_FALSE(r.ok());

  std::vector<uint8_t> lying = {0xff, 0xff, 0xff, 0xff, 'x'};
  WireReader r2(lying);
  std::span<const uint8_t> out;
  CHECK_FALSE(r2.bytes(out));
  uint64_t big = 0;
  std::vector<uint8_t> short_u64 = {1, 2, 3, 4, 5, 6, 7};
  WireReader r3(short_u64);
  CHECK_FALSE(r3.u64(big));
}

TEST_CASE("certificate fields equal ssh-keygen -L", "[ssh][cert]") {
  auto [blob, c] = cert("user_valid.cert.pub");
  CHECK(c.type == "ssh-ed25519-cert-v01@openssh.com");
  CHECK(c.cert_type == kUserCert);
  CHECK(c.serial == 1001);
  CHECK(c.key_id == "alice-valid");
  CHECK(c.principals == std::vector<std::string>{"alknet", "alice"});
  CHECK(c.valid_after == k2020);
  CHECK(c.valid_before == k20991231);
  CHECK(c.critical_options.empty());
  std::vector<std::string> ext;
  for (auto& [n, v] : c.extensions) {
    ext.push_back(n);
    CHECK(v.empty());
  }
  CHECK(ext == std::vector<std::string>{"permit-X11-forwarding", "permit-agent-forwarding", "permit-port-forwarding",
                                        "permit-pty", "permit-user-rc"});
  CHECK(c.nonce.size() == 32);
  CHECK(c.public_key.size() == 4 + 32);
  // "Public key: ED25519-CERT SHA256:..." and "Signing CA: ED25519 SHA256:..."
  CHECK(plain_key_type(c.type) == "ssh-ed25519");
  CHECK(fingerprint_sha256(plain_public_key_blob(c)) == kUserFp);
  CHECK(plain_public_key_blob(c) == pub("user_ed25519.pub").blob);
  CHECK(fingerprint_sha256(c.signature_key) == kCaFp);
  CHECK(c.signature_key == pub("ca_ed25519.pub").blob);
  CHECK(c.signed_len < blob.size());
  CHECK(c.signed_len + 4 + c.signature.size() == blob.size());
  CHECK(verify_certificate_signature(blob, c));
  CHECK(cert_permits_port_forwarding(c));
}

TEST_CASE("certificate critical options and validity forms", "[ssh][cert]") {
  auto sa = cert("user_source_addr.cert.pub").cert;
  REQUIRE(sa.critical_options.size() == 1);
  CHECK(sa.critical_options[0] == std::pair<std::string, std::string>{"source-address", "127.0.0.1/32"});
  CHECK(sa.serial == 1005);
  auto fc = cert("user_force_cmd.cert.pub").cert;
  REQUIRE(fc.critical_options.size() == 1);
  CHECK(fc.critical_options[0] == std::pair<std::string, std::string>{"force-command", "/bin/true"});
  auto vr = cert("user_verify_req.cert.pub").cert;
  REQUIRE(vr.critical_options.size() == 1);
  CHECK(vr.critical_options[0] == std::pair<std::string, std::string>{"verify-required", ""});
  auto forever = cert("user_forever.cert.pub").cert;  // "Valid: forever"
  CHECK(forever.valid_after == 0);
  CHECK(forever.valid_before == std::numeric_limits<uint64_t>::max());
  auto expired = cert("user_expired.cert.pub").cert;  // 2020-01-01 .. 2020-01-02
  CHECK(expired.valid_after == k2020);
  CHECK(expired.valid_before == k2020 + 86400);
  auto future = cert("user_future.cert.pub").cert;  // 2098-01-01 .. 2099-01-01
  CHECK(future.valid_after == 4039372800);
  CHECK(future.valid_before == 4070908800);
  auto host = cert("host_cert.cert.pub").cert;
  CHECK(host.cert_type == kHostCert);
  CHECK(host.principals == std::vector<std::string>{"host.test"});
  CHECK(host.extensions.empty());
}

TEST_CASE("no-port-forwarding certificates lack the extension", "[ssh][cert]") {
  auto l = cert("user_no_pf.cert.pub");
  CHECK_FALSE(cert_permits_port_forwarding(l.cert));
  CHECK(l.cert.extensions.size() == 4);
  CHECK(verdict(l, {pub("ca_ed25519.pub")}) == CertVerdict::Ok);  // valid, just without forwarding
  CHECK(cert_permits_port_forwarding(cert("user_valid.cert.pub").cert));
}

TEST_CASE("ECDSA user certificates parse and verify against an Ed25519 CA", "[ssh][cert]") {
  auto l = cert("user_ecdsa.cert.pub");
  CHECK(l.cert.type == "ecdsa-sha2-nistp256-cert-v01@openssh.com");
  CHECK(plain_key_type(l.cert.type) == "ecdsa-sha2-nistp256");
  CHECK(fingerprint_sha256(plain_public_key_blob(l.cert)) == "SHA256:mIToOVtJxIHvwjnx/k2FR7jKQlw8mfzflJJJoHzCVP8");
  CHECK(l.cert.key_id == "ecdsa-cert");
  CHECK(l.cert.serial == 1013);
  CHECK(verdict(l, {pub("ca_ed25519.pub")}) == CertVerdict::Ok);
  CHECK(plain_key_type("sk-ssh-ed25519-cert-v01@openssh.com") == "sk-ssh-ed25519@openssh.com");
  CHECK(plain_key_type("ssh-ed25519") == "ssh-ed25519");
}

TEST_CASE("check_user_certificate: Ok and the validity window", "[ssh][cert]") {
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  auto valid = cert("user_valid.cert.pub");
  CHECK(verdict(valid, cas) == CertVerdict::Ok);
  CHECK(verdict(valid, cas, "127.0.0.1", kNow, "alice") == CertVerdict::Ok);
  CHECK(verdict(valid, cas, "127.0.0.1", k2020) == CertVerdict::Ok);  // valid_after is inclusive
  CHECK(verdict(valid, cas, "127.0.0.1", k2020 - 1) == CertVerdict::NotYetValid);
  CHECK(verdict(valid, cas, "127.0.0.1", k20991231 - 1) == CertVerdict::Ok);
  CHECK(verdict(valid, cas, "127.0.0.1", k20991231) == CertVerdict::Expired);  // valid_before is exclusive
  CHECK(verdict(cert("user_expired.cert.pub"), cas) == CertVerdict::Expired);
  CHECK(verdict(cert("user_future.cert.pub"), cas) == CertVerdict::NotYetValid);
  CHECK(verdict(cert("user_forever.cert.pub"), cas, "::1", 0) == CertVerdict::Ok);
  CHECK(verdict(cert("user_forever.cert.pub"), cas, "::1", UINT64_MAX - 1) == CertVerdict::Ok);
}

TEST_CASE("check_user_certificate: principals", "[ssh][cert]") {
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  CHECK(verdict(cert("user_wrong_princ.cert.pub"), cas) == CertVerdict::WrongPrincipal);
  CHECK(verdict(cert("user_wrong_princ.cert.pub"), cas, "127.0.0.1", kNow, "bob") == CertVerdict::Ok);
  CHECK(verdict(cert("user_valid.cert.pub"), cas, "127.0.0.1", kNow, "root") == CertVerdict::WrongPrincipal);
  CHECK(verdict(cert("user_valid.cert.pub"), cas, "127.0.0.1", kNow, "ALKNET") == CertVerdict::WrongPrincipal);
  CHECK(verdict(cert("user_valid.cert.pub"), cas, "127.0.0.1", kNow, "") == CertVerdict::WrongPrincipal);
}

TEST_CASE("check_user_certificate: CA trust", "[ssh][cert]") {
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  auto other = cert("user_other_ca.cert.pub");
  CHECK(fingerprint_sha256(other.cert.signature_key) == "SHA256:+CFvRD8UvlIxIxmfaazWQWPNaLlSeRHSeapvO0R0S9Q");
  CHECK(verify_certificate_signature(other.blob, other.cert));  // genuinely signed, just not by us
  CHECK(verdict(other, cas) == CertVerdict::UntrustedCa);
  CHECK(verdict(other, {}) == CertVerdict::UntrustedCa);
  CHECK(verdict(other, {pub("ca_ed25519.pub"), pub("other_ca_ed25519.pub")}) == CertVerdict::Ok);
  auto valid = cert("user_valid.cert.pub");
  CHECK(check_user_certificate(CertPolicyInput{valid.blob, nullptr, "alknet", "127.0.0.1", kNow}, valid.cert) ==
        CertVerdict::UntrustedCa);
  // The user key itself is not a CA.
  CHECK(verdict(valid, {pub("user_ed25519.pub")}) == CertVerdict::UntrustedCa);
}

TEST_CASE("check_user_certificate: tampering breaks the signature", "[ssh][cert]") {
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  auto l = cert("user_wrong_princ.cert.pub");
  // Rewrite the principal "bob" into "alk" in the signed bytes: parses fine, must not verify.
  std::string as_text(l.blob.begin(), l.blob.end());
  auto at = as_text.find("bob");
  REQUIRE(at != std::string::npos);
  l.blob[at] = 'a';
  l.blob[at + 1] = 'l';
  l.blob[at + 2] = 'k';
  std::string err;
  auto tampered = parse_certificate(l.blob, &err);
  REQUIRE(tampered);
  CHECK(tampered->principals == std::vector<std::string>{"alk"});
  CHECK_FALSE(verify_certificate_signature(l.blob, *tampered, &err));
  CHECK(err == "signature does not verify");
  CHECK(check_user_certificate(CertPolicyInput{l.blob, &cas, "alk", "127.0.0.1", kNow}, *tampered) ==
        CertVerdict::BadSignature);

  // A struct edited after parsing no longer matches the signed bytes and is refused as such.
  auto v = cert("user_expired.cert.pub");
  v.cert.valid_before = k20991231;
  CHECK(verdict(v, cas) == CertVerdict::BadSignature);
  auto signature_byte = cert("user_valid.cert.pub");
  signature_byte.blob.back() ^= 1;
  auto reparsed = parse_certificate(signature_byte.blob, &err);
  REQUIRE(reparsed);
  CHECK(check_user_certificate(CertPolicyInput{signature_byte.blob, &cas, "alknet", "127.0.0.1", kNow}, *reparsed) ==
        CertVerdict::BadSignature);
}

TEST_CASE("check_user_certificate: RSA CA signatures are not verified", "[ssh][cert]") {
  auto l = cert("user_rsa_ca.cert.pub");
  auto rsa_ca = pub("rsa_ca.pub");
  CHECK(l.cert.signature_key == rsa_ca.blob);
  std::string why;
  CHECK_FALSE(verify_certificate_signature(l.blob, l.cert, &why));
  CHECK(why == "CA key type ssh-rsa not supported (only ssh-ed25519)");
  CHECK(verdict(l, {rsa_ca}) == CertVerdict::BadSignature);
}

TEST_CASE("check_user_certificate: host certificates are refused for users", "[ssh][cert]") {
  auto l = cert("host_cert.cert.pub");
  CHECK(verify_certificate_signature(l.blob, l.cert));
  CHECK(verdict(l, {pub("ca_ed25519.pub")}, "127.0.0.1", kNow, "host.test") == CertVerdict::NotUserCert);
}

TEST_CASE("check_user_certificate: critical options", "[ssh][cert]") {
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  auto sa = cert("user_source_addr.cert.pub");
  CHECK(verdict(sa, cas, "127.0.0.1") == CertVerdict::Ok);
  CHECK(verdict(sa, cas, "::ffff:127.0.0.1") == CertVerdict::Ok);
  CHECK(verdict(sa, cas, "127.0.0.2") == CertVerdict::SourceAddressMismatch);
  CHECK(verdict(sa, cas, "::1") == CertVerdict::SourceAddressMismatch);
  CHECK(verdict(sa, cas, "") == CertVerdict::SourceAddressMismatch);
  CHECK(verdict(cert("user_force_cmd.cert.pub"), cas) == CertVerdict::Ok);
  CHECK(verdict(cert("user_verify_req.cert.pub"), cas) == CertVerdict::UnknownCriticalOption);
}

TEST_CASE("parse_certificate refuses every truncation and trailing junk", "[ssh][cert]") {
  auto l = cert("user_source_addr.cert.pub");
  std::string err;
  for (size_t n = 0; n < l.blob.size(); ++n) {
    err.clear();
    CHECK_FALSE(parse_certificate(std::span(l.blob).first(n), &err));
    CHECK_FALSE(err.empty());
  }
  auto longer = l.blob;
  longer.push_back(0);
  CHECK_FALSE(parse_certificate(longer, &err));
  CHECK(err == "trailing bytes after signature");
  CHECK_FALSE(parse_certificate(pub("user_ed25519.pub").blob, &err));
  CHECK(err == "not a certificate key type");
  CHECK_FALSE(parse_certificate({}, &err));
  CHECK(err == "truncated certificate type");
  CHECK_FALSE(parse_certificate({}, nullptr));
}

TEST_CASE("parse_certificate refuses malformed inner lists and types", "[ssh][cert]") {
  auto l = cert("user_valid.cert.pub");
  std::string err;
  // cert_type lives right after the serial; serial 1001 = 0x3e9.
  std::string text(l.blob.begin(), l.blob.end());
  auto serial_at = text.find(std::string("\0\0\0\0\0\0\x03\xe9", 8));
  REQUIRE(serial_at != std::string::npos);
  auto bad_type = l.blob;
  bad_type[serial_at + 8 + 3] = 3;
  CHECK_FALSE(parse_certificate(bad_type, &err));
  CHECK(err == "unknown certificate type");

  // A principals list whose inner string length overruns the list.
  auto princ_at = text.find("alknet");
  REQUIRE(princ_at != std::string::npos);
  auto bad_list = l.blob;
  bad_list[princ_at - 1] = 200;
  CHECK_FALSE(parse_certificate(bad_list, &err));
  CHECK(err == "malformed principals");

  // Unknown certificate key types are refused, known ones mapped to their plain type.
  std::vector<uint8_t> odd;
  wire_put_string(odd, "ssh-foo-cert-v01@openssh.com");
  CHECK_FALSE(parse_certificate(odd, &err));
  CHECK(err == "unsupported certificate key type");
}

TEST_CASE("verify_certificate_signature survives a Certificate that does not match the blob", "[ssh][cert]") {
  auto l = cert("user_valid.cert.pub");
  std::string why;
  CHECK_FALSE(verify_certificate_signature(std::span(l.blob).first(10), l.cert, &why));
  CHECK(why == "certificate does not match blob");
  Certificate empty;
  CHECK_FALSE(verify_certificate_signature(l.blob, empty));
  std::vector<PublicKey> cas{pub("ca_ed25519.pub")};
  CHECK(check_user_certificate(CertPolicyInput{{}, &cas, "alknet", "127.0.0.1", kNow}, l.cert) ==
        CertVerdict::BadSignature);
}

TEST_CASE("to_string(CertVerdict) names every verdict", "[ssh][cert]") {
  std::vector<CertVerdict> all{CertVerdict::Ok,          CertVerdict::BadSignature,         CertVerdict::UntrustedCa,
                               CertVerdict::NotUserCert, CertVerdict::Expired,              CertVerdict::NotYetValid,
                               CertVerdict::WrongPrincipal, CertVerdict::SourceAddressMismatch,
                               CertVerdict::UnknownCriticalOption};
  std::vector<std::string_view> names;
  for (auto v : all) {
    auto s = to_string(v);
    CHECK_FALSE(s.empty());
    for (auto seen : names) CHECK(seen != s);
    names.push_back(s);
  }
  CHECK(to_string(CertVerdict::Ok) == "ok");
  CHECK(to_string(CertVerdict::Expired) == "certificate expired");
}

TEST_CASE("built certificates: our encoder and parser agree", "[ssh][cert]") {
  TestCa ca;
  auto l = build_cert(ca, {});
  CHECK(l.cert.serial == 42);
  CHECK(l.cert.key_id == "built");
  CHECK(l.cert.principals == std::vector<std::string>{"alknet"});
  CHECK(verify_certificate_signature(l.blob, l.cert));
  CHECK(verdict(l, {ca.key}) == CertVerdict::Ok);
  CHECK(verdict(l, {pub("ca_ed25519.pub")}) == CertVerdict::UntrustedCa);
  CHECK(cert_permits_port_forwarding(l.cert));
  CertSpec host;
  host.cert_type = kHostCert;
  CHECK(verdict(build_cert(ca, host), {ca.key}) == CertVerdict::NotUserCert);
}

TEST_CASE("built certificates: an empty principal list matches nobody", "[ssh][cert]") {
  // PROTOCOL.certkeys reads an empty list as "any principal"; sshd refuses such user certs.
  TestCa ca;
  CertSpec spec;
  spec.principals.clear();
  auto l = build_cert(ca, spec);
  CHECK(l.cert.principals.empty());
  CHECK(verdict(l, {ca.key}) == CertVerdict::WrongPrincipal);
  CHECK(verdict(l, {ca.key}, "127.0.0.1", kNow, "") == CertVerdict::WrongPrincipal);
}

TEST_CASE("built certificates: critical options fail closed", "[ssh][cert]") {
  TestCa ca;
  std::vector<PublicKey> cas{ca.key};
  CertSpec twice;
  twice.critical = {{"source-address", "10.0.0.0/8"}, {"source-address", "127.0.0.1/32"}};
  CHECK(verdict(build_cert(ca, twice), cas, "127.0.0.1") == CertVerdict::SourceAddressMismatch);
  CertSpec list;
  list.critical = {{"source-address", "10.0.0.0/8,::1,192.168.0.0/16"}};
  CHECK(verdict(build_cert(ca, list), cas, "10.9.8.7") == CertVerdict::Ok);
  CHECK(verdict(build_cert(ca, list), cas, "::1") == CertVerdict::Ok);
  CHECK(verdict(build_cert(ca, list), cas, "172.16.0.1") == CertVerdict::SourceAddressMismatch);
  CertSpec junk;
  junk.critical = {{"source-address", "10.0.0.0/8,*"}};
  CHECK(verdict(build_cert(ca, junk), cas, "10.9.8.7") == CertVerdict::SourceAddressMismatch);
  CertSpec unknown;
  unknown.critical = {{"force-command", "true"}, {"no-such-option", "x"}};
  CHECK(verdict(build_cert(ca, unknown), cas) == CertVerdict::UnknownCriticalOption);
  CertSpec ext_unknown;  // unknown *extensions* are fine: they are optional by definition
  ext_unknown.extensions = {{"permit-pty", ""}, {"vendor-thing@example.com", "v"}};
  auto e = build_cert(ca, ext_unknown);
  CHECK(verdict(e, cas) == CertVerdict::Ok);
  CHECK_FALSE(cert_permits_port_forwarding(e.cert));
  CHECK(e.cert.extensions[1] == std::pair<std::string, std::string>{"vendor-thing@example.com", "v"});
}

TEST_CASE("built certificates: signature algorithm must match the Ed25519 CA", "[ssh][cert]") {
  TestCa ca;
  CertSpec spec;
  spec.sig_alg = "rsa-sha2-512";
  auto l = build_cert(ca, spec);
  std::string why;
  CHECK_FALSE(verify_certificate_signature(l.blob, l.cert, &why));
  CHECK(why == "signature algorithm does not match the Ed25519 CA key");
  CHECK(verdict(l, {ca.key}) == CertVerdict::BadSignature);
}
