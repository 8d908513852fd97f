// server/policy: who may log in (authorized keys, options, certificates) and where they may go.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "runtime/result.hpp"
#include "server/policy.hpp"

using namespace alk;

namespace {

std::string data(const std::string &name) {
  const char *dir = std::getenv("ALKNET_TEST_DATA");
  std::string err;
  auto t = ssh::read_small_file(std::string(dir ? dir : "tests/unit/data") + "/ssh/" + name, 1 << 20, &err);
  REQUIRE(t);
  return *t;
}

ssh::PublicKey key(const std::string &file) {
  auto k = ssh::parse_public_key_line(data(file));
  REQUIRE(k);
  return *k;
}

constexpr uint64_t kNow = 1767225600;  // 2026-01-01

}  // namespace

TEST_CASE("plain keys: exact match, options, refusals") {
  auto user = key("user_ed25519.pub");
  auto other = key("user_ecdsa.pub");
  SECTION("exact key accepted for any user name, fingerprint as ssh-keygen prints it") {
    auto p = server::AuthPolicy::from_text(data("user_ed25519.pub"), {});
    auto d = p.check("alknet", user, "127.0.0.1", kNow);
    CHECK(d.accept);
    CHECK(d.grant.port_forwarding);
    CHECK(d.grant.permit_open.empty());
    CHECK(d.fingerprint == ssh::fingerprint_sha256(user.blob));
    CHECK_FALSE(p.check("alknet", other, "127.0.0.1", kNow).accept);
  }
  SECTION("from=") {
    auto p = server::AuthPolicy::from_text("from=\"10.0.0.0/8,!10.1.2.3\" " + data("user_ed25519.pub"), {});
    CHECK(p.check("alknet", user, "10.4.5.6", kNow).accept);
    CHECK_FALSE(p.check("alknet", user, "10.1.2.3", kNow).accept);
    CHECK_FALSE(p.check("alknet", user, "192.168.1.1", kNow).accept);
  }
  SECTION("no-port-forwarding and permitopen= become the grant") {
    auto p = server::AuthPolicy::from_text("no-port-forwarding " + data("user_ed25519.pub"), {});
    auto d = p.check("alknet", user, "127.0.0.1", kNow);
    REQUIRE(d.accept);
    CHECK_FALSE(d.grant.port_forwarding);
    auto q = server::AuthPolicy::from_text("permitopen=\"db.internal:5432\" " + data("user_ed25519.pub"), {});
    auto e = q.check("alknet", user, "127.0.0.1", kNow);
    REQUIRE(e.accept);
    REQUIRE(e.grant.permit_open.size() == 1);
    CHECK(server::check_destination("db.internal", 5432, e.grant, {}) == server::DestVerdict::Allowed);
    CHECK(server::check_destination("db.internal", 5433, e.grant, {}) == server::DestVerdict::NotAllowed);
  }
  SECTION("expiry-time") {
    auto p = server::AuthPolicy::from_text("expiry-time=\"20250101\" " + data("user_ed25519.pub"), {});
    CHECK_FALSE(p.check("alknet", user, "127.0.0.1", kNow).accept);
  }
  SECTION("a cert-authority line does not authorize the CA key itself") {
    auto p = server::AuthPolicy::from_text("cert-authority " + data("user_ed25519.pub"), {});
    CHECK_FALSE(p.check("alknet", user, "127.0.0.1", kNow).accept);
  }
}

