// authorized_keys parsing and sshd's from= / source-address matching.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>

#include "ssh/authorized_keys.hpp"

using namespace alk::ssh;

namespace {

std::string fixture_line(const std::string& name) {
  const char* dir = std::getenv("ALKNET_TEST_DATA");
  std::string err;
  auto text = read_small_file(std::string(dir ? dir : "tests/unit/data") + "/ssh/" + name, 1 << 16, &err);
  INFO(err);
  REQUIRE(text);
  while (!text->empty() && text->back() == '\n') text->pop_back();
  return *text;
}

const std::string& user_line() {
  static const std::string l = fixture_line("user_ed25519.pub");
  return l;
}
const std::string& ca_line() {
  static const std::string l = fixture_line("ca_ed25519.pub");
  return l;
}

// One line through the parser: the key, or nothing with exactly one warning.
std::optional<AuthorizedKey> one(const std::string& line, std::string* warning = nullptr) {
  auto r = parse_authorized_keys(line + "\n");
  if (r.keys.size() == 1) {
    CHECK(r.warnings.empty());
    return r.keys[0];
  }
  CHECK(r.keys.empty());
  REQUIRE(r.warnings.size() == 1);
  if (warning) *warning = r.warnings[0];
  return std::nullopt;
}

}  // namespace

TEST_CASE("authorized_keys: plain keys, comments, blank lines and CRLF", "[ssh][authorized_keys]") {
  std::string text = "# alknet users\n\n   \n" + user_line() + "\r\n\t" + ca_line() + "\n#" + user_line() + "\n" +
                     fixture_line("rsa_ca.pub") + "\n" + fixture_line("user_ecdsa.pub");  // no final newline
  auto r = parse_authorized_keys(text);
  CHECK(r.warnings.empty());
  REQUIRE(r.keys.size() == 4);
  CHECK(r.keys[0].key.type == "ssh-ed25519");
  CHECK(r.keys[0].key.comment == "alice@test");
  CHECK(fingerprint_sha256(r.keys[0].key.blob) == "SHA256:Wyx/+3JTStZBSiWL5sKQTaC9eHZtEKk2MDF4d2TjX4s");
  CHECK(r.keys[1].key.comment == "ca@test");
  CHECK(r.keys[2].key.type == "ssh-rsa");
  CHECK(r.keys[3].key.type == "ecdsa-sha2-nistp256");
  for (auto& k : r.keys) {
    CHECK_FALSE(k.cert_authority);
    CHECK(k.port_forwarding);
    CHECK(k.from.empty());
    CHECK(k.permit_open.empty());
    CHECK(k.principals.empty());
    CHECK_FALSE(k.expiry_time);
  }
  CHECK(parse_authorized_keys("").keys.empty());
  CHECK(parse_authorized_keys("\n\n# only comments\n").warnings.empty());
}

TEST_CASE("authorized_keys: cert-authority with principals", "[ssh][authorized_keys]") {
  auto k = one("cert-authority,principals=\"alknet,ops\" " + ca_line());
  REQUIRE(k);
  CHECK(k->cert_authority);
  CHECK(k->principals == std::vector<std::string>{"alknet", "ops"});
  CHECK(k->key.comment == "ca@test");
  std::string w;
  CHECK_FALSE(one("cert-authority " + fixture_line("user_valid.cert.pub"), &w));
  CHECK(w == "line 1: cert-authority key must be a plain key, not a certificate");
  CHECK_FALSE(one("principals=\"\" " + ca_line(), &w));
  CHECK(w == "line 1: empty principals= list");
}

