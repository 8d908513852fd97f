// TLS 1.3 transport over a connected TCP socket (BoringSSL driven through an in-memory BIO,
// all socket I/O on the reactor; after the handshake our own record layer, record.hpp, seals
// and opens the records of the AES-GCM suites), and the server's stealth mode.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"
#include "stream/stream.hpp"
#include "transport/tls/stealth.hpp"

struct ssl_ctx_st;
struct ssl_st;

namespace alk::transport {

inline constexpr std::string_view kAlpnSsh = "alknet-ssh";
// ACME tls-alpn-01 validation (RFC 8737): answered with a challenge certificate, then closed.
inline constexpr std::string_view kAlpnAcme = "acme-tls/1";

struct TlsClientConfig {
  std::string server_name;  // SNI and the name (or IP) the certificate must match
  bool insecure = false;    // accept any certificate
  std::string ca_file;      // empty = system store /etc/ssl/certs/ca-certificates.crt
  std::string alpn = std::string(kAlpnSsh);
  rt::Duration handshake_timeout = std::chrono::seconds(10);
};

struct TlsServerConfig {
  std::string cert_file, key_file;  // PEM chain (leaf first) and its EC, RSA or Ed25519 key
  std::string cert_pem, key_pem;    // the same in memory, used instead of the files when set
  std::vector<std::string> alpn = {std::string(kAlpnSsh)};
  bool stealth = false;
  rt::Duration handshake_timeout = std::chrono::seconds(10);
  rt::Duration peek_timeout = std::chrono::seconds(5);
};

namespace detail {
struct SslCtxFree {
  void operator()(ssl_ctx_st *ctx) const;
};
using SslCtxPtr = std::unique_ptr<ssl_ctx_st, SslCtxFree>;
}  // namespace detail

class TlsClientContext {
  struct Private {};

 public:
  static rt::Result<std::shared_ptr<TlsClientContext>> create(const TlsClientConfig &cfg);
  TlsClientContext(Private, TlsClientConfig cfg, detail::SslCtxPtr ctx);
  const TlsClientConfig &config() const { return cfg_; }
  ssl_ctx_st *native() const { return ctx_.get(); }

 private:
  TlsClientConfig cfg_;
  detail::SslCtxPtr ctx_;
};

class TlsServerContext {
  struct Private {};

 public:
  // Loads the certificate chain and key; the error text names the file and the reason.
  static rt::Result<std::shared_ptr<TlsServerContext>> create(const TlsServerConfig &cfg);
  TlsServerContext(Private, TlsServerConfig cfg, detail::SslCtxPtr ctx);
  const TlsServerConfig &config() const { return cfg_; }
  ssl_ctx_st *native() const { return ctx_.get(); }

  // Hot swap: handshakes that start after this call use the new PEM chain and key;
  // connections already made keep theirs. On error the old certificate stays.
  rt::Result<void> use_certificate(std::string_view chain_pem, std::string_view key_pem);

  // (chain PEM, key PEM) answering tls-alpn-01 for a server name, or nothing.
  using AcmeChallenges = std::function<std::optional<std::pair<std::string, std::string>>(std::string_view)>;
  // A client offering ALPN acme-tls/1 for a name the lookup knows gets that certificate and
  // the connection ends after the handshake (tls_accept returns kErrNotAllowed): it never
  // reaches SSH or stealth. Anything else is handled as before.
  void set_acme_challenges(AcmeChallenges lookup) { acme_ = std::move(lookup); }
  const AcmeChallenges &acme_challenges() const { return acme_; }

 private:
  void attach(detail::SslCtxPtr ctx);
  TlsServerConfig cfg_;
  detail::SslCtxPtr ctx_;
  AcmeChallenges acme_;
};

// Loads a PEM chain (leaf first) and its key, held in memory, into ctx (tls and quic both use
// it). False with *why set ("certificate: ...", "key: does not match the certificate").
bool use_pem_certificate(ssl_ctx_st *ctx, std::string_view chain_pem, std::string_view key_pem, std::string *why);

// The channel binding of an established TLS 1.3 connection (tls or quic): 16 bytes of the
// exporter (RFC 8446 §7.5) under our own label. Nothing before the handshake has finished or
// for TLS 1.2 (stealth accepts it; our own client never speaks it).
std::optional<stream::ChannelBinding> tls_channel_binding(ssl_st *ssl);

// Client handshake over a connected TCP socket: verifies the chain and the host name (or IP)
// unless insecure, and insists on the ALPN the config asks for. Bounded by handshake_timeout.
rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> tls_connect(std::shared_ptr<TlsClientContext> ctx,
                                                                  rt::UniqueFd tcp);

// Server handshake, bounded by handshake_timeout. Without stealth a client that does not
// negotiate one of cfg.alpn fails. With stealth any ALPN (or none) completes the TLS
// handshake; then a client that did not negotiate ours, or whose first bytes (within
// peek_timeout) are not "SSH-2.0-", gets kStealthNotFound, the connection is closed and the
// result is an error with code rt::kErrNotAllowed. An SSH client gets a stream that replays
// the peeked bytes first.
rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> tls_accept(std::shared_ptr<TlsServerContext> ctx,
                                                                 rt::UniqueFd tcp);

}  // namespace alk::transport
