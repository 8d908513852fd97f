#include "server/serve.hpp"

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "acme/listener.hpp"
#include "net/dial.hpp"
#include "net/proxy_dial.hpp"
#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "runtime/signals.hpp"
#include "server/policy.hpp"
#include "server/udp_relay.hpp"
#include "socks5/udp.hpp"
#include "ssh/client.hpp"
#include "ssh/server.hpp"
#include "stream/stream.hpp"
#include "transport/quic/transport.hpp"
#include "transport/tls/tls.hpp"

namespace alk::server {

using namespace std::chrono_literals;

namespace {

// Sessions still in key exchange or authentication: beyond this many, new connections are
// closed at once (OpenSSH's MaxStartups idea), so a flood of silent peers stays bounded.
constexpr size_t kMaxPreAuthSessions = 128;
constexpr rt::Duration kDialTimeout = 10s;
constexpr rt::Duration kForwardOpenTimeout = 15s;
constexpr rt::Duration kDrainTimeout = 2s;

// One line per event, written with a single fprintf so lines never interleave.
void log_line(const std::string &line) { std::fprintf(stderr, "%s\n", line.c_str()); }

struct RemoteForward {
  std::string requested_addr;  // as the client sent it: it matches forwarded-tcpip opens by it
  uint16_t port = 0;
  std::unique_ptr<net::Acceptor> acceptor;
  rt::Scope loop;  // the accept loop (connections it opened live in the session's scope)
};

// Declared after its ServerSession, so it is torn down first: every task that holds a channel
// or a pending ssh_message ends while the session still exists.
struct Conn {
  std::string ip;
  ssh::ServerSession *ss = nullptr;
  Grant grant;
  bool stopping = false;
  // Tunnels (dials and pumps). Ended before the session is disconnected: a Channel and a
  // pending ChannelOpen point at the session, so none may outlive it.
  rt::Scope tasks;
  // After tasks: the accept loops spawn into tasks, so they must stop first.
  std::map<std::pair<std::string, uint16_t>, std::unique_ptr<RemoteForward>> forwards;
};

// What a transport's listener hands over for one connection. A TCP socket still to be
// wrapped (plain, or TLS whose handshake runs inside the connection's own task), or a QUIC
// stream whose handshake the listener already did.
struct Accepted {
  std::string ip;
  rt::UniqueFd tcp;
  std::unique_ptr<stream::Stream> stream;
};

// The listening side of the configured transport: exactly one of the two is set.
struct Listener {
  std::unique_ptr<net::Acceptor> tcp;  // tcp and tls
  std::unique_ptr<quic::QuicListener> quic;
  net::Endpoint local() const { return tcp ? tcp->local() : quic->local(); }
};

std::string client_ip(const net::Endpoint &ep) {
  std::string ip = ep.ip();
  if (ip.starts_with("::ffff:") && ip.find('.') != std::string::npos) ip = ip.substr(7);
  return ip;
}

class Server {
 public:
  Server(const cli::ServeOptions &o, AuthPolicy policy, std::unique_ptr<ssh::ServerBind> bind,
         std::shared_ptr<transport::TlsServerContext> tls)
      : opts_(o), policy_(std::move(policy)), bind_(std::move(bind)), tls_(std::move(tls)) {}

  rt::Task<void> run(Listener &listener, rt::SignalWatch &signals);

 private:
  rt::Task<void> accept_tcp(net::Acceptor &acceptor);
  rt::Task<void> accept_quic(quic::QuicListener &listener);
  rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> open_stream(Accepted &a);
  rt::Task<void> serve(Accepted a);
  void on_open(Conn &c, ssh::ChannelOpen op);
  rt::Task<void> dial_and_pump(ssh::ChannelOpen op, bool allowed);
  void on_forward(Conn &c, ssh::ForwardRequest req);
  rt::Task<void> forward_accept_loop(Conn &c, RemoteForward &fwd);
  rt::Task<void> forward_pump(Conn &c, rt::UniqueFd fd, std::string bound_addr, uint16_t bound_port);
  static rt::Task<void> stop_forward(std::unique_ptr<RemoteForward> fwd);