TEST_CASE("authorized_keys: from= and permitopen with quotes and escapes", "[ssh][authorized_keys]") {
  auto k = one("from=\"10.0.0.0/8,!10.1.2.3,*.example.com\",permitopen=\"db.internal:5432\","
               "permit-open=\"[::1]:6379\",permitopen=\"*:443\" " + user_line());
  REQUIRE(k);
  CHECK(k->from == std::vector<std::string>{"10.0.0.0/8", "!10.1.2.3", "*.example.com"});
  CHECK(k->permit_open == std::vector<std::string>{"db.internal:5432", "[::1]:6379", "*:443"});
  CHECK(k->port_forwarding);
  // A quoted value may hold blanks, commas and \" - none of them end the option list.
  auto c = one("command=\"echo \\\"hi, there\\\" now\",no-pty " + user_line());
  REQUIRE(c);
  CHECK(c->key.comment == "alice@test");
  // Backslashes not followed by a quote stay as written.
  auto p = one("from=\"a\\b\" " + user_line());
  REQUIRE(p);
  CHECK(p->from == std::vector<std::string>{"a\\b"});
}

TEST_CASE("authorized_keys: permitopen values are validated", "[ssh][authorized_keys]") {
  for (const char* ok : {"host:1", "host:65535", "host:*", "[2001:db8::1]:22", "10.0.0.1:80"}) {
    INFO(ok);
    auto k = one(std::string("permitopen=\"") + ok + "\" " + user_line());
    REQUIRE(k);
    CHECK(k->permit_open == std::vector<std::string>{ok});
  }
  for (const char* bad : {"host", "host:0", "host:65536", "host:", ":22", "host:http", "[::1]22", "[::1", "host:-1"}) {
    INFO(bad);
    std::string w;
    CHECK_FALSE(one(std::string("permitopen=\"") + bad + "\" " + user_line(), &w));
    CHECK(w == std::string("line 1: invalid permitopen \"") + bad + "\"");
  }
}

TEST_CASE("authorized_keys: restrict and port-forwarding are applied in order", "[ssh][authorized_keys]") {
  CHECK_FALSE(one("restrict " + user_line())->port_forwarding);
  CHECK(one("restrict,port-forwarding " + user_line())->port_forwarding);
  CHECK_FALSE(one("port-forwarding,restrict " + user_line())->port_forwarding);
  CHECK_FALSE(one("no-port-forwarding " + user_line())->port_forwarding);
  CHECK_FALSE(one("NO-PORT-FORWARDING " + user_line())->port_forwarding);  // names are case-insensitive
  CHECK(one("no-port-forwarding,port-forwarding " + user_line())->port_forwarding);
  CHECK_FALSE(one("no-agent-forwarding,no-X11-forwarding,no-pty,no-user-rc,no-port-forwarding " + user_line())
                  ->port_forwarding);
}

TEST_CASE("authorized_keys: expiry-time is read as UTC", "[ssh][authorized_keys]") {
  CHECK(one("expiry-time=\"20300101\" " + user_line())->expiry_time == 1893456000);
  CHECK(one("expiry-time=\"203001011230\" " + user_line())->expiry_time == 1893456000 + 12 * 3600 + 30 * 60);
  CHECK(one("expiry-time=\"20300101123045Z\" " + user_line())->expiry_time == 1893456000 + 45045);
  CHECK(one("expiry-time=\"20240229\" " + user_line())->expiry_time == 1709164800);  // leap day
  // Two limits: the earlier one holds.
  CHECK(one("expiry-time=\"20300101\",expiry-time=\"20250101\" " + user_line())->expiry_time == 1735689600);
  for (const char* bad : {"2030010", "20301301", "20300230", "20230229", "203001012460", "2030010112", "1969123l",
                          "", "19691231"}) {
    INFO(bad);
    std::string w;
    CHECK_FALSE(one(std::string("expiry-time=\"") + bad + "\" " + user_line(), &w));
    CHECK(w.starts_with("line 1: invalid expiry-time"));
  }
}

TEST_CASE("authorized_keys: unknown or unenforceable options skip the line", "[ssh][authorized_keys]") {
  std::string text = user_line() + "\n" + "frobnicate " + user_line() + "\n" + "no-pty,permitlisten=\"8080\" " +
                     user_line() + "\n" + "tunnel=\"1\" " + user_line() + "\n" + ca_line() + "\n";
  auto r = parse_authorized_keys(text);
  REQUIRE(r.keys.size() == 2);
  CHECK(r.keys[1].key.comment == "ca@test");
  CHECK(r.warnings == std::vector<std::string>{"line 2: unsupported option frobnicate",
                                               "line 3: unsupported option permitlisten",
                                               "line 4: unsupported option tunnel"});
}

