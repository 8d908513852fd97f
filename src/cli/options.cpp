#include "cli/options.hpp"

#include <cstdint>

namespace alk::cli {
namespace {

using net::quote_for_error;

// Where a value came from, for error messages: `"--forward 70000:h:1"` or `ALKNET_SERVER="x"`.
std::string where_flag(std::string_view flag, std::string_view value) {
  std::string s(flag);
  s += ' ';
  s += value;
  return " in " + quote_for_error(s);
}

std::string where_env(std::string_view name, std::string_view value) {
  return " in " + std::string(name) + "=" + quote_for_error(value);
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Digits only: no sign, no spaces, no hex, no trailing junk; bounded before it can overflow.
std::optional<unsigned> parse_unsigned(std::string_view s, unsigned min, unsigned max) {
  if (!all_digits(s) || s.size() > 9) return std::nullopt;
  unsigned v = 0;
  for (char c : s) v = v * 10 + static_cast<unsigned>(c - '0');
  if (v < min || v > max) return std::nullopt;
  return v;
}

bool valid_transport(std::string_view t) { return t == "tcp" || t == "tls" || t == "quic"; }

// OpenSSH prints SHA-256 fingerprints as unpadded base64: 32 bytes -> 43 chars whose last char
// carries 2 unused zero bits, so only every 4th alphabet letter can end a real fingerprint.
bool valid_host_key_fingerprint(std::string_view s, std::string* normalized) {
  constexpr std::string_view kPrefix = "SHA256:";
  if (s.substr(0, kPrefix.size()) != kPrefix) return false;
  std::string_view b64 = s.substr(kPrefix.size());
  if (b64.size() == 44 && b64.back() == '=') b64.remove_suffix(1);
  if (b64.size() != 43) return false;
  constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (char c : b64)
    if (kAlphabet.find(c) == std::string_view::npos) return false;
  if (kAlphabet.find(b64.back()) % 4 != 0) return false;
  *normalized = std::string(kPrefix) + std::string(b64);
  return true;
}

bool valid_user_name(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  for (unsigned char c : s)
    if (c <= 0x20 || c == 0x7f) return false;
  return true;
}

// --quic-cc, --quic-idle-timeout, --quic-keepalive: the same meaning on both commands.
// Returns false when |f| is not a QUIC flag; sets *err when its value is bad.
bool parse_quic_flag(std::string_view f, std::string_view v, QuicOptions* q, bool* given, std::string* err) {
  if (f == "--quic-cc") {
    if (v == "cubic" || v == "bbr" || v == "bbr2" || v == "reno") q->cc = std::string(v);
    else *err = "invalid congestion control (expected cubic, bbr, bbr2 or reno)";
  } else if (f == "--quic-idle-timeout") {
    auto n = parse_unsigned(v, 1, 86400);
    if (n) q->idle_timeout_s = *n;
    else *err = "invalid idle timeout (expected 1..86400 seconds)";
  } else if (f == "--quic-keepalive") {
    auto n = parse_unsigned(v, 0, 86400);
    if (n) q->keepalive_s = *n;
    else *err = "invalid keep-alive interval (expected 0..86400 seconds, 0 = off)";
  } else {
    return false;
  }
  *given = true;
  return true;
}

// Checks made once all flags are in.
std::optional<std::string> check_quic_options(const QuicOptions& q, bool given, std::string_view transport) {
  if (given && transport != "quic") return "--quic-cc, --quic-idle-timeout and --quic-keepalive need --transport quic";
  // A keep-alive at or past the idle timeout would arrive after the peer already gave up.
  if (q.keepalive_s != 0 && q.keepalive_s >= q.idle_timeout_s)
    return "--quic-keepalive (" + std::to_string(q.keepalive_s) + " s) must be shorter than --quic-idle-timeout (" +
           std::to_string(q.idle_timeout_s) + " s), or 0 to turn it off";
  return std::nullopt;
}

struct FlagDef {
  std::string_view name;   // "--server"
  std::string_view alias;  // "-q" or empty
  bool takes_value;
};

// One argument scanned against a flag table.
struct Arg {
  const FlagDef* def = nullptr;
  std::string_view value;
};

enum class Scan { Flag, Help, Error };

// Accepts "--flag value", "--flag=value" and the short alias. A separate value that looks like
// another flag is refused rather than swallowed: `--identity --server x` is a typo, not a path
// (a path starting with '-' can still be given as --identity=-odd).
Scan scan_one(std::span<const std::string_view> args, size_t* i, std::span<const FlagDef> table,
              std::string_view command, Arg* out, std::string* err) {
  std::string_view a = args[*i];
  if (a == "--help" || a == "-h") return Scan::Help;
  if (a.size() < 2 || a[0] != '-') {
    *err = "unexpected argument " + quote_for_error(a) + " for alknet " + std::string(command) +
           " (see 'alknet " + std::string(command) + " --help')";
    return Scan::Error;
  }
  std::string_view name = a, value;
  bool inline_value = false;
  if (a.substr(0, 2) == "--") {
    if (auto eq = a.find('='); eq != std::string_view::npos) {
      name = a.substr(0, eq);
      value = a.substr(eq + 1);
      inline_value = true;
    }
  }
  const FlagDef* def = nullptr;
  for (const auto& f : table)
    if (name == f.name || (!f.alias.empty() && name == f.alias)) def = &f;
  if (!def) {
    *err = "unknown flag " + quote_for_error(name) + " for alknet " + std::string(command) + " (see 'alknet " +
           std::string(command) + " --help')";
    return Scan::Error;
  }
  if (!def->takes_value) {
    if (inline_value) {
      *err = std::string(def->name) + " takes no value";
      return Scan::Error;
    }
  } else if (!inline_value) {
    if (*i + 1 >= args.size() || (args[*i + 1].size() > 1 && args[*i + 1][0] == '-')) {
      *err = "missing value for " + std::string(def->name);
      return Scan::Error;
    }
    value = args[++*i];
  }
  if (def->takes_value && value.empty()) {
    *err = "empty value for " + std::string(def->name);
    return Scan::Error;
  }
  out->def = def;
  out->value = value;
  return Scan::Flag;
}

std::string_view getenv_nonempty(const Getenv& env, const char* name) {
  if (!env) return {};
  const char* v = env(name);
  return v ? std::string_view(v) : std::string_view{};
}

// XDG base directories must be absolute; a relative one is ignored (XDG Base Directory spec).
std::optional<std::string> xdg_path(const Getenv& env, const char* xdg_var, std::string_view home_fallback,
                                    std::string_view leaf) {
  std::string_view xdg = getenv_nonempty(env, xdg_var);
  if (!xdg.empty() && xdg.front() == '/') return std::string(xdg) + "/alknet/" + std::string(leaf);
  std::string_view home = getenv_nonempty(env, "HOME");
  if (!home.empty()) return std::string(home) + "/" + std::string(home_fallback) + "/alknet/" + std::string(leaf);
  return std::nullopt;
}

// `:443` and a bare `443` mean "this port on every IPv4 address"; anything else is HOST:PORT.
std::optional<net::HostPort> parse_listen_addr(std::string_view v, std::string_view default_host, std::string* err) {
  if (all_digits(v)) return net::parse_host_port(std::string(default_host) + ":" + std::string(v), std::nullopt, err);
  if (v.size() > 1 && v[0] == ':' && v[1] != ':')
    return net::parse_host_port(std::string(default_host) + std::string(v), std::nullopt, err);
  return net::parse_host_port(v, std::nullopt, err);
}

constexpr FlagDef kConnectFlags[] = {
    {"--server", "", true},          {"--transport", "", true},     {"--identity", "", true},
    {"--socks5", "", true},          {"--forward", "", true},       {"--remote-forward", "", true},
    {"--proxy", "", true},           {"--tls-server-name", "", true}, {"--insecure", "", false},
    {"--tls-ca", "", true},          {"--socks5-auth", "", true},   {"--user", "", true},
    {"--socks5-auth-file", "", true},
    {"--known-hosts", "", true},     {"--host-key", "", true},      {"--quiet", "-q", false},
    {"--verbose", "-v", false},      {"--quic-cc", "", true},       {"--quic-idle-timeout", "", true},
    {"--quic-keepalive", "", true},
};

constexpr FlagDef kServeFlags[] = {
    {"--key", "", true},
    {"--authorized-keys", "", true},
    {"--cert-authority", "", true},
    {"--transport", "", true},
    {"--listen", "", true},
    {"--tls-cert", "", true},
    {"--tls-key", "", true},
    {"--acme-domain", "", true},
    {"--acme-directory", "", true},
    {"--acme-email", "", true},
    {"--acme-cache", "", true},
    {"--acme-staging", "", false},
    {"--acme-ca", "", true},
    {"--acme-http-port", "", true},
    {"--stealth", "", false},
    {"--proxy", "", true},
    {"--max-connections-per-ip", "", true},
    {"--max-auth-attempts", "", true},
    {"--permit-open", "", true},
    {"--quic-cc", "", true},
    {"--quic-idle-timeout", "", true},
    {"--quic-keepalive", "", true},
    {"--quiet", "-q", false},
    {"--verbose", "-v", false},
};

using Result = std::variant<Parsed, std::string>;

Parsed help(std::string text) {
  Parsed p;
  p.cmd = Command::Help;
  p.help_text = std::move(text);
  return p;
}

Result parse_connect(std::span<const std::string_view> args, const Getenv& env) {
  Parsed p;
  p.cmd = Command::Connect;
  ConnectOptions& o = p.connect;
  std::optional<std::string> server_raw, tls_server_name, known_hosts;
  bool quic_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    Arg a;
    std::string err;
    switch (scan_one(args, &i, kConnectFlags, "connect", &a, &err)) {
      case Scan::Help: return help(connect_help());
      case Scan::Error: return err;
      case Scan::Flag: break;
    }
    std::string_view f = a.def->name, v = a.value;
    auto bad = [&](std::string what) -> Result { return what + where_flag(f, v); };
    if (parse_quic_flag(f, v, &o.quic, &quic_given, &err)) {
      if (!err.empty()) return bad(err);
    } else if (f == "--server") {
      server_raw = std::string(v);
    } else if (f == "--transport") {
      if (!valid_transport(v)) return bad("invalid transport (expected tcp, tls or quic)");
      o.transport = std::string(v);
    } else if (f == "--identity") {
      o.identity = std::string(v);
    } else if (f == "--socks5") {
      auto hp = parse_listen_addr(v, "127.0.0.1", &err);
      if (!hp) return bad(err);
      o.socks5 = std::move(*hp);
    } else if (f == "--forward") {
      auto fw = net::parse_forward(v, &err);
      if (!fw) return bad(err);
      o.forwards.push_back(std::move(*fw));
    } else if (f == "--remote-forward") {
      auto fw = net::parse_remote_forward(v, &err);
      if (!fw) return bad(err);
      o.remote_forwards.push_back(std::move(*fw));
    } else if (f == "--proxy") {
      auto u = net::parse_proxy_url(v, &err);
      if (!u) return bad(err);
      o.proxy = std::move(*u);
    } else if (f == "--tls-server-name") {
      if (!net::is_valid_hostname(v)) return bad("invalid server name");
      tls_server_name = std::string(v);
    } else if (f == "--insecure") {
      o.insecure = true;
    } else if (f == "--tls-ca") {
      o.tls_ca = std::string(v);
    } else if (f == "--socks5-auth") {
      auto up = net::parse_user_pass(v, &err);
      // Never echo a password back into logs or terminals.
      if (!up) return err + " in --socks5-auth";
      o.socks5_auth = std::move(*up);
    } else if (f == "--socks5-auth-file") {
      // Read (and its permissions checked) at start-up by `connect`: this parser touches no files.
      o.socks5_auth_file = std::string(v);
    } else if (f == "--user") {
      if (!valid_user_name(v)) return bad("invalid user name (1..255 bytes, no spaces or control characters)");
      o.user = std::string(v);
    } else if (f == "--known-hosts") {
      known_hosts = std::string(v);
    } else if (f == "--host-key") {
      if (!valid_host_key_fingerprint(v, &o.host_key))
        return bad("invalid host key fingerprint (expected SHA256: and 43 base64 characters, as printed by ssh-keygen -lf)");
    } else if (f == "--quiet") {
      o.quiet = true;
    } else if (f == "--verbose") {
      o.verbose = true;
    }
  }

  std::string err;
  if (server_raw) {
    auto hp = net::parse_host_port(*server_raw, 22, &err);
    if (!hp) return err + where_flag("--server", *server_raw);
    o.server = std::move(*hp);
  } else if (auto e = getenv_nonempty(env, "ALKNET_SERVER"); !e.empty()) {
    auto hp = net::parse_host_port(e, 22, &err);
    if (!hp) return err + where_env("ALKNET_SERVER", e);
    o.server = std::move(*hp);
  } else {
    return "missing --server HOST[:PORT] (or set ALKNET_SERVER)";
  }
  if (o.identity.empty()) {
    o.identity = std::string(getenv_nonempty(env, "ALKNET_IDENTITY"));
    if (o.identity.empty()) return "missing --identity PATH (or set ALKNET_IDENTITY)";
  }
  o.tls_server_name = tls_server_name ? *tls_server_name : o.server.host;
  if (known_hosts) {
    o.known_hosts = *known_hosts;
  } else if (auto path = xdg_path(env, "XDG_CONFIG_HOME", ".config", "known_hosts")) {
    o.known_hosts = *path;
  } else if (o.host_key.empty()) {
    return "cannot place known_hosts: neither XDG_CONFIG_HOME nor HOME is set; pass --known-hosts PATH";
  }
  if (auto e = check_quic_options(o.quic, quic_given, o.transport)) return *e;
  if (o.quiet && o.verbose) return "--quiet and --verbose cannot be combined";
  if (o.socks5_auth && !o.socks5_auth_file.empty()) return "use either --socks5-auth or --socks5-auth-file, not both";
  return p;
}

Result parse_serve(std::span<const std::string_view> args, const Getenv& env) {
  Parsed p;
  p.cmd = Command::Serve;
  ServeOptions& o = p.serve;
  bool acme_directory_given = false, quic_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    Arg a;
    std::string err;
    switch (scan_one(args, &i, kServeFlags, "serve", &a, &err)) {
      case Scan::Help: return help(serve_help());
      case Scan::Error: return err;
      case Scan::Flag: break;
    }
    std::string_view f = a.def->name, v = a.value;
    auto bad = [&](std::string what) -> Result { return what + where_flag(f, v); };
    if (parse_quic_flag(f, v, &o.quic, &quic_given, &err)) {
      if (!err.empty()) return bad(err);
    } else if (f == "--key") {
      o.key = std::string(v);
    } else if (f == "--authorized-keys") {
      o.authorized_keys = std::string(v);
    } else if (f == "--cert-authority") {
      o.cert_authorities.emplace_back(v);
    } else if (f == "--transport") {
      if (!valid_transport(v)) return bad("invalid transport (expected tcp, tls or quic)");
      o.transport = std::string(v);
    } else if (f == "--listen") {
      auto hp = parse_listen_addr(v, "0.0.0.0", &err);
      if (!hp) return bad(err);
      o.listen = std::move(*hp);
    } else if (f == "--tls-cert") {
      o.tls_cert = std::string(v);
    } else if (f == "--tls-key") {
      o.tls_key = std::string(v);
    } else if (f == "--acme-domain") {
      // ACME http-01 / tls-alpn-01 cannot validate wildcards or IP addresses.
      if (!net::is_valid_hostname(v) || net::is_ip_literal(v) || v.find('.') == std::string_view::npos)
        return bad("invalid ACME domain (expected a DNS name like tunnel.example.com)");
      o.acme_domains.emplace_back(v);
    } else if (f == "--acme-directory") {
      if (v.substr(0, 8) != "https://" && v.substr(0, 7) != "http://")
        return bad("invalid ACME directory URL (expected https://...)");
      o.acme_directory = std::string(v);
      acme_directory_given = true;
    } else if (f == "--acme-email") {
      auto at = v.find('@');
      if (at == std::string_view::npos || at == 0 || at + 1 == v.size() || !valid_user_name(v))
        return bad("invalid e-mail address");
      o.acme_email = std::string(v);
    } else if (f == "--acme-cache") {
      o.acme_cache = std::string(v);
    } else if (f == "--acme-staging") {
      o.acme_staging = true;
    } else if (f == "--acme-ca") {
      o.acme_ca = std::string(v);
    } else if (f == "--acme-http-port") {
      auto n = parse_unsigned(v, 1, 65535);
      if (!n) return bad("invalid port (expected 1..65535)");
      o.acme_http_port = uint16_t(*n);
    } else if (f == "--stealth") {
      o.stealth = true;
    } else if (f == "--proxy") {
      auto u = net::parse_proxy_url(v, &err);
      if (!u) return bad(err);
      o.proxy = std::move(*u);
    } else if (f == "--max-connections-per-ip") {
      auto n = parse_unsigned(v, 0, 1000000);
      if (!n) return bad("invalid number (expected 0..1000000, 0 = unlimited)");
      o.max_connections_per_ip = *n;
    } else if (f == "--max-auth-attempts") {
      auto n = parse_unsigned(v, 1, 1000);
      if (!n) return bad("invalid number (expected 1..1000)");
      o.max_auth_attempts = *n;
    } else if (f == "--permit-open") {
      auto po = net::parse_permit_open(v, &err);
      if (!po) return bad(err);
      o.permit_open.push_back(std::move(*po));
    } else if (f == "--quiet") {
      o.quiet = true;
    } else if (f == "--verbose") {
      o.verbose = true;
    }
  }