  const cli::ServeOptions &opts_;
  AuthPolicy policy_;
  std::unique_ptr<ssh::ServerBind> bind_;
  std::shared_ptr<transport::TlsServerContext> tls_;  // set for --transport tls
  rt::Scope sessions_;
  std::set<Conn *> live_;
  std::map<std::string, unsigned> per_ip_;
  size_t pre_auth_ = 0;
};

rt::Task<void> Server::run(Listener &listener, rt::SignalWatch &signals) {
  rt::Scope accepting;
  if (listener.tcp) accepting.spawn(accept_tcp(*listener.tcp));
  else accepting.spawn(accept_quic(*listener.quic));
  for (;;) {
    int sig = co_await signals.next();
    if (sig == SIGINT || sig == SIGTERM || sig < 0) break;
  }
  // Stop accepting, then disconnect every session and give them a moment to finish.
  co_await accepting.close();
  if (listener.tcp) co_await listener.tcp->stop();
  for (Conn *c : live_) {
    c->stopping = true;
    c->ss->core().progress().set();
    c->ss->core().progress().reset();
  }
  auto deadline = rt::Clock::now() + kDrainTimeout;
  while (!sessions_.empty() && rt::Clock::now() < deadline) {
    int r = co_await rt::sleep_for(20ms);
    if (r == -ECANCELED) break;
  }
  co_await sessions_.close();
  // QUIC sessions ride the listener's socket: it closes only after their goodbyes went out.
  if (listener.quic) co_await listener.quic->stop();
}

rt::Task<void> Server::accept_tcp(net::Acceptor &acceptor) {
  const net::OnConnection on_conn = [this](rt::UniqueFd fd) {
    Accepted a;
    a.ip = client_ip(net::Endpoint::of_socket_peer(fd.get()));
    a.tcp = std::move(fd);
    sessions_.spawn(serve(std::move(a)));
  };
  co_await net::accept_each(acceptor, on_conn);
}

rt::Task<void> Server::accept_quic(quic::QuicListener &listener) {
  for (;;) {
    auto r = co_await listener.accept();
    if (!r) {
      if (r.error().code == ECANCELED || r.error().code == EBADF) co_return;
      int s = co_await rt::sleep_for(100ms);
      if (s == -ECANCELED) co_return;
      continue;
    }
    Accepted a;
    a.ip = client_ip(r.value().second);
    a.stream = std::move(r.value().first);
    sessions_.spawn(serve(std::move(a)));
  }
}

// The transport's own handshake, inside the connection's task so a slow or failing peer only
// ever costs its own connection. TLS failures (and stealth's 404 to a non-SSH peer) are not
// SSH connections: nothing is logged for them unless --verbose.
rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> Server::open_stream(Accepted &a) {
  if (a.stream) co_return std::move(a.stream);
  if (!tls_) co_return std::unique_ptr<stream::Stream>(std::make_unique<stream::FdStream>(std::move(a.tcp)));
  co_return co_await transport::tls_accept(tls_, std::move(a.tcp));
}

rt::Task<void> Server::serve(Accepted a) {
  const std::string ip = a.ip;
  if (opts_.max_connections_per_ip && per_ip_[ip] >= opts_.max_connections_per_ip) {
    log_line("connection refused remote_addr=" + ip + " reason=max-connections-per-ip");
    if (per_ip_[ip] == 0) per_ip_.erase(ip);
    co_return;
  }
  if (pre_auth_ >= kMaxPreAuthSessions) {
    log_line("connection refused remote_addr=" + ip + " reason=too-many-unauthenticated");
    co_return;
  }
  // Bookkeeping undone on every exit path.
  struct Counts {
    Server &s;
    std::string ip;
    bool pre = true;
    Counts(Server &srv, std::string i) : s(srv), ip(std::move(i)) {
      ++s.per_ip_[ip];
      ++s.pre_auth_;
    }
    void authed() {
      if (pre) --s.pre_auth_;
      pre = false;
    }
    ~Counts() {
      authed();
      if (--s.per_ip_[ip] == 0) s.per_ip_.erase(ip);
    }
  } counts(*this, ip);

  auto transport = co_await open_stream(a);
  if (!transport) {
    if (opts_.verbose && transport.error().code != ECANCELED)
      log_line("transport handshake failed remote_addr=" + ip + " transport=" + opts_.transport +
               " reason=" + log_safe(transport.error().what));
    co_return;
  }

  auto started = rt::Clock::now();
  log_line("connection opened remote_addr=" + ip + " transport=" + opts_.transport);

  ssh::ServerSession ss(std::move(transport).value());
  Conn conn;
  conn.ip = ip;
  conn.ss = &ss;
  live_.insert(&conn);
  ss.on_auth = [this, &conn](const ssh::AuthAttempt &a) {
    auto d = policy_.check(a.user, a.key, conn.ip, uint64_t(std::time(nullptr)));
    // A probe the server would accept is followed by the signed attempt: log that one.
    if (!a.probe || !d.accept)
      log_line("auth attempt remote_addr=" + conn.ip + " user=" + log_safe(a.user) +
               " key_fingerprint=" + d.fingerprint + " result=" + (d.accept ? "accept" : "reject"));
    if (opts_.verbose && !d.accept) log_line("auth refused remote_addr=" + conn.ip + " reason=" + log_safe(d.reason));
    if (d.accept && !a.probe) conn.grant = d.grant;
    return d.accept;
  };
  ss.on_direct_tcpip = [this, &conn](ssh::ChannelOpen op) { on_open(conn, std::move(op)); };
  ss.on_forward = [this, &conn](ssh::ForwardRequest req) { on_forward(conn, std::move(req)); };

  ssh::ServerConfig cfg;
  cfg.max_auth_attempts = opts_.max_auth_attempts;
  auto hs = co_await ss.handshake(*bind_, cfg);
  counts.authed();
  if (hs) {
    while (ss.core().alive() && !conn.stopping) {
      bool woke = co_await ss.core().progress().wait();
      if (!woke) break;
    }
  } else if (opts_.verbose) {
    log_line("session failed remote_addr=" + ip + " reason=" + log_safe(hs.error().what));
  }
  // Stop listening for this session's -R forwards, then end the session and its channels.
  auto forwards = std::move(conn.forwards);
  for (auto &[key, fwd] : forwards) co_await stop_forward(std::move(fwd));
  co_await conn.tasks.close();
  // Cancelled mid-way (drain timeout): Conn's destructor finishes the tasks, ~ServerSession the rest.
  if (conn.tasks.empty()) co_await ss.disconnect(conn.stopping ? "server shutting down" : "session ended");
  live_.erase(&conn);
  double secs = std::chrono::duration<double>(rt::Clock::now() - started).count();
  char dur[32];
  std::snprintf(dur, sizeof dur, "%.3f", secs);
  log_line("connection closed remote_addr=" + ip + " duration=" + dur);
}

// -- direct-tcpip ---------------------------------------------------------------------------

void Server::on_open(Conn &c, ssh::ChannelOpen op) {
  auto v = check_destination(op.destination(), op.port(), c.grant, opts_.permit_open);
  if (v == DestVerdict::Reserved) {
    if (op.destination() == socks5::kUdpDestination) {
      c.tasks.spawn(serve_udp_association(std::move(op), {&c.grant, &opts_.permit_open, opts_.proxy.has_value()}));
      return;
    }
    // Any other alknet-* name is reserved but not served: "administratively prohibited".
    op.refuse();
    return;
  }
  c.tasks.spawn(dial_and_pump(std::move(op), v == DestVerdict::Allowed));
}

rt::Task<void> Server::dial_and_pump(ssh::ChannelOpen op, bool allowed) {
  int rep = 2;
  rt::UniqueFd target;
  if (allowed) {
    auto r = co_await net::dial_maybe_proxy(opts_.proxy, op.destination(), op.port(), kDialTimeout);
    if (r) {
      target = std::move(r.value());
      rep = 0;
      // A name may resolve to a link-local address (cloud metadata): check what we reached.
      if (!opts_.proxy && net::is_link_local(net::Endpoint::of_socket_peer(target.get()).ip())) {
        target.reset();
        rep = 2;
      }
    } else {
      if (r.error().code == ECANCELED) co_return;
      rep = dial_error_to_rep(r.error().code);
    }
  }
  // alknet clients are told the dial's outcome as an exact SOCKS REP code; others get
  // confirmation or an open failure with OpenSSH's reason code and wording.
  auto ch = op.answer(rep);
  if (!ch) co_return;
  stream::FdStream to(std::move(target));
  co_await stream::pump(*ch, to);
  to.close();
}

// -- tcpip-forward ----------------------------------------------------------------------------

void Server::on_forward(Conn &c, ssh::ForwardRequest req) {
  auto key = std::make_pair(req.address(), req.port());
  if (req.cancel()) {
    auto it = c.forwards.find(key);
    if (it == c.forwards.end()) {
      req.refuse();
      return;
    }
    auto fwd = std::move(it->second);
    c.forwards.erase(it);
    req.succeed(0);
    c.tasks.spawn(stop_forward(std::move(fwd)));
    return;
  }
  if (!c.grant.port_forwarding || (req.port() != 0 && req.port() < 1024) || c.forwards.count(key) ||
      c.forwards.size() >= 64) {
    req.refuse();
    return;
  }
  std::string host = req.address();
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  else if (host == "*") host = "0.0.0.0";
  auto ep = net::Endpoint::from_ip(host, req.port());
  if (!ep) {
    req.refuse();  // names other than localhost are not resolved for listening
    return;
  }
  auto lfd = net::listen_tcp(*ep, 128);
  if (!lfd) {
    req.refuse();
    return;
  }
  auto fwd = std::make_unique<RemoteForward>();
  fwd->requested_addr = req.address();
  fwd->acceptor = std::make_unique<net::Acceptor>(std::move(lfd.value()), 64);
  fwd->port = fwd->acceptor->local().port();
  req.succeed(fwd->port);
  RemoteForward &ref = *fwd;
  // A request for port 0 is remembered under the port actually bound (what cancel will name).
  c.forwards[{req.address(), fwd->port}] = std::move(fwd);
  ref.loop.spawn(forward_accept_loop(c, ref));
}

rt::Task<void> Server::forward_accept_loop(Conn &c, RemoteForward &fwd) {
  for (;;) {
    auto r = co_await fwd.acceptor->accept();
    if (!r) {
      if (r.error().code == ECANCELED || r.error().code == EBADF) co_return;
      int s = co_await rt::sleep_for(100ms);
      if (s == -ECANCELED) co_return;
      continue;
    }
    c.tasks.spawn(forward_pump(c, std::move(r.value()), fwd.requested_addr, fwd.port));
  }
}

rt::Task<void> Server::forward_pump(Conn &c, rt::UniqueFd fd, std::string bound_addr, uint16_t bound_port) {
  auto peer = net::Endpoint::of_socket_peer(fd.get());
  auto ch = co_await c.ss->open_forwarded(bound_addr, bound_port, peer.ip(), peer.port(), kForwardOpenTimeout);
  if (!ch) co_return;
  stream::FdStream local(std::move(fd));
  co_await stream::pump(*ch.value(), local);
  local.close();
}

rt::Task<void> Server::stop_forward(std::unique_ptr<RemoteForward> fwd) {
  co_await fwd->loop.close();
  co_await fwd->acceptor->stop();
}

}  // namespace

int run_serve(const cli::ServeOptions &opts) {
  auto fail = [](const std::string &msg) {
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
  };
  if (opts.stealth && opts.transport != "tls") return fail("--stealth requires --transport tls");
  if (opts.transport != "tcp" && opts.tls_cert.empty() && opts.acme_domains.empty())
    return fail("--transport " + opts.transport + " needs --tls-cert and --tls-key, or --acme-domain");
  auto host_key = ssh::HostKey::load(opts.key);
  if (!host_key) return fail(host_key.error().what);
  auto policy = AuthPolicy::load(opts.authorized_keys, opts.cert_authorities);
  if (!policy) return fail(policy.error().what);
  for (const auto &w : policy->warnings())
    std::fprintf(stderr, "warning: %s: %s\n", opts.authorized_keys.c_str(), w.c_str());
  auto bind = ssh::ServerBind::create(host_key.value());
  if (!bind) return fail(bind.error().what);

  std::string host = opts.listen.host;
  if (host.empty() || host == "*") host = "0.0.0.0";
  if (host == "localhost") host = "127.0.0.1";
  auto ep = net::Endpoint::from_ip(host, opts.listen.port);
  if (!ep) return fail("--listen needs an IP address, not \"" + opts.listen.host + "\"");

  std::shared_ptr<transport::TlsServerContext> tls;
  if ((opts.transport == "tls" || opts.transport == "quic") && opts.acme_domains.empty()) {
    // For quic too: the TLS loader's messages name the file and the reason (a key that does
    // not match its certificate), before any socket is opened.
    transport::TlsServerConfig tc;
    tc.cert_file = opts.tls_cert;
    tc.key_file = opts.tls_key;
    tc.stealth = opts.stealth;
    auto ctx = transport::TlsServerContext::create(tc);
    if (!ctx) return fail(ctx.error().what);
    if (opts.transport == "tls") tls = std::move(ctx).value();
  }

  rt::Reactor reactor;
  // ACME: the certificate comes from the manager (cache, issuance, renewal) instead of files.
  std::unique_ptr<acme::ServerAcme> acme;
  if (!opts.acme_domains.empty()) {
    transport::TlsServerConfig tc;
    tc.stealth = opts.stealth;
    acme::ManagerConfig ac{opts.acme_domains, opts.acme_directory, opts.acme_email, opts.acme_cache, opts.acme_ca};
    auto a = acme::ServerAcme::open(std::move(ac), tc, *ep, opts.transport == "quic", opts.acme_http_port);
    if (!a) return fail(a.error().what);
    acme = std::move(a).value();
    if (opts.transport == "tls") tls = acme->tls_context();
    else rt::run_blocking(acme->ensure_certificate());  // quic cannot start without one
  }
  rt::SignalWatch signals;
  Listener listener;
  if (opts.transport == "quic") {
    quic::QuicServerConfig qc;
    qc.cert_file = acme ? acme->cert_file() : opts.tls_cert;
    qc.key_file = acme ? acme->key_file() : opts.tls_key;
    qc.cc_algo = quic::cc_algo(opts.quic.cc);
    qc.idle_timeout = std::chrono::seconds(opts.quic.idle_timeout_s);
    qc.keepalive = std::chrono::seconds(opts.quic.keepalive_s);
    auto l = quic::QuicListener::create(qc, *ep);
    if (!l) return fail("cannot listen on " + ep->to_string() + " (udp): " + l.error().what);
    listener.quic = std::move(l).value();
    if (acme)
      acme->also_install([q = listener.quic.get()](std::string_view chain, std::string_view key) {
        return q->use_certificate(chain, key);
      });
  } else {
    auto lfd = net::listen_tcp(*ep);
    if (!lfd) return fail(lfd.error().what);  // already "cannot listen on ADDR: reason"
    listener.tcp = std::make_unique<net::Acceptor>(std::move(lfd.value()));
  }
  if (!opts.quiet)
    std::fprintf(stderr, "alknet serve listening on %s transport=%s%s host_key=%s version=" ALKNET_VERSION "\n",
                 listener.local().to_string().c_str(), opts.transport.c_str(), opts.stealth ? " stealth" : "",
                 host_key.value()->fingerprint().c_str());
  {
    Server server(opts, std::move(policy.value()), std::move(bind.value()), std::move(tls));
    rt::run_blocking(acme ? acme->run_alongside(server.run(listener, signals)) : server.run(listener, signals));
  }
  return 0;
}

}  // namespace alk::server