TEST_CASE("authorized_keys: malformed option syntax and keys", "[ssh][authorized_keys]") {
  struct Case {
    std::string line, warning;
  };
  std::vector<Case> cases{
      {"from=\"10.0.0.1 " + user_line(), "line 1: missing end quote in option from"},
      {"from=10.0.0.1 " + user_line(), "line 1: option from value must be quoted"},
      {"from " + user_line(), "line 1: option from needs a value"},
      {"restrict=\"yes\" " + user_line(), "line 1: option restrict takes no value"},
      {"no-pty,", "line 1: empty option"},
      {"no-pty", "line 1: no key after options"},
      {",no-pty " + user_line(), "line 1: empty option"},
      {"no-pty,,restrict " + user_line(), "line 1: empty option"},
      {"from=\"x\"y " + user_line(), "line 1: bad character after option from"},
      {"no-pty ssh-ed25519 AAAA", "line 1: bad public key"},
      {"ssh-ed25519 AAAAnotreallyakey", "line 1: bad public key"},
      {"restrict", "line 1: no key after options"},
      {"from=\"\" " + user_line(), "line 1: empty from= pattern list"},
  };
  for (auto& c : cases) {
    INFO(c.line);
    std::string w;
    CHECK_FALSE(one(c.line, &w));
    CHECK(w == c.warning);
  }
  // Warnings carry the right line number and later lines still load.
  auto r = parse_authorized_keys("# c\n\nbogus line\n" + user_line() + "\n");
  CHECK(r.warnings == std::vector<std::string>{"line 3: unsupported option bogus"});
  CHECK(r.keys.size() == 1);
}

TEST_CASE("match_wildcard follows OpenSSH match_pattern", "[ssh][match]") {
  CHECK(match_wildcard("host.example.com", "*.example.com"));
  CHECK(match_wildcard("a", "?"));
  CHECK(match_wildcard("", "*"));
  CHECK(match_wildcard("abc", "a*c"));
  CHECK(match_wildcard("abcbc", "a*bc"));
  CHECK_FALSE(match_wildcard("", "?"));
  CHECK_FALSE(match_wildcard("abc", "a*d"));
  CHECK_FALSE(match_wildcard("Host", "host"));
  CHECK_FALSE(match_wildcard("example.com", "*.example.com"));
  // A pattern that makes naive recursion exponential finishes at once.
  std::string text(5000, 'a'), pattern;
  for (int i = 0; i < 40; ++i) pattern += "a*";
  pattern += "b";
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(match_wildcard(text, pattern));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
}

TEST_CASE("match_from_patterns: wildcards and negation on the IP", "[ssh][match]") {
  std::vector<std::string> lan{"192.168.1.*"};
  CHECK(match_from_patterns(lan, "192.168.1.10"));
  CHECK_FALSE(match_from_patterns(lan, "192.168.2.10"));
  std::vector<std::string> neg{"!192.168.1.13", "192.168.1.*"};
  CHECK(match_from_patterns(neg, "192.168.1.12"));
  CHECK_FALSE(match_from_patterns(neg, "192.168.1.13"));
  // Negation alone never grants access.
  CHECK_FALSE(match_from_patterns({"!10.0.0.1"}, "10.0.0.2"));
  CHECK_FALSE(match_from_patterns({}, "10.0.0.2"));
  CHECK_FALSE(match_from_patterns(lan, ""));
  CHECK_FALSE(match_from_patterns(lan, "not-an-ip"));
}

