#include <catch2/catch.hpp>

#include "net/spec.hpp"

using namespace alk::net;

namespace {
std::string err_of_hp(std::string_view s, std::optional<uint16_t> def = std::nullopt, bool zero = false) {
  std::string err;
  auto r = parse_host_port(s, def, &err, zero);
  REQUIRE_FALSE(r);
  REQUIRE_FALSE(err.empty());
  return err;
}
}  // namespace

TEST_CASE("parse_host_port: names, IPv4 and ports", "[spec][hostport]") {
  std::string err;
  SECTION("host with port") {
    auto r = parse_host_port("example.com:2222", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"example.com", 2222});
  }
  SECTION("host without port takes the default") {
    auto r = parse_host_port("tunnel.example.com", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"tunnel.example.com", 22});
  }
  SECTION("IPv4 with port") {
    auto r = parse_host_port("203.0.113.7:443", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"203.0.113.7", 443});
  }
  SECTION("port bounds") {
    CHECK(parse_host_port("h:1", std::nullopt, &err)->port == 1);
    CHECK(parse_host_port("h:65535", std::nullopt, &err)->port == 65535);
    CHECK(err_of_hp("h:65536") == "invalid port \"65536\" (expected 1..65535)");
    CHECK(err_of_hp("h:70000").find("\"70000\"") != std::string::npos);
    CHECK(err_of_hp("h:0").find("invalid port") != std::string::npos);
    CHECK(parse_host_port("h:0", std::nullopt, &err, true)->port == 0);
    CHECK(err_of_hp("h:-1").find("invalid port") != std::string::npos);
    CHECK(err_of_hp("h:+1").find("invalid port") != std::string::npos);
    CHECK(err_of_hp("h:22x").find("invalid port") != std::string::npos);
    CHECK(err_of_hp("h:000022").find("invalid port") != std::string::npos);
    CHECK(err_of_hp("h:") == "missing port");
  }
  SECTION("missing port without default") {
    CHECK(err_of_hp("example.com") == "missing port (expected HOST:PORT)");
  }
  SECTION("bad hosts") {
    CHECK(err_of_hp(":22") == "missing host");
    CHECK(err_of_hp("") == "empty address");
    CHECK(err_of_hp("bad host:22", 22).find("invalid host") != std::string::npos);
    CHECK(err_of_hp("-oProxyCommand=x", 22).find("invalid host") != std::string::npos);
    CHECK(err_of_hp("1.2.3.256:22").find("invalid host") != std::string::npos);
  }
}

TEST_CASE("parse_host_port: IPv6", "[spec][hostport][ipv6]") {
  std::string err;
  SECTION("bracketed with port") {
    auto r = parse_host_port("[2001:db8::1]:8443", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"2001:db8::1", 8443});
  }
  SECTION("bracketed without port takes default") {
    auto r = parse_host_port("[::1]", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"::1", 22});
  }
  SECTION("bare IPv6 takes default and never a port") {
    auto r = parse_host_port("::1", 22, &err);
    REQUIRE(r);
    CHECK(*r == HostPort{"::1", 22});
    auto r2 = parse_host_port("2001:db8::1:22", 22, &err);
    REQUIRE(r2);
    CHECK(r2->host == "2001:db8::1:22");
    CHECK(r2->port == 22);
  }
  SECTION("bare IPv6 without default asks for brackets") {
    CHECK(err_of_hp("::1") == "missing port (write IPv6 as [ADDR]:PORT)");
  }
  SECTION("zone id") {
    auto r = parse_host_port("[fe80::1%eth0]:22", std::nullopt, &err);
    REQUIRE(r);
    CHECK(r->host == "fe80::1%eth0");
  }
  SECTION("malformed brackets") {
    CHECK(err_of_hp("[::1", 22) == "missing ']' after IPv6 address");
    CHECK(err_of_hp("[::1]x", 22) == "expected ':PORT' after ']'");
    CHECK(err_of_hp("[example.com]:22").find("invalid IPv6 address") != std::string::npos);
    CHECK(err_of_hp("[]:22").find("invalid IPv6 address") != std::string::npos);
    CHECK(err_of_hp("1:2:3", 22).find("write IPv6 as [ADDR]:PORT") != std::string::npos);
  }
}

