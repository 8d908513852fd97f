#include <catch2/catch.hpp>

#include <map>

#include "cli/options.hpp"

using namespace alk::cli;
using alk::net::ForwardSpec;
using alk::net::HostPort;
using alk::net::PermitOpen;
using alk::net::ProxyUrl;

namespace {

// A fixed environment the parser sees instead of the real one.
struct Env {
  std::map<std::string, std::string> vars{{"HOME", "/home/u"}};
  Getenv fn() const {
    return [this](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

std::variant<Parsed, std::string> run(std::vector<std::string_view> args, const Env& env = Env{}) {
  return parse_args(std::span<const std::string_view>(args), env.fn());
}

Parsed ok(std::vector<std::string_view> args, const Env& env = Env{}) {
  auto r = run(std::move(args), env);
  if (auto* e = std::get_if<std::string>(&r)) FAIL("unexpected error: " << *e);
  return std::get<Parsed>(r);
}

std::string fails(std::vector<std::string_view> args, const Env& env = Env{}) {
  auto r = run(std::move(args), env);
  REQUIRE(std::holds_alternative<std::string>(r));
  return std::get<std::string>(r);
}

// Minimal valid command lines to which each test adds the flag under test.
std::vector<std::string_view> connect_args(std::initializer_list<std::string_view> extra = {}) {
  std::vector<std::string_view> v{"connect", "--server", "tunnel.example.com", "--identity", "/k"};
  v.insert(v.end(), extra);
  return v;
}
std::vector<std::string_view> serve_args(std::initializer_list<std::string_view> extra = {}) {
  std::vector<std::string_view> v{"serve", "--key", "/etc/alknet/host"};
  v.insert(v.end(), extra);
  return v;
}

constexpr std::string_view kFp = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s";

}  // namespace

TEST_CASE("top level: help, version, errors", "[cli]") {
  SECTION("--help and -h") {
    for (auto flag : {"--help", "-h"}) {
      auto p = ok({flag});
      CHECK(p.cmd == Command::Help);
      CHECK(p.help_text == top_help());
    }
    CHECK(ok({"help"}).help_text == top_help());
    CHECK(ok({"help", "serve"}).help_text == serve_help());
  }
  SECTION("--version and -V") {
    CHECK(ok({"--version"}).cmd == Command::Version);
    CHECK(ok({"-V"}).cmd == Command::Version);
  }
  SECTION("subcommand help") {
    auto c = ok({"connect", "--help"});
    CHECK(c.cmd == Command::Help);
    CHECK(c.help_text == connect_help());
    CHECK(ok({"serve", "-h"}).help_text == serve_help());
    // Help wins even when required flags are missing.
    CHECK(ok({"connect", "--server", "h", "--help"}).help_text == connect_help());
  }
  SECTION("no subcommand") { CHECK(fails({}).find("missing command") != std::string::npos); }
  SECTION("unknown subcommand") { CHECK(fails({"conect"}) == "unknown command \"conect\" (expected connect or serve)"); }
  SECTION("unknown top-level flag") { CHECK(fails({"--bogus"}).find("unknown flag \"--bogus\"") != std::string::npos); }
}

TEST_CASE("help texts list every flag with an example", "[cli][help]") {
  for (auto f : {"--server", "--transport", "--identity", "--socks5", "--forward", "--remote-forward", "--proxy",
                 "--tls-server-name", "--insecure", "--tls-ca", "--socks5-auth", "--user", "--known-hosts",
                 "--host-key", "--quiet", "--verbose", "--help"})
    CHECK(connect_help().find(f) != std::string::npos);
  for (auto f : {"--key", "--authorized-keys", "--cert-authority", "--transport", "--listen", "--tls-cert",
                 "--tls-key", "--acme-domain", "--acme-directory", "--acme-email", "--acme-cache", "--acme-staging",
                 "--stealth", "--proxy", "--max-connections-per-ip", "--max-auth-attempts", "--permit-open",
                 "--quiet", "--verbose", "--help"})
    CHECK(serve_help().find(f) != std::string::npos);
  auto count = [](const std::string& text, std::string_view needle) {
    size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
    return n;
  };
  // one example per flag line ("  --flag" or "  -q, --flag"), --help included
  for (const std::string& text : {connect_help(), serve_help()}) {
    const size_t flags = count(text, "\n  -");
    CHECK(flags >= 17);
    CHECK(count(text, "e.g. ") == flags);
  }
  for (auto f : {"--quic-cc", "--quic-idle-timeout", "--quic-keepalive"}) {
    CHECK(connect_help().find(f) != std::string::npos);
    CHECK(serve_help().find(f) != std::string::npos);
  }
  CHECK(top_help().find("alknet connect") != std::string::npos);
  CHECK(top_help().find("alknet serve") != std::string::npos);
  // The example fingerprint in the help text must itself be accepted.
  CHECK(ok(connect_args({"--host-key", kFp})).connect.host_key == kFp);
}

TEST_CASE("connect: defaults", "[cli][connect]") {
  auto c = ok(connect_args()).connect;
  CHECK(c.server == HostPort{"tunnel.example.com", 22});
  CHECK(c.identity == "/k");
  CHECK(c.transport == "tcp");
  CHECK(c.socks5 == HostPort{"127.0.0.1", 1080});
  CHECK(c.forwards.empty());
  CHECK(c.remote_forwards.empty());
  CHECK_FALSE(c.proxy);
  CHECK(c.tls_server_name == "tunnel.example.com");
  CHECK_FALSE(c.insecure);
  CHECK(c.tls_ca.empty());
  CHECK_FALSE(c.socks5_auth);
  CHECK(c.user == "alknet");
  CHECK(c.known_hosts == "/home/u/.config/alknet/known_hosts");
  CHECK(c.host_key.empty());
  CHECK_FALSE(c.quiet);
  CHECK_FALSE(c.verbose);
}

TEST_CASE("connect: --server", "[cli][connect]") {
  SECTION("with port, both forms") {
    CHECK(ok({"connect", "--server", "1.2.3.4:2222", "--identity", "k"}).connect.server == HostPort{"1.2.3.4", 2222});
    CHECK(ok({"connect", "--server=1.2.3.4:2222", "--identity=k"}).connect.server == HostPort{"1.2.3.4", 2222});
  }
  SECTION("IPv6") {
    auto c = ok({"connect", "--server", "[2001:db8::7]:443", "--identity", "k"}).connect;
    CHECK(c.server == HostPort{"2001:db8::7", 443});
    CHECK(c.tls_server_name == "2001:db8::7");
    CHECK(ok({"connect", "--server", "::1", "--identity", "k"}).connect.server == HostPort{"::1", 22});
  }
  SECTION("env fallback") {
    Env env;
    env.vars["ALKNET_SERVER"] = "env.example:8022";
    CHECK(ok({"connect", "--identity", "k"}, env).connect.server == HostPort{"env.example", 8022});
    // the flag wins over the environment
    CHECK(ok({"connect", "--server", "flag.example", "--identity", "k"}, env).connect.server ==
          HostPort{"flag.example", 22});
    env.vars["ALKNET_SERVER"] = "env.example:x";
    CHECK(fails({"connect", "--identity", "k"}, env) ==
          "invalid port \"x\" (expected 1..65535) in ALKNET_SERVER=\"env.example:x\"");
    env.vars["ALKNET_SERVER"] = "";
    CHECK(fails({"connect", "--identity", "k"}, env).find("missing --server") != std::string::npos);
  }
  SECTION("missing and bad") {
    CHECK(fails({"connect", "--identity", "k"}) == "missing --server HOST[:PORT] (or set ALKNET_SERVER)");
    CHECK(fails({"connect", "--server", "h:70000", "--identity", "k"}) ==
          "invalid port \"70000\" (expected 1..65535) in \"--server h:70000\"");
  }
}

TEST_CASE("connect: --identity", "[cli][connect]") {
  CHECK(fails({"connect", "--server", "h"}) == "missing --identity PATH (or set ALKNET_IDENTITY)");
  Env env;
  env.vars["ALKNET_IDENTITY"] = "/env/key";
  CHECK(ok({"connect", "--server", "h"}, env).connect.identity == "/env/key");
  CHECK(ok({"connect", "--server", "h", "--identity", "/flag/key"}, env).connect.identity == "/flag/key");
  CHECK(ok({"connect", "--server", "h", "--identity=-odd"}).connect.identity == "-odd");
}

TEST_CASE("connect: --transport", "[cli][connect]") {
  CHECK(ok(connect_args({"--transport", "tls"})).connect.transport == "tls");
  CHECK(ok(connect_args({"--transport=quic"})).connect.transport == "quic");
  CHECK(ok(connect_args({"--transport", "tcp"})).connect.transport == "tcp");
  CHECK(fails(connect_args({"--transport", "udp"})) ==
        "invalid transport (expected tcp, tls or quic) in \"--transport udp\"");
  CHECK(fails(connect_args({"--transport", "TLS"})).find("invalid transport") != std::string::npos);
}

TEST_CASE("connect: --socks5", "[cli][connect]") {
  CHECK(ok(connect_args({"--socks5", "127.0.0.1:1081"})).connect.socks5 == HostPort{"127.0.0.1", 1081});
  CHECK(ok(connect_args({"--socks5", "1082"})).connect.socks5 == HostPort{"127.0.0.1", 1082});
  CHECK(ok(connect_args({"--socks5", ":1083"})).connect.socks5 == HostPort{"127.0.0.1", 1083});
  CHECK(ok(connect_args({"--socks5=[::1]:1084"})).connect.socks5 == HostPort{"::1", 1084});
  CHECK(fails(connect_args({"--socks5", "127.0.0.1"})).find("missing port") != std::string::npos);
  CHECK(fails(connect_args({"--socks5", "99999"})).find("invalid port") != std::string::npos);
}

TEST_CASE("connect: --forward and --remote-forward are repeatable", "[cli][connect][forward]") {
  auto c = ok(connect_args({"--forward", "5432:db.internal:5432", "--forward=[::1]:8080:[2001:db8::1]:80",
                            "--remote-forward", "8080:127.0.0.1:3000", "--remote-forward=*:9000:localhost:9001"}))
               .connect;
  REQUIRE(c.forwards.size() == 2);
  CHECK(c.forwards[0] == ForwardSpec{"127.0.0.1", 5432, "db.internal", 5432});
  CHECK(c.forwards[1] == ForwardSpec{"::1", 8080, "2001:db8::1", 80});
  REQUIRE(c.remote_forwards.size() == 2);
  CHECK(c.remote_forwards[0] == ForwardSpec{"localhost", 8080, "127.0.0.1", 3000});
  CHECK(c.remote_forwards[1] == ForwardSpec{"", 9000, "localhost", 9001});
  CHECK(fails(connect_args({"--forward", "70000:h:1"})) ==
        "invalid port \"70000\" (expected 1..65535) in \"--forward 70000:h:1\"");
  CHECK(fails(connect_args({"--remote-forward", "8080:h"})).find("\"--remote-forward 8080:h\"") != std::string::npos);
}

TEST_CASE("connect: --proxy", "[cli][connect]") {
  auto p = ok(connect_args({"--proxy", "socks5://127.0.0.1:9050"})).connect.proxy;
  REQUIRE(p);
  CHECK(p->kind == ProxyUrl::Socks5);
  CHECK(p->addr == HostPort{"127.0.0.1", 9050});
  CHECK(ok(connect_args({"--proxy=http://u:p@proxy:3128"})).connect.proxy->user == "u");
  CHECK(fails(connect_args({"--proxy", "ftp://h:21"})).find("unsupported proxy scheme") != std::string::npos);
  CHECK(fails(connect_args({"--proxy", "socks5://h"})).find("missing port") != std::string::npos);
}

TEST_CASE("connect: TLS flags", "[cli][connect][tls]") {
  auto c = ok(connect_args({"--transport", "tls", "--tls-server-name", "cdn.example.com", "--insecure", "--tls-ca",
                            "/ca.pem"}))
               .connect;
  CHECK(c.tls_server_name == "cdn.example.com");
  CHECK(c.insecure);
  CHECK(c.tls_ca == "/ca.pem");
  CHECK(fails(connect_args({"--tls-server-name", "bad name"})).find("invalid server name") != std::string::npos);
  CHECK(fails(connect_args({"--insecure=yes"})) == "--insecure takes no value");
}

TEST_CASE("connect: --socks5-auth", "[cli][connect]") {
  auto a = ok(connect_args({"--socks5-auth", "alice:s3:cret"})).connect.socks5_auth;
  REQUIRE(a);
  CHECK(a->user == "alice");
  CHECK(a->pass == "s3:cret");
  auto e = fails(connect_args({"--socks5-auth", "alice:"}));
  CHECK(e == "empty password in USER:PASS in --socks5-auth");
  // the password never appears in the message
  auto e2 = fails(connect_args({"--socks5-auth", ":topsecret"}));
  CHECK(e2.find("topsecret") == std::string::npos);
}

TEST_CASE("connect: --socks5-auth-file", "[cli][connect]") {
  auto c = ok(connect_args({"--socks5-auth-file", "/etc/alknet/socks5-auth"})).connect;
  CHECK(c.socks5_auth_file == "/etc/alknet/socks5-auth");
  CHECK_FALSE(c.socks5_auth);
  CHECK(ok(connect_args({})).connect.socks5_auth_file.empty());
  CHECK(fails(connect_args({"--socks5-auth-file", "/f", "--socks5-auth", "a:b"})) ==
        "use either --socks5-auth or --socks5-auth-file, not both");
  CHECK(fails(connect_args({"--socks5-auth-file="})) == "empty value for --socks5-auth-file");
}

TEST_CASE("connect: --user", "[cli][connect]") {
  CHECK(ok(connect_args({"--user", "deploy"})).connect.user == "deploy");
  CHECK(fails(connect_args({"--user", "a b"})).find("invalid user name") != std::string::npos);
  CHECK(fails(connect_args({"--user="})) == "empty value for --user");
}

TEST_CASE("connect: --known-hosts defaults", "[cli][connect]") {
  CHECK(ok(connect_args({"--known-hosts", "/tmp/kh"})).connect.known_hosts == "/tmp/kh");
  Env env;
  env.vars["XDG_CONFIG_HOME"] = "/xdg";
  CHECK(ok(connect_args(), env).connect.known_hosts == "/xdg/alknet/known_hosts");
  env.vars["XDG_CONFIG_HOME"] = "relative/ignored";
  CHECK(ok(connect_args(), env).connect.known_hosts == "/home/u/.config/alknet/known_hosts");
  Env bare;
  bare.vars.clear();
  CHECK(fails(connect_args(), bare).find("pass --known-hosts") != std::string::npos);
  // With a pinned key no known_hosts file is needed.
  CHECK(ok(connect_args({"--host-key", kFp}), bare).connect.known_hosts.empty());
  // A null Getenv means an empty environment.
  std::vector<std::string_view> args = connect_args({"--known-hosts", "/kh"});
  auto r = parse_args(std::span<const std::string_view>(args), Getenv{});
  CHECK(std::holds_alternative<Parsed>(r));
}

TEST_CASE("connect: --host-key", "[cli][connect]") {
  CHECK(ok(connect_args({"--host-key", kFp})).connect.host_key == kFp);
  std::string padded = std::string(kFp) + "=";
  CHECK(ok(connect_args({"--host-key", padded})).connect.host_key == kFp);
  CHECK(fails(connect_args({"--host-key", "MD5:aa:bb"})).find("invalid host key fingerprint") != std::string::npos);
  CHECK(fails(connect_args({"--host-key", "SHA256:short"})).find("invalid host key") != std::string::npos);
  // 43 chars but the final char has non-zero padding bits: not a real SHA-256 digest
  CHECK(fails(connect_args({"--host-key", "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2t"}))
            .find("invalid host key") != std::string::npos);
  CHECK(fails(connect_args({"--host-key", "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD-s"}))
            .find("invalid host key") != std::string::npos);
}

TEST_CASE("quiet and verbose", "[cli]") {
  CHECK(ok(connect_args({"--quiet"})).connect.quiet);
  CHECK(ok(connect_args({"-q"})).connect.quiet);
  CHECK(ok(connect_args({"--verbose"})).connect.verbose);
  CHECK(ok(connect_args({"-v"})).connect.verbose);
  CHECK(ok(serve_args({"-q"})).serve.quiet);
  CHECK(ok(serve_args({"--verbose"})).serve.verbose);
  CHECK(fails(connect_args({"-q", "-v"})) == "--quiet and --verbose cannot be combined");
  CHECK(fails(serve_args({"--quiet", "--verbose"})) == "--quiet and --verbose cannot be combined");
}

TEST_CASE("generic flag errors", "[cli]") {
  SECTION("unknown flag") {
    CHECK(fails(connect_args({"--bogus"})) ==
          "unknown flag \"--bogus\" for alknet connect (see 'alknet connect --help')");
    CHECK(fails(serve_args({"--server", "x"})).find("unknown flag \"--server\" for alknet serve") !=
          std::string::npos);
    CHECK(fails(connect_args({"--bogus=1"})).find("unknown flag \"--bogus\"") != std::string::npos);
    CHECK(fails(connect_args({"-x"})).find("unknown flag \"-x\"") != std::string::npos);
  }
  SECTION("missing value") {
    CHECK(fails({"connect", "--identity", "k", "--server"}) == "missing value for --server");
    CHECK(fails({"connect", "--identity", "--server", "h"}) == "missing value for --identity");
  }
  SECTION("empty = value") { CHECK(fails({"connect", "--server=", "--identity", "k"}) == "empty value for --server"); }
  SECTION("positional argument") {
    CHECK(fails(connect_args({"extra"})).find("unexpected argument \"extra\"") != std::string::npos);
    CHECK(fails(connect_args({"-"})).find("unexpected argument") != std::string::npos);
  }
  SECTION("last value wins for single-valued flags") {
    CHECK(ok(connect_args({"--transport", "tls", "--transport", "quic"})).connect.transport == "quic");
  }
}

TEST_CASE("serve: defaults and --key", "[cli][serve]") {
  auto s = ok(serve_args()).serve;
  CHECK(s.key == "/etc/alknet/host");
  CHECK(s.authorized_keys.empty());
  CHECK(s.cert_authorities.empty());
  CHECK(s.transport == "tcp");
  CHECK(s.listen == HostPort{"0.0.0.0", 22});
  CHECK(s.tls_cert.empty());
  CHECK(s.acme_domains.empty());
  CHECK(s.acme_directory.empty());
  CHECK_FALSE(s.stealth);
  CHECK_FALSE(s.proxy);
  CHECK(s.max_connections_per_ip == 0);
  CHECK(s.max_auth_attempts == 10);
  CHECK(s.permit_open.empty());
  CHECK(fails({"serve"}) == "missing --key PATH (the server's SSH host private key)");
  CHECK(ok({"serve", "--key=/k"}).serve.key == "/k");
}

TEST_CASE("serve: keys and CAs", "[cli][serve]") {
  auto s = ok(serve_args({"--authorized-keys", "/ak", "--cert-authority", "/ca1.pub", "--cert-authority=/ca2.pub"}))
               .serve;
  CHECK(s.authorized_keys == "/ak");
  CHECK(s.cert_authorities == std::vector<std::string>{"/ca1.pub", "/ca2.pub"});
}

TEST_CASE("serve: --listen", "[cli][serve]") {
  CHECK(ok(serve_args({"--listen", "127.0.0.1:2222"})).serve.listen == HostPort{"127.0.0.1", 2222});
  CHECK(ok(serve_args({"--listen=:443"})).serve.listen == HostPort{"0.0.0.0", 443});
  CHECK(ok(serve_args({"--listen", "8022"})).serve.listen == HostPort{"0.0.0.0", 8022});
  CHECK(ok(serve_args({"--listen", "[::]:443"})).serve.listen == HostPort{"::", 443});
  CHECK(fails(serve_args({"--listen", "0.0.0.0"})) ==
        "missing port (expected HOST:PORT) in \"--listen 0.0.0.0\"");
  CHECK(fails(serve_args({"--listen", "::"})).find("missing port") != std::string::npos);
  CHECK(fails(serve_args({"--listen", "h:0"})).find("invalid port") != std::string::npos);
}

TEST_CASE("serve: transport and TLS material", "[cli][serve][tls]") {
  SECTION("tls with cert and key") {
    auto s = ok(serve_args({"--transport", "tls", "--tls-cert", "/c.pem", "--tls-key", "/k.pem"})).serve;
    CHECK(s.transport == "tls");
    CHECK(s.tls_cert == "/c.pem");
    CHECK(s.tls_key == "/k.pem");
  }
  SECTION("quic with cert and key") {
    CHECK(ok(serve_args({"--transport=quic", "--tls-cert=/c", "--tls-key=/k"})).serve.transport == "quic");
  }
  SECTION("bad transport") { CHECK(fails(serve_args({"--transport", "sctp"})).find("invalid transport") != std::string::npos); }
  SECTION("tls without material") {
    CHECK(fails(serve_args({"--transport", "tls"})) == "--transport tls needs --tls-cert and --tls-key, or --acme-domain");
    CHECK(fails(serve_args({"--transport", "quic"})).find("needs --tls-cert") != std::string::npos);
  }
  SECTION("cert without key and vice versa") {
    CHECK(fails(serve_args({"--transport", "tls", "--tls-cert", "/c"})) == "--tls-cert requires --tls-key");
    CHECK(fails(serve_args({"--transport", "tls", "--tls-key", "/k"})) == "--tls-key requires --tls-cert");
  }
  SECTION("TLS material with tcp") {
    CHECK(fails(serve_args({"--tls-cert", "/c", "--tls-key", "/k"})).find("need --transport tls or quic") !=
          std::string::npos);
  }
}

TEST_CASE("quic knobs on both commands", "[cli][quic]") {
  SECTION("defaults") {
    auto c = ok(connect_args({"--transport", "quic"})).connect.quic;
    CHECK(c.cc == "cubic");
    CHECK(c.idle_timeout_s == 60);
    CHECK(c.keepalive_s == 15);
  }
  SECTION("given on connect") {
    auto c = ok(connect_args({"--transport", "quic", "--quic-cc", "bbr", "--quic-idle-timeout", "300",
                              "--quic-keepalive=0"}))
                 .connect.quic;
    CHECK(c.cc == "bbr");
    CHECK(c.idle_timeout_s == 300);
    CHECK(c.keepalive_s == 0);
  }
  SECTION("given on serve") {
    auto s = ok(serve_args({"--transport", "quic", "--tls-cert", "/c", "--tls-key", "/k", "--quic-cc=reno",
                            "--quic-idle-timeout", "30", "--quic-keepalive", "10"}))
                 .serve.quic;
    CHECK(s.cc == "reno");
    CHECK(s.idle_timeout_s == 30);
    CHECK(s.keepalive_s == 10);
    CHECK(ok(serve_args({"--transport", "quic", "--tls-cert", "/c", "--tls-key", "/k", "--quic-cc", "bbr2"}))
              .serve.quic.cc == "bbr2");
  }
  SECTION("bad values") {
    CHECK(fails(connect_args({"--transport", "quic", "--quic-cc", "vegas"})) ==
          "invalid congestion control (expected cubic, bbr, bbr2 or reno) in \"--quic-cc vegas\"");
    CHECK(fails(connect_args({"--transport", "quic", "--quic-idle-timeout", "0"})).find("invalid idle timeout") == 0);
    CHECK(fails(connect_args({"--transport", "quic", "--quic-idle-timeout", "-5"})) == "missing value for --quic-idle-timeout");
    CHECK(fails(connect_args({"--transport", "quic", "--quic-keepalive", "1e3"})).find("invalid keep-alive") == 0);
    CHECK(fails(connect_args({"--transport", "quic", "--quic-keepalive", "99999999999"})).find("invalid keep-alive") == 0);
  }
  SECTION("keep-alive must come before the idle timeout") {
    CHECK(fails(connect_args({"--transport", "quic", "--quic-idle-timeout", "10"})) ==
          "--quic-keepalive (15 s) must be shorter than --quic-idle-timeout (10 s), or 0 to turn it off");
    CHECK(ok(connect_args({"--transport", "quic", "--quic-idle-timeout", "10", "--quic-keepalive", "0"}))
              .connect.quic.idle_timeout_s == 10);
  }
  SECTION("only with --transport quic") {
    const std::string want = "--quic-cc, --quic-idle-timeout and --quic-keepalive need --transport quic";
    CHECK(fails(connect_args({"--quic-cc", "bbr"})) == want);
    CHECK(fails(connect_args({"--transport", "tls", "--quic-keepalive", "5"})) == want);
    CHECK(fails(serve_args({"--transport", "tls", "--tls-cert", "/c", "--tls-key", "/k", "--quic-cc", "bbr"})) == want);
  }
}

TEST_CASE("serve: --stealth", "[cli][serve]") {
  CHECK(ok(serve_args({"--transport", "tls", "--tls-cert", "/c", "--tls-key", "/k", "--stealth"})).serve.stealth);
  CHECK(fails(serve_args({"--stealth"})) == "--stealth requires --transport tls");
  CHECK(fails(serve_args({"--stealth", "--transport", "quic", "--tls-cert", "/c", "--tls-key", "/k"})) ==
        "--stealth requires --transport tls");
  CHECK(fails(serve_args({"--stealth=1"})) == "--stealth takes no value");
}

TEST_CASE("serve: ACME", "[cli][serve][acme]") {
  SECTION("defaults to Let's Encrypt and a cache under HOME") {
    auto s = ok(serve_args({"--transport", "tls", "--acme-domain", "tunnel.example.com", "--acme-domain=alt.example.com",
                            "--acme-email", "ops@example.com"}))
                 .serve;
    CHECK(s.acme_domains == std::vector<std::string>{"tunnel.example.com", "alt.example.com"});
    CHECK(s.acme_email == "ops@example.com");
    CHECK(s.acme_directory == kLetsEncryptDirectory);
    CHECK(s.acme_cache == "/home/u/.cache/alknet/acme");
    CHECK_FALSE(s.acme_staging);
  }
  SECTION("staging, explicit cache, XDG") {
    Env env;
    env.vars["XDG_CACHE_HOME"] = "/xc";
    auto s = ok(serve_args({"--transport", "quic", "--acme-domain", "a.example", "--acme-staging"}), env).serve;
    CHECK(s.acme_staging);
    CHECK(s.acme_directory == kLetsEncryptStagingDirectory);
    CHECK(s.acme_cache == "/xc/alknet/acme");
    CHECK(ok(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--acme-cache", "/var/lib/a"}))
              .serve.acme_cache == "/var/lib/a");
  }
  SECTION("custom directory") {
    auto s = ok(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--acme-directory",
                            "https://localhost:14000/dir"}))
                 .serve;
    CHECK(s.acme_directory == "https://localhost:14000/dir");
  }
  SECTION("errors") {
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "*.example.com"})).find("invalid ACME domain") !=
          std::string::npos);
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "10.0.0.1"})).find("invalid ACME domain") !=
          std::string::npos);
    CHECK(fails(serve_args({"--acme-domain", "a.example"})).find("need --transport tls or quic") != std::string::npos);
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--tls-cert", "/c", "--tls-key",
                            "/k"})) == "use either --tls-cert/--tls-key or --acme-domain, not both");
    CHECK(fails(serve_args({"--acme-email", "ops@example.com"})).find("need --acme-domain") != std::string::npos);
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--acme-staging", "--acme-directory",
                            "https://x/dir"})) == "--acme-staging and --acme-directory cannot be combined");
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--acme-email", "nobody"}))
              .find("invalid e-mail") != std::string::npos);
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "a.example", "--acme-directory", "ftp://x"}))
              .find("invalid ACME directory") != std::string::npos);
    Env bare;
    bare.vars.clear();
    CHECK(fails(serve_args({"--transport", "tls", "--acme-domain", "a.example"}), bare).find("--acme-cache DIR") !=
          std::string::npos);
  }
}

