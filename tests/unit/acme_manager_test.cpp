// The ACME manager's cache: directory and file modes, the account key kept across starts, a
// usable cached certificate served without a new order, unusable ones ignored; and the
// serve-side flags that feed it.
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "acme/manager.hpp"
#include "cli/options.hpp"

using namespace alk::acme;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/alknet-acme-unit-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

unsigned mode_of(const fs::path &p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

std::string slurp(const fs::path &p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

ManagerConfig config(const fs::path &cache, std::vector<std::string> domains = {"tunnel.example.com"}) {
  ManagerConfig c;
  c.domains = std::move(domains);
  c.directory = "https://acme.test:14000/dir";
  c.cache_dir = (cache / "nested" / "acme").string();
  return c;
}

}  // namespace

TEST_CASE("Manager::open creates a 0700 cache with a 0600 account key, and keeps the key") {
  TempDir t;
  auto m = Manager::open(config(t.path));
  REQUIRE(m);
  fs::path dir = t.path / "nested" / "acme" / "acme.test_14000";
  CHECK(mode_of(t.path / "nested" / "acme") == 0700);
  CHECK(mode_of(dir) == 0700);
  CHECK(mode_of(dir / "account.key") == 0600);
  CHECK_FALSE(m.value()->current());
  CHECK(m.value()->cert_path() == (dir / "tunnel.example.com.crt").string());
  std::string key = slurp(dir / "account.key");
  auto again = Manager::open(config(t.path));
  REQUIRE(again);
  CHECK(slurp(dir / "account.key") == key);
}

TEST_CASE("Manager::open refuses a corrupt account key with its path") {
  TempDir t;
  auto cfg = config(t.path);
  REQUIRE(Manager::open(cfg));
  fs::path key = t.path / "nested" / "acme" / "acme.test_14000" / "account.key";
  std::ofstream(key) << "garbage";
  auto m = Manager::open(cfg);
  REQUIRE_FALSE(m);
  CHECK(m.error().what.find(key.string()) != std::string::npos);
}

TEST_CASE("Manager::open serves a usable cached certificate, and ignores one for other names") {
  TempDir t;
  auto cfg = config(t.path);
  REQUIRE(Manager::open(cfg));
  auto cert = self_signed("tunnel.example.com", std::nullopt);
  REQUIRE(cert);
  fs::path dir = t.path / "nested" / "acme" / "acme.test_14000";
  REQUIRE(write_private_file((dir / "tunnel.example.com.crt").string(), cert->chain));
  REQUIRE(write_private_file((dir / "tunnel.example.com.key").string(), cert->key));
  CHECK(mode_of(dir / "tunnel.example.com.key") == 0600);
  auto m = Manager::open(cfg);
  REQUIRE(m);
  REQUIRE(m.value()->current());
  CHECK(m.value()->current()->chain == cert->chain);
  // Another SAN set: the cached certificate does not cover it, so a new one will be ordered.
  auto m2 = Manager::open(config(t.path, {"tunnel.example.com", "www.example.com"}));
  REQUIRE(m2);
  CHECK_FALSE(m2.value()->current());
  // A key that does not match: not served.
  auto other = self_signed("tunnel.example.com", std::nullopt);
  REQUIRE(write_private_file((dir / "tunnel.example.com.key").string(), other->key));
  auto m3 = Manager::open(cfg);
  REQUIRE(m3);
  CHECK_FALSE(m3.value()->current());
}

TEST_CASE("Manager: a staging certificate never passes for a production one (cache per CA)") {
  TempDir t;
  auto cfg = config(t.path);
  cfg.directory = "https://acme-staging-v02.api.letsencrypt.org/directory";
  auto m = Manager::open(cfg);
  REQUIRE(m);
  CHECK(m.value()->cert_path().find("/acme-staging-v02.api.letsencrypt.org/") != std::string::npos);
  cfg.directory = "https://acme-v02.api.letsencrypt.org/directory";
  auto p = Manager::open(cfg);
  REQUIRE(p);
  CHECK(p.value()->cert_path().find("/acme-v02.api.letsencrypt.org/") != std::string::npos);
}

TEST_CASE("serve flags: --acme-ca and --acme-http-port") {
  using namespace alk::cli;
  Getenv env = [](const char *name) -> const char * { return std::string(name) == "HOME" ? "/home/u" : nullptr; };
  auto parse = [&](std::vector<std::string_view> args) { return parse_args(args, env); };
  auto r = parse({"serve", "--key", "k", "--transport", "tls", "--acme-domain", "a.example.com", "--acme-ca", "/ca.pem",
                  "--acme-http-port", "80"});
  REQUIRE(std::holds_alternative<Parsed>(r));
  const auto &s = std::get<Parsed>(r).serve;
  CHECK(s.acme_ca == "/ca.pem");
  CHECK(s.acme_http_port == 80);
  auto bad_port = parse({"serve", "--key", "k", "--transport", "tls", "--acme-domain", "a.example.com",
                         "--acme-http-port", "0"});
  REQUIRE(std::holds_alternative<std::string>(bad_port));
  CHECK(std::get<std::string>(bad_port).find("invalid port") != std::string::npos);
  auto orphan = parse({"serve", "--key", "k", "--acme-ca", "/ca.pem"});
  REQUIRE(std::holds_alternative<std::string>(orphan));
  CHECK(std::get<std::string>(orphan).find("need --acme-domain") != std::string::npos);
  CHECK(serve_help().find("--acme-ca") != std::string::npos);
  CHECK(serve_help().find("--acme-http-port") != std::string::npos);
}