TEST_CASE("is_valid_hostname", "[spec][hostname]") {
  CHECK(is_valid_hostname("localhost"));
  CHECK(is_valid_hostname("db.internal"));
  CHECK(is_valid_hostname("_srv.example.com"));
  CHECK(is_valid_hostname("xn--bcher-kva.example"));
  CHECK(is_valid_hostname("example.com."));
  CHECK(is_valid_hostname("10.0.0.1"));
  CHECK(is_valid_hostname("::1"));
  CHECK(is_valid_hostname("2001:db8::ff00:42:8329"));
  CHECK(is_valid_hostname(std::string(63, 'a') + ".com"));
  CHECK_FALSE(is_valid_hostname(std::string(64, 'a') + ".com"));
  std::string long_name;
  for (int i = 0; i < 50; ++i) long_name += "abcd.";
  long_name += "com";  // 253 chars
  CHECK(long_name.size() == 253);
  CHECK(is_valid_hostname(long_name));
  CHECK_FALSE(is_valid_hostname("x" + long_name));
  CHECK_FALSE(is_valid_hostname(""));
  CHECK_FALSE(is_valid_hostname("."));
  CHECK_FALSE(is_valid_hostname("a..b"));
  CHECK_FALSE(is_valid_hostname("-lead.example"));
  CHECK_FALSE(is_valid_hostname("trail-.example"));
  CHECK_FALSE(is_valid_hostname("sp ace"));
  CHECK_FALSE(is_valid_hostname("a/b"));
  CHECK_FALSE(is_valid_hostname(std::string("a\0b", 3)));
  CHECK_FALSE(is_valid_hostname("1.2.3"));       // would be read as IPv4 by inet_aton
  CHECK_FALSE(is_valid_hostname("2852039166"));  // ditto (169.254.169.254)
  CHECK_FALSE(is_valid_hostname("999.1.1.1"));
}

TEST_CASE("parse_forward (-L)", "[spec][forward]") {
  std::string err;
  SECTION("three fields: bind defaults to loopback") {
    auto f = parse_forward("5432:db.internal:5432", &err);
    REQUIRE(f);
    CHECK(*f == ForwardSpec{"127.0.0.1", 5432, "db.internal", 5432});
  }
  SECTION("four fields") {
    auto f = parse_forward("0.0.0.0:8080:10.0.0.5:80", &err);
    REQUIRE(f);
    CHECK(*f == ForwardSpec{"0.0.0.0", 8080, "10.0.0.5", 80});
  }
  SECTION("wildcard and empty bind mean all interfaces") {
    CHECK(parse_forward("*:8080:h:80", &err)->bind_host == "0.0.0.0");
    CHECK(parse_forward(":8080:h:80", &err)->bind_host == "0.0.0.0");
  }
  SECTION("IPv6 in brackets anywhere") {
    auto f = parse_forward("[::1]:8080:[2001:db8::1]:80", &err);
    REQUIRE(f);
    CHECK(*f == ForwardSpec{"::1", 8080, "2001:db8::1", 80});
    auto g = parse_forward("6379:[2001:db8::5]:6379", &err);
    REQUIRE(g);
    CHECK(*g == ForwardSpec{"127.0.0.1", 6379, "2001:db8::5", 6379});
  }
  SECTION("errors") {
    CHECK_FALSE(parse_forward("70000:h:1", &err));
    CHECK(err == "invalid port \"70000\" (expected 1..65535)");
    CHECK_FALSE(parse_forward("0:h:1", &err));
    CHECK(err.find("invalid port \"0\"") != std::string::npos);
    CHECK_FALSE(parse_forward("8080:h", &err));
    CHECK(err.find("too few") != std::string::npos);
    CHECK_FALSE(parse_forward("a:b:8080:h:80", &err));
    CHECK(err.find("too many") != std::string::npos);
    CHECK_FALSE(parse_forward("8080::80", &err));
    CHECK(err == "missing host");
    CHECK_FALSE(parse_forward("8080:bad host:80", &err));
    CHECK(err.find("invalid host") != std::string::npos);
    CHECK_FALSE(parse_forward("8080:[db]:80", &err));
    CHECK(err.find("invalid IPv6") != std::string::npos);
    CHECK_FALSE(parse_forward("8080:[::1:80", &err));
    CHECK(err.find("missing ']'") != std::string::npos);
    CHECK_FALSE(parse_forward("8080:::1:80", &err));
    CHECK_FALSE(parse_forward("[8080]:h:80", &err));
    CHECK_FALSE(parse_forward("8080:h:[80]", &err));
    CHECK(err == "a port cannot be in brackets");
    CHECK_FALSE(parse_forward("8080:h:80x", &err));
    CHECK_FALSE(parse_forward("", &err));
    CHECK(err.find("empty") != std::string::npos);
  }
}

