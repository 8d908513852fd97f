#include "acme/listener.hpp"

#include <cerrno>
#include <cstdio>

#include "runtime/scope.hpp"
#include "stream/stream.hpp"

namespace alk::acme {

namespace {

using namespace std::chrono_literals;

// Validators make a handful of connections; more than this at once is not a CA.
constexpr size_t kMaxChallengeConns = 16;
constexpr auto kHttp01Timeout = 10s;

rt::Task<void> tls_alpn_one(std::shared_ptr<transport::TlsServerContext> ctx, rt::UniqueFd fd) {
  auto r = co_await transport::tls_accept(std::move(ctx), std::move(fd));
  if (r) r.value()->close();  // this listener has nothing else to offer
}

rt::Task<void> keep_certificate(Manager &m) { co_await m.run(false); }

}  // namespace

rt::Result<std::unique_ptr<ServerAcme>> ServerAcme::open(ManagerConfig cfg, transport::TlsServerConfig base,
                                                         const net::Endpoint &listen, bool quic, uint16_t http01_port) {
  cfg.http01 = http01_port != 0;
  auto m = Manager::open(std::move(cfg));
  if (!m) return m.error();
  std::unique_ptr<ServerAcme> s(new ServerAcme());
  s->mgr_ = std::move(m.value());
  Manager &mgr = *s->mgr_;

  base.cert_file.clear();
  base.key_file.clear();
  // quic's TCP side speaks nothing but acme-tls/1.
  if (quic) {
    base.alpn.clear();
    base.stealth = false;
  }
  std::optional<CertPem> first = mgr.current();
  if (!first) first = self_signed(mgr.domains().front(), std::nullopt);
  if (!first) return rt::Error{ENOMEM, "acme: cannot make a stand-in certificate"};
  base.cert_pem = first->chain;
  base.key_pem = first->key;
  auto ctx = transport::TlsServerContext::create(base);
  if (!ctx) return ctx.error();
  s->tls_ = std::move(ctx.value());
  s->tls_->set_acme_challenges([&mgr](std::string_view name) -> std::optional<std::pair<std::string, std::string>> {
    auto c = mgr.challenge_cert(name);
    if (!c) return std::nullopt;
    return std::make_pair(std::move(c->chain), std::move(c->key));
  });
  ServerAcme *self = s.get();
  mgr.on_certificate([self](const CertPem &cert) {
    auto r = self->tls_->use_certificate(cert.chain, cert.key);
    if (r && self->extra_sink_) r = self->extra_sink_(cert.chain, cert.key);
    if (!r)
      std::fprintf(stderr, "acme: cannot use the new certificate: %s\n", r.error().what.c_str());
    else
      std::fprintf(stderr, "acme: new handshakes use the new certificate\n");
  });

  if (quic && !http01_port) {
    auto lfd = net::listen_tcp(listen);
    if (!lfd) return rt::Error{lfd.error().code, lfd.error().what + " (tcp, for ACME tls-alpn-01; or use --acme-http-port)"};
    s->tls_alpn_ = std::make_unique<net::Acceptor>(std::move(lfd.value()), 64);
  }
  if (http01_port) {
    net::Endpoint ep = listen;
    auto at = net::Endpoint::from_ip(listen.ip(), http01_port);
    if (at) ep = *at;
    auto lfd = net::listen_tcp(ep);
    if (!lfd) return rt::Error{lfd.error().code, lfd.error().what + " (for ACME http-01)"};
    s->http01_ = std::make_unique<net::Acceptor>(std::move(lfd.value()), 64);
  }
  return s;
}

void ServerAcme::spawn_listeners(rt::Scope &scope) {
  if (tls_alpn_) scope.spawn(accept_loop(*tls_alpn_, false));
  if (http01_) scope.spawn(accept_loop(*http01_, true));
}

rt::Task<void> ServerAcme::ensure_certificate() {
  rt::Scope side;
  spawn_listeners(side);
  co_await mgr_->run(true);
  co_await side.close();
}

rt::Task<void> ServerAcme::run_alongside(rt::Task<void> main) {
  running_ = true;
  rt::Scope side;
  side.spawn(keep_certificate(*mgr_));
  spawn_listeners(side);
  co_await std::move(main);
  co_await side.close();
  if (tls_alpn_) co_await tls_alpn_->stop();
  if (http01_) co_await http01_->stop();
}

// Both challenge listeners: bounded concurrency; net::accept_each backs off on EMFILE.
rt::Task<void> ServerAcme::accept_loop(net::Acceptor &acceptor, bool http01) {
  rt::Scope conns;
  const net::OnConnection on_conn = [this, &conns, http01](rt::UniqueFd fd) {
    if (conns.size() >= kMaxChallengeConns) return;  // the fd closes here
    if (http01)
      conns.spawn(answer_http01(std::move(fd)));
    else
      conns.spawn(tls_alpn_one(tls_, std::move(fd)));
  };
  co_await net::accept_each(acceptor, on_conn);
  co_await conns.close();
}

rt::Task<void> ServerAcme::answer_http01(rt::UniqueFd fd) {
  std::string head;
  std::byte buf[2048];
  auto deadline = rt::Clock::now() + kHttp01Timeout;
  Http01Request req;
  for (;;) {
    auto left = std::max<rt::Duration>(deadline - rt::Clock::now(), 1us);
    int n = co_await rt::recv(fd.get(), buf).with_timeout(left);
    if (n <= 0) co_return;
    head.append(reinterpret_cast<const char *>(buf), size_t(n));
    req = parse_http01_request(head);
    if (req.state != ParseState::NeedMore) break;
  }
  std::string reply;
  std::optional<std::string> answer;
  if (req.state == ParseState::Done) answer = mgr_->http01_answer(req.token);
  if (answer)
    reply = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
            std::to_string(answer->size()) + "\r\nConnection: close\r\n\r\n" + *answer;
  else
    reply = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
  stream::FdStream s(std::move(fd));
  co_await s.write(std::as_bytes(std::span(reply)));
  co_await s.shutdown_write();
}

}  // namespace alk::acme
