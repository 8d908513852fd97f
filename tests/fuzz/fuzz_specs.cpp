// Feeds every address/spec parser and the whole command-line parser with fuzzer-chosen strings.
// The input is split on '\n' into pieces (so seeds are readable text); each piece goes through
// every net/spec parser, pairs of pieces through permit_open_matches, and the list of pieces
// becomes an argv for parse_args with a small fuzzer-influenced environment: as given, or behind
// "connect" or "serve" (the last byte picks one, so each input costs one command-line parse).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cli/options.hpp"
#include "net/spec.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void feed_parsers(const std::string& s) {
  using namespace alk::net;
  std::string err;
  if (auto hp = parse_host_port(s, 22, &err)) {
    check(!hp->host.empty() && hp->port != 0);
    check(is_valid_hostname(hp->host) || hp->host.find('%') != std::string::npos);
  }
  (void)parse_host_port(s, std::nullopt, &err, true);
  (void)parse_host_port(s, std::nullopt, nullptr);
  (void)is_valid_hostname(s);
  (void)is_ip_literal(s);
  (void)is_link_local(s);
  if (auto f = parse_forward(s, &err)) check(f->bind_port != 0 && f->target_port != 0);
  if (auto f = parse_remote_forward(s, &err)) check(f->target_port != 0);
  if (auto u = parse_proxy_url(s, &err)) check(u->addr.port != 0 && u->user.size() <= 255 && u->pass.size() <= 255);
  if (auto up = parse_user_pass(s, &err)) check(!up->user.empty() && !up->pass.empty() && up->user.size() <= 255);
  if (auto po = parse_permit_open(s, &err)) {
    // A parsed pattern always re-parses to itself once rendered back.
    std::string text = (po->host_pattern.find(':') != std::string::npos ? "[" + po->host_pattern + "]"
                                                                         : po->host_pattern) +
                       ":" + po->port_pattern;
    auto again = parse_permit_open(text, &err);
    check(again && *again == *po);
    (void)permit_open_matches(*po, s, 443);
  }
  check(quote_for_error(s).size() <= 80 * 4 + 5);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;  // command lines are short; keep iterations fast
  std::vector<std::string> pieces;
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == '\n') {
      pieces.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  pieces.push_back(cur);

  for (const auto& p : pieces) feed_parsers(p);
  for (size_t i = 0; i + 1 < pieces.size() && i < 8; ++i) {
    std::string err;
    if (auto po = alk::net::parse_permit_open(pieces[i], &err))
      (void)alk::net::permit_open_matches(*po, pieces[i + 1], static_cast<uint16_t>(size));
  }

  // Pieces copied into owned strings so ASan sees reads past each argument.
  std::vector<std::string_view> args(pieces.begin(), pieces.end());
  const std::string& last = pieces.back();
  const bool env_on = size > 0 && (data[0] & 1);
  alk::cli::Getenv env = [&](const char* name) -> const char* {
    std::string_view n = name;
    if (n == "HOME") return (size > 1 && (data[1] & 1)) ? "/home/f" : nullptr;
    if (!env_on) return nullptr;
    if (n == "ALKNET_SERVER" || n == "ALKNET_IDENTITY" || n == "XDG_CONFIG_HOME" || n == "XDG_CACHE_HOME")
      return last.c_str();
    return nullptr;
  };
  const int mode = size > 0 ? data[size - 1] % 3 : 0;
  if (mode != 0) {
    std::vector<std::string_view> sub{mode == 1 ? "connect" : "serve"};
    sub.insert(sub.end(), args.begin(), args.end());
    (void)alk::cli::parse_args(sub, env);
    return 0;
  }
  auto r = alk::cli::parse_args(args, env);
  if (auto* p = std::get_if<alk::cli::Parsed>(&r)) {
    if (p->cmd == alk::cli::Command::Connect) {
      check(!p->connect.identity.empty() && p->connect.server.port != 0);
      check(p->connect.transport == "tcp" || p->connect.transport == "tls" || p->connect.transport == "quic");
    } else if (p->cmd == alk::cli::Command::Serve) {
      check(!p->serve.key.empty());
      check(!p->serve.stealth || p->serve.transport == "tls");
      check(p->serve.transport == "tcp" || !p->serve.tls_cert.empty() || !p->serve.acme_domains.empty());
    }
  } else {
    check(!std::get<std::string>(r).empty());
  }
  return 0;
}