TEST_CASE("match_from_patterns: CIDR blocks, v4 and v6", "[ssh][match]") {
  std::vector<std::string> p{"!10.1.0.0/16", "10.0.0.0/8", "2001:db8::/32"};
  CHECK(match_from_patterns(p, "10.2.3.4"));
  CHECK_FALSE(match_from_patterns(p, "10.1.3.4"));
  CHECK_FALSE(match_from_patterns(p, "11.0.0.1"));
  CHECK(match_from_patterns(p, "2001:db8:1::5"));
  CHECK_FALSE(match_from_patterns(p, "2001:db9::5"));
  CHECK(match_from_patterns(p, "::ffff:10.2.3.4"));  // IPv4-mapped client compared as IPv4
  CHECK(match_from_patterns({"10.0.0.7"}, "10.0.0.7"));
  CHECK(match_from_patterns({"0.0.0.0/0"}, "203.0.113.9"));
  CHECK(match_from_patterns({"10.0.0.0/31"}, "10.0.0.1"));
  CHECK_FALSE(match_from_patterns({"10.0.0.0/31"}, "10.0.0.2"));
  CHECK(match_from_patterns({"::/0"}, "::1"));
  CHECK_FALSE(match_from_patterns({"::/0"}, "127.0.0.1"));
  // A mask too long for its family poisons the whole list, as in sshd.
  CHECK_FALSE(match_from_patterns({"10.0.0.0/33", "10.0.0.0/8"}, "10.0.0.1"));
  // Host bits set: not a network, so only a literal string match could apply (none does).
  CHECK_FALSE(match_from_patterns({"10.0.0.1/8"}, "10.9.9.9"));
  // An empty entry is a malformed list.
  CHECK_FALSE(match_from_patterns({"", "10.0.0.0/8"}, "10.0.0.1"));
}

TEST_CASE("match_from_patterns: host names", "[ssh][match]") {
  std::vector<std::string> p{"*.example.com", "!bad.example.com"};
  CHECK(match_from_patterns(p, "198.51.100.1", "good.example.com"));
  CHECK(match_from_patterns(p, "198.51.100.1", "GOOD.Example.COM"));  // host names are case-insensitive
  CHECK_FALSE(match_from_patterns(p, "198.51.100.1", "bad.example.com"));
  CHECK_FALSE(match_from_patterns(p, "198.51.100.1", "example.org"));
  CHECK_FALSE(match_from_patterns(p, "198.51.100.1"));  // no reverse DNS: only the IP is known
  CHECK(match_from_patterns({"*.EXAMPLE.com"}, "198.51.100.1", "x.example.com"));
  // IP and name patterns mix; a negated IP wins over a matching name.
  std::vector<std::string> mixed{"!198.51.100.1", "*.example.com"};
  CHECK_FALSE(match_from_patterns(mixed, "198.51.100.1", "good.example.com"));
  CHECK(match_from_patterns(mixed, "198.51.100.2", "good.example.com"));
}

TEST_CASE("match_cidr_list: source-address semantics", "[ssh][match]") {
  CHECK(match_cidr_list("127.0.0.1/32", "127.0.0.1"));
  CHECK_FALSE(match_cidr_list("127.0.0.1/32", "127.0.0.2"));
  CHECK(match_cidr_list("10.0.0.0/8,192.168.0.0/16", "192.168.44.1"));
  CHECK(match_cidr_list("10.0.0.1", "10.0.0.1"));
  CHECK(match_cidr_list("2001:db8::/32", "2001:db8::7"));
  CHECK(match_cidr_list("2001:DB8::/32", "2001:db8::7"));
  CHECK(match_cidr_list("127.0.0.0/8", "::ffff:127.0.0.1"));
  CHECK(match_cidr_list("::ffff:10.0.0.0/104", "10.1.2.3"));
  // No wildcards, no negation, no junk, no empty entries: any of them fails the whole list.
  CHECK_FALSE(match_cidr_list("10.0.0.*", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("!10.0.0.0/8", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.0/8,bogus", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.0/8,", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.1/8", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.0/33", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.0/", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("", "10.0.0.1"));
  CHECK_FALSE(match_cidr_list("10.0.0.0/8", ""));
  CHECK_FALSE(match_cidr_list("10.0.0.0/8", "10.0.0.1.example"));
}

TEST_CASE("split_commas keeps empty items", "[ssh][match]") {
  CHECK(split_commas("a,b") == std::vector<std::string>{"a", "b"});
  CHECK(split_commas("") == std::vector<std::string>{""});
  CHECK(split_commas("a,,b,") == std::vector<std::string>{"a", "", "b", ""});
}