TEST_CASE("parse_remote_forward (-R)", "[spec][forward]") {
  std::string err;
  auto r = parse_remote_forward("8080:127.0.0.1:3000", &err);
  REQUIRE(r);
  CHECK(*r == ForwardSpec{"localhost", 8080, "127.0.0.1", 3000});
  CHECK(parse_remote_forward("*:8080:localhost:3000", &err)->bind_host == "");
  CHECK(parse_remote_forward("0.0.0.0:8080:localhost:3000", &err)->bind_host == "0.0.0.0");
  auto dyn = parse_remote_forward("0:localhost:3000", &err);
  REQUIRE(dyn);
  CHECK(dyn->bind_port == 0);  // server picks the port, like ssh -R 0:...
  CHECK_FALSE(parse_remote_forward("8080:localhost:0", &err));
  auto v6 = parse_remote_forward("[::]:2222:[::1]:22", &err);
  REQUIRE(v6);
  CHECK(*v6 == ForwardSpec{"::", 2222, "::1", 22});
  CHECK_FALSE(parse_remote_forward("8080:h:99999", &err));
  CHECK(err.find("\"99999\"") != std::string::npos);
}

TEST_CASE("parse_proxy_url", "[spec][proxy]") {
  std::string err;
  SECTION("schemes") {
    auto s = parse_proxy_url("socks5://127.0.0.1:9050", &err);
    REQUIRE(s);
    CHECK(s->kind == ProxyUrl::Socks5);
    CHECK(s->addr == HostPort{"127.0.0.1", 9050});
    CHECK(parse_proxy_url("socks5h://proxy:1080", &err)->kind == ProxyUrl::Socks5);
    CHECK(parse_proxy_url("SOCKS5://proxy:1080", &err)->kind == ProxyUrl::Socks5);
    auto h = parse_proxy_url("http://proxy.corp:3128/", &err);
    REQUIRE(h);
    CHECK(h->kind == ProxyUrl::Http);
    CHECK(h->addr == HostPort{"proxy.corp", 3128});
    CHECK(h->user.empty());
  }
  SECTION("user and password, percent-decoded") {
    auto u = parse_proxy_url("socks5://alice:p%40ss%3Aw@[::1]:1080", &err);
    REQUIRE(u);
    CHECK(u->user == "alice");
    CHECK(u->pass == "p@ss:w");
    CHECK(u->addr == HostPort{"::1", 1080});
    auto only_user = parse_proxy_url("http://bob@h:8080", &err);
    REQUIRE(only_user);
    CHECK(only_user->user == "bob");
    CHECK(only_user->pass.empty());
  }
  SECTION("errors") {
    CHECK_FALSE(parse_proxy_url("127.0.0.1:1080", &err));
    CHECK(err.find("expected socks5://") != std::string::npos);
    CHECK_FALSE(parse_proxy_url("https://h:443", &err));
    CHECK(err.find("unsupported proxy scheme \"https\"") != std::string::npos);
    CHECK_FALSE(parse_proxy_url("socks4://h:1080", &err));
    CHECK_FALSE(parse_proxy_url("socks5://h", &err));
    CHECK(err == "proxy: missing port (expected HOST:PORT)");
    CHECK_FALSE(parse_proxy_url("socks5://", &err));
    CHECK_FALSE(parse_proxy_url("http://h:8080/path", &err));
    CHECK_FALSE(parse_proxy_url("http://h:8080?q", &err));
    CHECK_FALSE(parse_proxy_url("http://:pw@h:8080", &err));
    CHECK_FALSE(parse_proxy_url("http://u:%zz@h:8080", &err));
    CHECK_FALSE(parse_proxy_url("http://u:%4@h:8080", &err));
    CHECK_FALSE(parse_proxy_url("socks5://h:0", &err));
    CHECK_FALSE(parse_proxy_url("socks5://h:65536", &err));
    CHECK_FALSE(parse_proxy_url("socks5://" + std::string(256, 'u') + ":p@h:1", &err));
  }
}