  if (o.key.empty()) return "missing --key PATH (the server's SSH host private key)";
  if (o.stealth && o.transport != "tls") return "--stealth requires --transport tls";
  const bool acme = !o.acme_domains.empty();
  const bool tls_like = o.transport == "tls" || o.transport == "quic";
  if (!o.tls_cert.empty() && o.tls_key.empty()) return "--tls-cert requires --tls-key";
  if (o.tls_cert.empty() && !o.tls_key.empty()) return "--tls-key requires --tls-cert";
  if (!tls_like && (!o.tls_cert.empty() || acme))
    return "--tls-cert/--acme-domain need --transport tls or quic";
  if (tls_like && o.tls_cert.empty() && !acme)
    return "--transport " + o.transport + " needs --tls-cert and --tls-key, or --acme-domain";
  if (acme && !o.tls_cert.empty()) return "use either --tls-cert/--tls-key or --acme-domain, not both";
  if (!acme && (acme_directory_given || !o.acme_email.empty() || !o.acme_cache.empty() || o.acme_staging ||
                !o.acme_ca.empty() || o.acme_http_port))
    return "--acme-directory, --acme-email, --acme-cache, --acme-staging, --acme-ca and --acme-http-port need --acme-domain";
  if (acme_directory_given && o.acme_staging) return "--acme-staging and --acme-directory cannot be combined";
  if (acme) {
    if (!acme_directory_given)
      o.acme_directory = std::string(o.acme_staging ? kLetsEncryptStagingDirectory : kLetsEncryptDirectory);
    if (o.acme_cache.empty()) {
      auto path = xdg_path(env, "XDG_CACHE_HOME", ".cache", "acme");
      if (!path) return "cannot place the ACME cache: neither XDG_CACHE_HOME nor HOME is set; pass --acme-cache DIR";
      o.acme_cache = *path;
    }
  }
  if (auto e = check_quic_options(o.quic, quic_given, o.transport)) return *e;
  if (o.quiet && o.verbose) return "--quiet and --verbose cannot be combined";
  return p;
}

}  // namespace