TEST_CASE("certificates: each refusal reason") {
  auto ca = key("ca_ed25519.pub");
  auto by_flag = server::AuthPolicy::from_text("", {ca});
  auto by_line = server::AuthPolicy::from_text("cert-authority " + data("ca_ed25519.pub"), {});
  auto plain_fp = ssh::fingerprint_sha256(key("user_ed25519.pub").blob);
  for (auto *p : {&by_flag, &by_line}) {
    auto valid = p->check("alknet", key("user_valid.cert.pub"), "127.0.0.1", kNow);
    CHECK(valid.accept);
    CHECK(valid.fingerprint == plain_fp);  // the certified key's fingerprint, as sshd logs it
    CHECK(valid.grant.port_forwarding);
    CHECK(p->check("alice", key("user_valid.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("bob", key("user_valid.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_expired.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_future.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_wrong_princ.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK(p->check("alknet", key("user_source_addr.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_source_addr.cert.pub"), "10.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_other_ca.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p->check("alknet", key("user_verify_req.cert.pub"), "127.0.0.1", kNow).accept);
    auto nopf = p->check("alknet", key("user_no_pf.cert.pub"), "127.0.0.1", kNow);
    CHECK(nopf.accept);
    CHECK_FALSE(nopf.grant.port_forwarding);
  }
  SECTION("a certificate is not a plain key: its key in authorized_keys does not accept the cert blob by itself") {
    auto p = server::AuthPolicy::from_text(data("user_ed25519.pub"), {});
    CHECK_FALSE(p.check("alknet", key("user_valid.cert.pub"), "127.0.0.1", kNow).accept);
  }
  SECTION("principals= on a cert-authority line replaces the user name") {
    auto p = server::AuthPolicy::from_text("cert-authority,principals=\"bob\" " + data("ca_ed25519.pub"), {});
    CHECK(p.check("alknet", key("user_wrong_princ.cert.pub"), "127.0.0.1", kNow).accept);
    CHECK_FALSE(p.check("alknet", key("user_valid.cert.pub"), "127.0.0.1", kNow).accept);
  }
  SECTION("from= on a cert-authority line") {
    auto p = server::AuthPolicy::from_text("cert-authority,from=\"192.0.2.0/24\" " + data("ca_ed25519.pub"), {});
    CHECK(p.check("alknet", key("user_valid.cert.pub"), "192.0.2.9", kNow).accept);
    CHECK_FALSE(p.check("alknet", key("user_valid.cert.pub"), "127.0.0.1", kNow).accept);
  }
}

TEST_CASE("destinations") {
  server::Grant any;
  CHECK(server::check_destination("example.com", 443, any, {}) == server::DestVerdict::Allowed);
  CHECK(server::check_destination("alknet-udp", 0, any, {}) == server::DestVerdict::Reserved);
  CHECK(server::check_destination("alknet-control", 1, any, {}) == server::DestVerdict::Reserved);
  CHECK(server::check_destination("169.254.169.254", 80, any, {}) == server::DestVerdict::NotAllowed);
  CHECK(server::check_destination("fe80::1", 80, any, {}) == server::DestVerdict::NotAllowed);
  CHECK(server::check_destination("", 80, any, {}) == server::DestVerdict::NotAllowed);
  server::Grant none;
  none.port_forwarding = false;
  CHECK(server::check_destination("example.com", 443, none, {}) == server::DestVerdict::NotAllowed);
  std::string err;
  std::vector<net::PermitOpen> only{*net::parse_permit_open("*.internal:5432", &err)};
  CHECK(server::check_destination("db.internal", 5432, any, only) == server::DestVerdict::Allowed);
  CHECK(server::check_destination("example.com", 5432, any, only) == server::DestVerdict::NotAllowed);
}

TEST_CASE("dial errors map to SOCKS REP codes") {
  CHECK(server::dial_error_to_rep(0) == 0);
  CHECK(server::dial_error_to_rep(rt::kErrNotAllowed) == 2);
  CHECK(server::dial_error_to_rep(ENETUNREACH) == 3);
  CHECK(server::dial_error_to_rep(EHOSTUNREACH) == 4);
  CHECK(server::dial_error_to_rep(rt::kErrDnsNotFound) == 4);
  CHECK(server::dial_error_to_rep(ECONNREFUSED) == 5);
  CHECK(server::dial_error_to_rep(ETIMEDOUT) == 6);
  CHECK(server::dial_error_to_rep(EPROTO) == 1);
}

TEST_CASE("log_safe keeps one token per field") {
  CHECK(server::log_safe("alknet") == "alknet");
  CHECK(server::log_safe("") == "-");
  CHECK(server::log_safe("a b=c\nremote_addr=1.2.3.4") == "a?b?c?remote_addr?1.2.3.4");
  CHECK(server::log_safe(std::string(200, 'x')).size() == 64);
}

TEST_CASE("load: errors a user can act on") {
  auto r = server::AuthPolicy::load("/nonexistent/authorized_keys", {});
  CHECK_FALSE(r);
  auto none = server::AuthPolicy::load("", {});
  CHECK_FALSE(none);
}
