// What `alknet serve` needs from ACME, behind one object: the manager and its cache, the TLS
// context that serves the managed certificate and answers tls-alpn-01, the challenge
// listeners a transport needs (quic: TCP on the same port for tls-alpn-01, since its UDP port
// cannot carry it; --acme-http-port: http-01), and the renewal loop running beside the server.
#pragma once

#include <functional>
#include <memory>

#include "acme/manager.hpp"
#include "net/socket.hpp"
#include "runtime/scope.hpp"
#include "runtime/task.hpp"
#include "transport/tls/tls.hpp"

namespace alk::acme {

class ServerAcme {
 public:
  // Needs the reactor (it opens listeners). base carries the TLS settings (stealth, ALPN) of
  // the server's own listener; listen is its address. Errors name the path or the address.
  static rt::Result<std::unique_ptr<ServerAcme>> open(ManagerConfig cfg, transport::TlsServerConfig base,
                                                      const net::Endpoint &listen, bool quic, uint16_t http01_port);

  // For --transport tls: the current certificate (or a self-signed stand-in until the first
  // is issued); new certificates are swapped in for new handshakes.
  std::shared_ptr<transport::TlsServerContext> tls_context() const { return tls_; }
  // For a listener that cannot start without a certificate (quic): issues one if the cache
  // had none, retrying with backoff, with the challenge listeners up meanwhile.
  rt::Task<void> ensure_certificate();
  // The cached files of the current certificate (valid after ensure_certificate).
  std::string cert_file() const { return mgr_->cert_path(); }
  std::string key_file() const { return mgr_->key_path(); }
  // Another listener that must get each new certificate (quic's): called after the TLS swap.
  using CertificateSink = std::function<rt::Result<void>(std::string_view chain_pem, std::string_view key_pem)>;
  void also_install(CertificateSink sink) { extra_sink_ = std::move(sink); }
  // Runs main with renewal and the challenge listeners beside it; they stop when main returns.
  rt::Task<void> run_alongside(rt::Task<void> main);

  Manager &manager() { return *mgr_; }

 private:
  ServerAcme() = default;
  rt::Task<void> accept_loop(net::Acceptor &acceptor, bool http01);
  rt::Task<void> answer_http01(rt::UniqueFd fd);
  void spawn_listeners(rt::Scope &scope);

  std::unique_ptr<Manager> mgr_;
  std::shared_ptr<transport::TlsServerContext> tls_;
  std::unique_ptr<net::Acceptor> tls_alpn_;  // quic only
  std::unique_ptr<net::Acceptor> http01_;
  bool running_ = false;  // run_alongside started: the server's own listener is up
  CertificateSink extra_sink_;
};

}  // namespace alk::acme