TEST_CASE("serve: --proxy", "[cli][serve]") {
  auto p = ok(serve_args({"--proxy", "http://proxy.corp:3128"})).serve.proxy;
  REQUIRE(p);
  CHECK(p->kind == ProxyUrl::Http);
  CHECK(p->addr == HostPort{"proxy.corp", 3128});
  CHECK(fails(serve_args({"--proxy", "proxy.corp:3128"})).find("in \"--proxy proxy.corp:3128\"") != std::string::npos);
}

TEST_CASE("serve: numeric flags", "[cli][serve]") {
  CHECK(ok(serve_args({"--max-connections-per-ip", "8"})).serve.max_connections_per_ip == 8);
  CHECK(ok(serve_args({"--max-connections-per-ip=0"})).serve.max_connections_per_ip == 0);
  CHECK(ok(serve_args({"--max-auth-attempts", "3"})).serve.max_auth_attempts == 3);
  for (auto junk : {"-1", "+3", "3x", "x", "0x10", " 3", "3.0", "99999999999999999999", "1e3"}) {
    INFO(junk);
    std::string eq = std::string("--max-connections-per-ip=") + junk;
    CHECK(fails(serve_args({std::string_view(eq)})).find("invalid number") != std::string::npos);
    std::string eq2 = std::string("--max-auth-attempts=") + junk;
    CHECK(fails(serve_args({std::string_view(eq2)})).find("invalid number") != std::string::npos);
  }
  CHECK(fails(serve_args({"--max-auth-attempts", "0"})).find("invalid number (expected 1..1000)") !=
        std::string::npos);
  // A negative number as a separate argument looks like a flag, so it is a missing value.
  CHECK(fails(serve_args({"--max-auth-attempts", "-1"})) == "missing value for --max-auth-attempts");
}

TEST_CASE("serve: --permit-open is repeatable", "[cli][serve][permitopen]") {
  auto s = ok(serve_args({"--permit-open", "db.internal:5432", "--permit-open=*:443", "--permit-open",
                          "[2001:db8::1]:*"}))
               .serve;
  REQUIRE(s.permit_open.size() == 3);
  CHECK(s.permit_open[0] == PermitOpen{"db.internal", "5432"});
  CHECK(s.permit_open[1] == PermitOpen{"*", "443"});
  CHECK(s.permit_open[2] == PermitOpen{"2001:db8::1", "*"});
  CHECK(fails(serve_args({"--permit-open", "db.internal"})).find("in \"--permit-open db.internal\"") !=
        std::string::npos);
}

TEST_CASE("error messages escape control characters", "[cli]") {
  std::string bad = "--forward=8080:h\x1b[31m:80";
  auto e = fails(connect_args({std::string_view(bad)}));
  CHECK(e.find('\x1b') == std::string::npos);
}
