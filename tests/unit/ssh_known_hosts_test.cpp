// known_hosts decisions against files written by ssh-keygen (plain and `ssh-keygen -H` hashed).
#include <catch2/catch.hpp>

#include <cstdlib>

#include "ssh/known_hosts.hpp"

using namespace alk::ssh;

namespace {

std::string fixture(const std::string& name) {
  const char* dir = std::getenv("ALKNET_TEST_DATA");
  std::string err;
  auto text = read_small_file(std::string(dir ? dir : "tests/unit/data") + "/ssh/" + name, 1 << 16, &err);
  INFO(err);
  REQUIRE(text);
  return *text;
}

PublicKey pub(const std::string& name) {
  auto k = parse_public_key_line(fixture(name));
  REQUIRE(k);
  return *k;
}

// The fixture lists host.test and 10.0.0.7 (port 22) with host_ed25519, and [host.test]:2222
// with user_ecdsa.
void check_fixture_verdicts(const std::string& file) {
  auto host = pub("host_ed25519.pub"), ecdsa = pub("user_ecdsa.pub"), other = pub("user_ed25519.pub");
  CHECK(check_known_host(file, "host.test", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "HOST.test", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "10.0.0.7", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "host.test", 22, other) == HostKeyStatus::Changed);
  CHECK(check_known_host(file, "10.0.0.7", 22, other) == HostKeyStatus::Changed);
  CHECK(check_known_host(file, "host.test", 2222, ecdsa) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "host.test", 2222, host) == HostKeyStatus::Changed);
  CHECK(check_known_host(file, "host.test", 2223, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host(file, "other.test", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host(file, "10.0.0.8", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host(file, "host.tes", 22, host) == HostKeyStatus::Unknown);
}

}  // namespace

TEST_CASE("known_hosts_host_token adds brackets for non-default ports", "[ssh][known_hosts]") {
  CHECK(known_hosts_host_token("host.test", 22) == "host.test");
  CHECK(known_hosts_host_token("host.test", 0) == "host.test");
  CHECK(known_hosts_host_token("host.test", 2222) == "[host.test]:2222");
  CHECK(known_hosts_host_token("Host.TEST", 443) == "[host.test]:443");
  CHECK(known_hosts_host_token("2001:db8::1", 22) == "2001:db8::1");
  CHECK(known_hosts_host_token("2001:db8::1", 8022) == "[2001:db8::1]:8022");
}

TEST_CASE("check_known_host: plain file written for ssh(1)", "[ssh][known_hosts]") {
  check_fixture_verdicts(fixture("known_hosts"));
}

TEST_CASE("check_known_host: the same file hashed by ssh-keygen -H", "[ssh][known_hosts]") {
  auto hashed = fixture("known_hosts_hashed");
  CHECK(hashed.find("host.test") == std::string::npos);
  check_fixture_verdicts(hashed);
}

TEST_CASE("hash_known_hosts_token reproduces ssh-keygen -H", "[ssh][known_hosts]") {
  auto hashed = fixture("known_hosts_hashed");
  // Third line is "[host.test]:2222" hashed.
  std::vector<std::string> fields;
  size_t pos = 0;
  for (int i = 0; i < 3; ++i) {
    auto nl = hashed.find('\n', pos);
    fields.push_back(hashed.substr(pos, hashed.find(' ', pos) - pos));
    pos = nl + 1;
  }
  auto salt_b64 = fields[2].substr(3, fields[2].find('|', 3) - 3);
  auto salt = base64_decode(salt_b64);
  REQUIRE(salt);
  CHECK(salt->size() == 20);
  CHECK(hash_known_hosts_token("[host.test]:2222", *salt) == fields[2]);
  CHECK(hash_known_hosts_token("host.test", *salt) != fields[2]);
  // The first two lines are host.test and 10.0.0.7, each with its own salt.
  auto salt0 = base64_decode(fields[0].substr(3, fields[0].find('|', 3) - 3));
  REQUIRE(salt0);
  CHECK(hash_known_hosts_token("host.test", *salt0) == fields[0]);
}

TEST_CASE("check_known_host: wildcards and negation in host patterns", "[ssh][known_hosts]") {
  auto host = pub("host_ed25519.pub"), other = pub("user_ed25519.pub");
  std::string file = "*.test,!bad.test " + public_key_line(host) + "\n";
  CHECK(check_known_host(file, "a.test", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "a.test", 22, other) == HostKeyStatus::Changed);
  CHECK(check_known_host(file, "bad.test", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host(file, "a.test", 2222, host) == HostKeyStatus::Unknown);  // "[a.test]:2222" isn't *.test
  CHECK(check_known_host("[*.test]:* " + public_key_line(host), "a.test", 2222, host) == HostKeyStatus::Known);
  CHECK(check_known_host("10.0.0.? " + public_key_line(host), "10.0.0.5", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host("10.0.0.? " + public_key_line(host), "10.0.0.50", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host("HOST.TEST " + public_key_line(host), "host.test", 22, host) == HostKeyStatus::Known);
}

TEST_CASE("check_known_host: any other key type for the host counts as Changed", "[ssh][known_hosts]") {
  // Documented rule: stricter than ssh(1), which would only warn about a new key type.
  auto ed = pub("host_ed25519.pub"), ecdsa = pub("user_ecdsa.pub");
  std::string file = "host.test " + public_key_line(ecdsa) + "\n";
  CHECK(check_known_host(file, "host.test", 22, ed) == HostKeyStatus::Changed);
  // ...but any line listing the presented key makes it Known, whatever else is listed.
  file += "host.test " + public_key_line(ed) + "\n";
  CHECK(check_known_host(file, "host.test", 22, ed) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "host.test", 22, ecdsa) == HostKeyStatus::Known);
}

TEST_CASE("check_known_host: @revoked and @cert-authority markers", "[ssh][known_hosts]") {
  auto host = pub("host_ed25519.pub"), ca = pub("ca_ed25519.pub");
  std::string file = "host.test " + public_key_line(host) + "\n@revoked * " + public_key_line(host) + "\n";
  CHECK(check_known_host(file, "host.test", 22, host) == HostKeyStatus::Revoked);
  CHECK(check_known_host(file, "elsewhere", 22, host) == HostKeyStatus::Revoked);
  // A revoked line for another key is not evidence about this host.
  CHECK(check_known_host("@revoked * " + public_key_line(ca), "host.test", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host("@revoked other.test " + public_key_line(host), "host.test", 22, host) ==
        HostKeyStatus::Unknown);
  // Host CAs are not supported: their lines are skipped, not treated as keys.
  std::string ca_file = "@cert-authority *.test " + public_key_line(ca) + "\n";
  CHECK(check_known_host(ca_file, "host.test", 22, ca) == HostKeyStatus::Unknown);
  CHECK(check_known_host(ca_file, "host.test", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host("@unknown-marker host.test " + public_key_line(host), "host.test", 22, host) ==
        HostKeyStatus::Unknown);
}

TEST_CASE("check_known_host: comments, blank and broken lines are skipped", "[ssh][known_hosts]") {
  auto host = pub("host_ed25519.pub"), other = pub("user_ed25519.pub");
  std::string file = "# comment\n\n   \n\thost.test\n host.test ssh-ed25519\nhost.test ssh-ed25519 !!!\n"
                     "host.test ssh-rsa " + base64_encode(other.blob) + "\n"  // type/blob mismatch
                     "|1|bm90|bm90 " + public_key_line(other) + "\n"          // corrupt hash
                     "|1|broken " + public_key_line(other) + "\n" +
                     "#host.test " + public_key_line(other) + "\n" +
                     "   host.test\t" + public_key_line(host) + " trailing comment\r\n";
  CHECK(check_known_host(file, "host.test", 22, host) == HostKeyStatus::Known);
  CHECK(check_known_host(file, "host.test", 22, other) == HostKeyStatus::Changed);
  CHECK(check_known_host("", "host.test", 22, host) == HostKeyStatus::Unknown);
  CHECK(check_known_host("\n\n\n", "host.test", 22, host) == HostKeyStatus::Unknown);
}

TEST_CASE("known_hosts_line round-trips through check_known_host and ssh-keygen's format", "[ssh][known_hosts]") {
  auto host = pub("host_ed25519.pub"), ecdsa = pub("user_ecdsa.pub");
  auto line = known_hosts_line("Host.Test", 22, host);
  CHECK(line == "host.test " + public_key_line(PublicKey{host.type, host.blob, ""}) + "\n");
  CHECK(check_known_host(line, "host.test", 22, host) == HostKeyStatus::Known);
  auto line2 = known_hosts_line("host.test", 2222, ecdsa);
  CHECK(line2.starts_with("[host.test]:2222 ecdsa-sha2-nistp256 AAAA"));
  CHECK(check_known_host(line2, "host.test", 2222, ecdsa) == HostKeyStatus::Known);
  CHECK(check_known_host(line2, "host.test", 22, ecdsa) == HostKeyStatus::Unknown);
  // Byte-for-byte what the fixture (written with ssh-keygen's output) holds.
  auto fixture_text = fixture("known_hosts");
  CHECK(fixture_text.find("[host.test]:2222 " + public_key_line(PublicKey{ecdsa.type, ecdsa.blob, ""}) + "\n") !=
        std::string::npos);
  CHECK(fixture_text.ends_with(line2));
}