TEST_CASE("parse_permit_open", "[spec][permitopen]") {
  std::string err;
  CHECK(*parse_permit_open("db.internal:5432", &err) == PermitOpen{"db.internal", "5432"});
  CHECK(*parse_permit_open("*:443", &err) == PermitOpen{"*", "443"});
  CHECK(*parse_permit_open("DB.Internal:*", &err) == PermitOpen{"db.internal", "*"});
  CHECK(*parse_permit_open("*:*", &err) == PermitOpen{"*", "*"});
  CHECK(*parse_permit_open("any", &err) == PermitOpen{"*", "*"});
  CHECK(*parse_permit_open("*.internal:5432", &err) == PermitOpen{"*.internal", "5432"});
  CHECK(*parse_permit_open("[2001:db8::1]:80", &err) == PermitOpen{"2001:db8::1", "80"});
  CHECK(*parse_permit_open("10.0.0.1:0080", &err) == PermitOpen{"10.0.0.1", "80"});
  CHECK_FALSE(parse_permit_open("db.internal", &err));
  CHECK(err.find("expected HOST:PORT") != std::string::npos);
  CHECK_FALSE(parse_permit_open("2001:db8::1:80", &err));
  CHECK(err.find("[ADDR]") != std::string::npos);
  CHECK_FALSE(parse_permit_open("[db]:80", &err));
  CHECK_FALSE(parse_permit_open("[::1]80", &err));
  CHECK_FALSE(parse_permit_open(":80", &err));
  CHECK_FALSE(parse_permit_open("h:0", &err));
  CHECK_FALSE(parse_permit_open("h:x", &err));
  CHECK_FALSE(parse_permit_open("bad host:80", &err));
  CHECK_FALSE(parse_permit_open("", &err));
}

TEST_CASE("permit_open_matches", "[spec][permitopen]") {
  auto po = [](std::string_view s) {
    std::string err;
    auto p = parse_permit_open(s, &err);
    REQUIRE(p);
    return *p;
  };
  SECTION("exact host and port, case-insensitive") {
    auto p = po("db.internal:5432");
    CHECK(permit_open_matches(p, "db.internal", 5432));
    CHECK(permit_open_matches(p, "DB.INTERNAL", 5432));
    CHECK(permit_open_matches(p, "db.internal.", 5432));
    CHECK_FALSE(permit_open_matches(p, "db.internal", 5433));
    CHECK_FALSE(permit_open_matches(p, "db.internal.evil", 5432));
    CHECK_FALSE(permit_open_matches(p, "xdb.internal", 5432));
  }
  SECTION("wildcards") {
    CHECK(permit_open_matches(po("*:443"), "anything.example", 443));
    CHECK_FALSE(permit_open_matches(po("*:443"), "anything.example", 80));
    CHECK(permit_open_matches(po("h:*"), "h", 1));
    CHECK(permit_open_matches(po("any"), "10.1.2.3", 65535));
    auto g = po("*.internal:5432");
    CHECK(permit_open_matches(g, "db.internal", 5432));
    CHECK(permit_open_matches(g, "a.b.Internal", 5432));
    CHECK_FALSE(permit_open_matches(g, "internal", 5432));
    CHECK_FALSE(permit_open_matches(g, "db.internal.com", 5432));
    CHECK(permit_open_matches(po("db-*.corp:*"), "db-7.corp", 9));
    CHECK(permit_open_matches(po("10.0.*.*:22"), "10.0.3.4", 22));
    CHECK_FALSE(permit_open_matches(po("10.0.*.*:22"), "10.1.3.4", 22));
  }
  SECTION("IP literals compare by value") {
    auto p = po("[2001:db8::1]:80");
    CHECK(permit_open_matches(p, "2001:DB8:0:0::1", 80));
    CHECK(permit_open_matches(p, "[2001:db8::1]", 80));
    CHECK_FALSE(permit_open_matches(p, "2001:db8::2", 80));
    CHECK(permit_open_matches(po("127.0.0.1:22"), "127.0.0.1", 22));
    CHECK_FALSE(permit_open_matches(po("127.0.0.1:22"), "127.0.0.10", 22));
    CHECK_FALSE(permit_open_matches(po("127.0.0.1:22"), "localhost", 22));
  }
  SECTION("pathological globs stay fast") {
    PermitOpen p{"*a*a*a*a*a*a*a*a*a*b", "*"};
    CHECK_FALSE(permit_open_matches(p, std::string(250, 'a'), 1));
  }
}

