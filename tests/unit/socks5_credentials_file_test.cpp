#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "socks5/credentials_file.hpp"

using namespace alk;

TEST_CASE("credentials file: first line is USER:PASS") {
  auto a = socks5::parse_credentials_file("alice:s3:cret\n", 0600, "/f");
  REQUIRE(a.ok());
  CHECK(a->user == "alice");
  CHECK(a->pass == "s3:cret");
  auto b = socks5::parse_credentials_file("bob:pw\r\nignored:line\n", 0640, "/f");
  REQUIRE(b.ok());
  CHECK(b->pass == "pw");
  auto c = socks5::parse_credentials_file("carol:no-newline", 0400, "/f");
  REQUIRE(c.ok());
  CHECK(c->pass == "no-newline");
}

TEST_CASE("credentials file: refused when other users can read or write it") {
  for (unsigned mode : {0644u, 0602u, 0601u, 0777u}) {
    auto r = socks5::parse_credentials_file("alice:secret\n", mode | S_IFREG, "/etc/alknet/auth");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == EACCES);
    CHECK(r.error().what.find("chmod o= /etc/alknet/auth") != std::string::npos);
    CHECK(r.error().what.find("secret") == std::string::npos);
  }
}

TEST_CASE("credentials file: malformed contents name the file, never the password") {
  auto empty = socks5::parse_credentials_file("", 0600, "/f");
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error().what == "no USER:PASS on the first line of /f");
  CHECK_FALSE(socks5::parse_credentials_file("\nalice:pw\n", 0600, "/f").ok());
  auto nocolon = socks5::parse_credentials_file("topsecret\n", 0600, "/f");
  REQUIRE_FALSE(nocolon.ok());
  CHECK(nocolon.error().what.find("topsecret") == std::string::npos);
  CHECK(nocolon.error().what.find("/f") != std::string::npos);
  CHECK_FALSE(socks5::parse_credentials_file(":topsecret\n", 0600, "/f").ok());
  CHECK_FALSE(socks5::parse_credentials_file(std::string(300, 'u') + ":p\n", 0600, "/f").ok());
}

TEST_CASE("credentials file: loaded from disk with its real mode") {
  char path[] = "/tmp/alknet-cred-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, "dave:pw\n", 8) == 8);
  close(fd);
  REQUIRE(chmod(path, 0600) == 0);
  auto ok = socks5::load_credentials_file(path);
  REQUIRE(ok.ok());
  CHECK(ok->user == "dave");
  REQUIRE(chmod(path, 0604) == 0);
  auto open_to_all = socks5::load_credentials_file(path);
  CHECK_FALSE(open_to_all.ok());
  unlink(path);
  auto missing = socks5::load_credentials_file(path);
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().what.find("cannot read --socks5-auth-file") != std::string::npos);
  auto dir = socks5::load_credentials_file("/tmp");
  CHECK_FALSE(dir.ok());
}