std::variant<Parsed, std::string> parse_args(std::span<const std::string_view> args, const Getenv& env) {
  if (args.empty()) return std::string("missing command (expected connect or serve; see 'alknet --help')");
  std::string_view cmd = args[0];
  auto rest = args.subspan(1);
  if (cmd == "--help" || cmd == "-h") return help(top_help());
  if (cmd == "help") {
    if (rest.empty()) return help(top_help());
    if (rest[0] == "connect") return help(connect_help());
    if (rest[0] == "serve") return help(serve_help());
    return "no help for " + quote_for_error(rest[0]) + " (expected connect or serve)";
  }
  if (cmd == "--version" || cmd == "-V") {
    Parsed p;
    p.cmd = Command::Version;
    return p;
  }
  if (cmd == "connect") return parse_connect(rest, env);
  if (cmd == "serve") return parse_serve(rest, env);
  if (!cmd.empty() && cmd[0] == '-') return "unknown flag " + quote_for_error(cmd) + " (see 'alknet --help')";
  return "unknown command " + quote_for_error(cmd) + " (expected connect or serve)";
}

std::string top_help() {
  return R"(alknet - SSH tunnel over tcp, TLS or QUIC, exposed as a local SOCKS5 proxy

USAGE
  alknet connect --server HOST[:PORT] --identity PATH [FLAGS]
  alknet serve   --key PATH [FLAGS]
  alknet --help | --version

COMMANDS
  connect   keep one SSH session to an alknet server (or any OpenSSH server) and
            offer it locally as a SOCKS5 proxy plus -L/-R style port forwards
  serve     accept alknet clients and dial the destinations they ask for

GLOBAL FLAGS
  -h, --help      show this help; 'alknet connect --help' and 'alknet serve --help'
                  list each command's flags
  -V, --version   print the version and exit

EXAMPLES
  alknet serve --key /etc/alknet/host_ed25519 --authorized-keys /etc/alknet/authorized_keys
  alknet connect --server tunnel.example.com --identity ~/.ssh/id_ed25519
  curl --socks5-hostname 127.0.0.1:1080 http://db.internal:8080/

Full tunnel: pair the SOCKS5 port with tun2proxy:
  tun2proxy --proxy socks5://127.0.0.1:1080 --setup --bypass SERVER_IP
)";
}

