// alknet's command line: argv in, a fully validated options struct or one error message out.
//
// Pure: the only outside input is the environment, read through an injectable lookup so tests
// (and the fuzzer) control it. Everything a user can get wrong on the command line is caught
// here, before any socket or key file is touched, so main() can print `error: <message>` and
// exit at once.
#pragma once

#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "net/spec.hpp"

namespace alk::cli {

// QUIC knobs shared by both commands (given only with --transport quic).
struct QuicOptions {
  std::string cc = "cubic";      // cubic | bbr | bbr2 | reno (quic::cc_algo maps it)
  unsigned idle_timeout_s = 60;  // the connection dies after this long without any packet
  unsigned keepalive_s = 15;     // PING after this long without sending; 0 = never
};

struct ConnectOptions {
  net::HostPort server;
  std::string transport = "tcp";  // tcp | tls | quic
  std::string identity;
  net::HostPort socks5{"127.0.0.1", 1080};
  std::vector<net::ForwardSpec> forwards, remote_forwards;
  std::optional<net::ProxyUrl> proxy;
  std::string tls_server_name;  // defaults to server.host
  bool insecure = false;
  std::string tls_ca;
  std::optional<net::UserPass> socks5_auth;
  std::string socks5_auth_file;  // USER:PASS on its first line; read by connect at start-up
  std::string user = "alknet";
  std::string known_hosts;  // defaults to $XDG_CONFIG_HOME/alknet/known_hosts or ~/.config/...
  std::string host_key;     // "SHA256:" + 43 base64 chars, or empty (trust on first use)
  QuicOptions quic;
  bool quiet = false, verbose = false;
};

struct ServeOptions {
  std::string key;
  std::string authorized_keys;
  std::vector<std::string> cert_authorities;
  std::string transport = "tcp";
  net::HostPort listen{"0.0.0.0", 22};
  std::string tls_cert, tls_key;
  std::vector<std::string> acme_domains;
  std::string acme_directory;  // filled with Let's Encrypt (production or staging) when ACME is used
  std::string acme_email;
  std::string acme_cache;  // filled with $XDG_CACHE_HOME/alknet/acme or ~/.cache/... when ACME is used
  bool acme_staging = false;
  std::string acme_ca;          // PEM CA bundle for the directory's HTTPS (private or test CA)
  uint16_t acme_http_port = 0;  // answer http-01 on this TCP port instead of tls-alpn-01; 0 = off
  bool stealth = false;
  std::optional<net::ProxyUrl> proxy;
  unsigned max_connections_per_ip = 0;  // 0 = unlimited
  unsigned max_auth_attempts = 10;
  std::vector<net::PermitOpen> permit_open;  // empty = any destination except link-local
  QuicOptions quic;
  bool quiet = false, verbose = false;
};

enum class Command { Help, Version, Connect, Serve };

struct Parsed {
  Command cmd = Command::Help;
  std::string help_text;  // set for Command::Help
  ConnectOptions connect;
  ServeOptions serve;
};

using Getenv = std::function<const char*(const char*)>;

inline constexpr std::string_view kLetsEncryptDirectory = "https://acme-v02.api.letsencrypt.org/directory";
inline constexpr std::string_view kLetsEncryptStagingDirectory =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

// args excludes argv[0]. Also accepts `alknet help [connect|serve]`. On failure returns the
// message without the "error: " prefix.
// An empty env function means "no environment".
std::variant<Parsed, std::string> parse_args(std::span<const std::string_view> args, const Getenv& env);

std::string top_help();
std::string connect_help();
std::string serve_help();

}  // namespace alk::cli