TEST_CASE("is_link_local", "[spec][linklocal]") {
  CHECK(is_link_local("169.254.169.254"));
  CHECK(is_link_local("169.254.0.1"));
  CHECK_FALSE(is_link_local("169.253.255.255"));
  CHECK_FALSE(is_link_local("169.255.0.1"));
  CHECK_FALSE(is_link_local("10.0.0.1"));
  CHECK(is_link_local("fe80::1"));
  CHECK(is_link_local("FEBF:ffff::1"));
  CHECK(is_link_local("[fe80::1%eth0]"));
  CHECK_FALSE(is_link_local("fec0::1"));
  CHECK_FALSE(is_link_local("2001:db8::1"));
  CHECK(is_link_local("::ffff:169.254.169.254"));
  CHECK(is_link_local("::ffff:a9fe:a9fe"));
  CHECK_FALSE(is_link_local("::ffff:10.0.0.1"));
  CHECK(is_link_local("64:ff9b::169.254.169.254"));
  CHECK(is_link_local("2852039166"));  // how inet_aton / getaddrinfo read it
  CHECK(is_link_local("0xa9fea9fe"));
  CHECK_FALSE(is_link_local("example.com"));
  CHECK_FALSE(is_link_local(""));
  CHECK_FALSE(is_link_local("::1"));
}

TEST_CASE("parse_user_pass", "[spec][userpass]") {
  std::string err;
  CHECK(*parse_user_pass("alice:s3cret", &err) == UserPass{"alice", "s3cret"});
  CHECK(*parse_user_pass("alice:a:b", &err) == UserPass{"alice", "a:b"});
  CHECK(parse_user_pass(std::string(255, 'u') + ":" + std::string(255, 'p'), &err));
  CHECK_FALSE(parse_user_pass(std::string(256, 'u') + ":p", &err));
  CHECK(err.find("255") != std::string::npos);
  CHECK_FALSE(parse_user_pass("u:" + std::string(256, 'p'), &err));
  CHECK_FALSE(parse_user_pass("alice", &err));
  CHECK(err == "expected USER:PASS");
  CHECK_FALSE(parse_user_pass(":pw", &err));
  CHECK(err == "empty user name in USER:PASS");
  CHECK_FALSE(parse_user_pass("alice:", &err));
  CHECK(err == "empty password in USER:PASS");
}

TEST_CASE("quote_for_error escapes and truncates", "[spec]") {
  CHECK(quote_for_error("abc") == "\"abc\"");
  CHECK(quote_for_error(std::string("a\nb\x1b", 4)) == "\"a\\x0ab\\x1b\"");
  auto q = quote_for_error(std::string(500, 'x'));
  CHECK(q.size() == 80 + 2 + 3);
  CHECK(q.substr(q.size() - 4) == "...\"");
}

TEST_CASE("parsers tolerate a null err pointer", "[spec]") {
  CHECK_FALSE(parse_host_port("h:x", std::nullopt, nullptr));
  CHECK_FALSE(parse_forward("x", nullptr));
  CHECK_FALSE(parse_remote_forward("x", nullptr));
  CHECK_FALSE(parse_proxy_url("x", nullptr));
  CHECK_FALSE(parse_permit_open("x", nullptr));
  CHECK_FALSE(parse_user_pass("x", nullptr));
}