namespace {

// The QUIC knobs read the same in both commands' help.
#define QUIC_FLAG_HELP                                                                                      \
  {"--quic-cc cubic|bbr|bbr2|reno", "quic congestion control; default cubic", "--quic-cc bbr2"},           \
      {"--quic-idle-timeout SECONDS", "quic: drop the connection after this long silent; default 60",      \
       "--quic-idle-timeout 300"},                                                                          \
      {"--quic-keepalive SECONDS", "quic: PING after this long idle, 0 = off; default 15", "--quic-keepalive 25"},

struct FlagHelp {
  std::string_view flag;     // "--server HOST[:PORT]"
  std::string_view what;     // one line
  std::string_view example;  // a complete flag use
};

struct HelpSection {
  std::string_view title;
  std::initializer_list<FlagHelp> flags;
};

// Uniform layout: flag column, one-line description, then the example under it.
void render(std::string& out, std::initializer_list<HelpSection> sections) {
  constexpr size_t kColumn = 30;
  const std::string indent(kColumn, ' ');
  for (const auto& s : sections) {
    out += s.title;
    out += '\n';
    for (const auto& f : s.flags) {
      std::string line = "  " + std::string(f.flag);
      if (line.size() + 2 > kColumn) {
        out += line + '\n';
        line = indent;
      } else {
        line.resize(kColumn, ' ');
      }
      out += line + std::string(f.what) + '\n';
      out += indent + "e.g. " + std::string(f.example) + '\n';
    }
    out += '\n';
  }
}

}  // namespace

std::string connect_help() {
  std::string out = R"(alknet connect - keep an SSH session to a server and expose it as SOCKS5 + forwards

USAGE
  alknet connect --server HOST[:PORT] --identity PATH [FLAGS]

Every flag accepts '--flag VALUE' and '--flag=VALUE'. IPv6 goes in brackets: [2001:db8::1]:22.

)";
  render(out, {
    {"CONNECTION", {
      {"--server HOST[:PORT]", "server IP or DNS name, port defaults to 22; env ALKNET_SERVER",
       "--server tunnel.example.com:443"},
      {"--transport tcp|tls|quic", "how the SSH bytes travel; default tcp", "--transport tls"},
      {"--proxy URL", "reach the server via socks5://, socks5h:// or http://[USER:PASS@]H:P",
       "--proxy socks5://127.0.0.1:9050"},
    }},
    {"AUTHENTICATION", {
      {"--identity PATH", "OpenSSH Ed25519 private key (PATH-cert.pub used if present); env ALKNET_IDENTITY",
       "--identity ~/.ssh/id_ed25519"},
      {"--user NAME", "SSH user name; default alknet", "--user deploy"},
      {"--host-key SHA256:FP", "pin the server host key (as printed by ssh-keygen -lf)",
       "--host-key SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s"},
      {"--known-hosts PATH", "trust-on-first-use store; default $XDG_CONFIG_HOME/alknet/known_hosts",
       "--known-hosts ~/.config/alknet/known_hosts"},
    }},
    {"TLS AND QUIC", {
      {"--tls-server-name NAME", "SNI and certificate name; default: the host of --server",
       "--tls-server-name cdn.example.com"},
      {"--tls-ca PATH", "trust this PEM CA bundle instead of the system store", "--tls-ca /etc/alknet/ca.pem"},
      {"--insecure", "accept any TLS certificate (development only)", "--transport tls --insecure"},
      QUIC_FLAG_HELP
    }},
    {"LOCAL SIDE", {
      {"--socks5 [ADDR:]PORT", "SOCKS5 listener, always on; default 127.0.0.1:1080", "--socks5 127.0.0.1:1081"},
      {"--socks5-auth USER:PASS", "require RFC 1929 username/password on the SOCKS5 port",
       "--socks5-auth alice:s3cret"},
      {"--socks5-auth-file PATH", "the same, USER:PASS read from the first line of a file that others cannot read",
       "--socks5-auth-file /etc/alknet/socks5-auth"},
      {"--forward [BIND:]LPORT:HOST:RPORT", "local forward like ssh -L, repeatable; BIND defaults to 127.0.0.1",
       "--forward 5432:db.internal:5432"},
      {"--remote-forward [BIND:]RPORT:HOST:LPORT", "remote forward like ssh -R, repeatable; BIND defaults to localhost",
       "--remote-forward 8080:127.0.0.1:3000"},
    }},
    {"OUTPUT", {
      {"-q, --quiet", "only print errors", "--quiet"},
      {"-v, --verbose", "print debugging detail (never destinations)", "-v"},
      {"-h, --help", "show this help", "alknet connect --help"},
    }},
  });
  out += R"(EXAMPLES
  alknet connect --server 203.0.113.7 --identity ~/.ssh/id_ed25519
  alknet connect --server tunnel.example.com:443 --transport tls --identity key \
      --forward 5432:db.internal:5432 --forward [::1]:6379:[2001:db8::5]:6379
  curl --socks5-hostname 127.0.0.1:1080 http://intranet.internal/
)";
  return out;
}

std::string serve_help() {
  std::string out = R"(alknet serve - accept alknet clients and dial the destinations they ask for

USAGE
  alknet serve --key PATH [FLAGS]

Every flag accepts '--flag VALUE' and '--flag=VALUE'. IPv6 goes in brackets: [::]:443.

)";
  render(out, {
    {"IDENTITY AND ACCESS", {
      {"--key PATH", "SSH host private key, OpenSSH format (required)", "--key /etc/alknet/host_ed25519"},
      {"--authorized-keys PATH", "OpenSSH authorized_keys (cert-authority, permit-port-forwarding, from=)",
       "--authorized-keys /etc/alknet/authorized_keys"},
      {"--cert-authority PATH", "CA public key trusted for user certificates, repeatable",
       "--cert-authority /etc/alknet/user_ca.pub"},
      {"--max-auth-attempts N", "disconnect after N failed attempts; default 10", "--max-auth-attempts 3"},
      {"--max-connections-per-ip N", "concurrent sessions per client address; default 0 = unlimited",
       "--max-connections-per-ip 8"},
      {"--permit-open HOST:PORT", "only dial these, repeatable; '*' wildcards, [V6]:PORT, 'any'",
       "--permit-open '*.internal:5432'"},
    }},
    {"TRANSPORT", {
      {"--transport tcp|tls|quic", "default tcp; quic listens on UDP", "--transport tls"},
      {"--listen [ADDR:]PORT", "listen address; default 0.0.0.0:22; ':443' = all IPv4 addresses",
       "--listen [::]:443"},
      {"--tls-cert PATH", "PEM certificate chain for tls/quic (with --tls-key)",
       "--tls-cert /etc/alknet/fullchain.pem"},
      {"--tls-key PATH", "PEM private key for --tls-cert", "--tls-key /etc/alknet/privkey.pem"},
      {"--stealth", "tls only: anything that is not SSH gets an nginx-like 404",
       "--transport tls --stealth"},
      QUIC_FLAG_HELP
    }},
    {"ACME (automatic certificates, RFC 8555)", {
      {"--acme-domain NAME", "obtain and renew a certificate for NAME, repeatable",
       "--acme-domain tunnel.example.com"},
      {"--acme-email ADDR", "ACME account contact address", "--acme-email ops@example.com"},
      {"--acme-directory URL", "ACME directory; default Let's Encrypt",
       "--acme-directory https://localhost:14000/dir"},
      {"--acme-staging", "use the Let's Encrypt staging directory (testing)", "--acme-staging"},
      {"--acme-cache DIR", "account and certificates; default $XDG_CACHE_HOME/alknet/acme",
       "--acme-cache /var/lib/alknet/acme"},
      {"--acme-ca PATH", "trust this PEM CA for the directory's HTTPS (private or test CA)",
       "--acme-ca /etc/alknet/acme-ca.pem"},
      {"--acme-http-port PORT", "validate by http-01 on this TCP port (80) instead of tls-alpn-01",
       "--acme-http-port 80"},
    }},
    {"OUTBOUND", {
      {"--proxy URL", "dial every destination via socks5://H:P or http://H:P",
       "--proxy http://proxy.corp:3128"},
    }},
    {"OUTPUT", {
      {"-q, --quiet", "only print errors", "--quiet"},
      {"-v, --verbose", "print debugging detail (never destinations)", "-v"},
      {"-h, --help", "show this help", "alknet serve --help"},
    }},
  });
  out += R"(EXAMPLES
  alknet serve --key host_ed25519 --authorized-keys authorized_keys --listen :2222
  alknet serve --key host_ed25519 --authorized-keys authorized_keys --transport tls \
      --listen :443 --acme-domain tunnel.example.com --acme-email ops@example.com --stealth
)";
  return out;
}

}  // namespace alk::cli
