#include "client/connect.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "net/dial.hpp"
#include "net/proxy_dial.hpp"
#include "net/resolver.hpp"
#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "runtime/signals.hpp"
#include "socks5/credentials_file.hpp"
#include "socks5/server.hpp"
#include "ssh/client.hpp"
#include "transport/quic/transport.hpp"
#include "transport/tls/tls.hpp"

namespace alk::client {

using namespace std::chrono_literals;

namespace {

constexpr auto kOpenTimeout = 15s;
constexpr auto kDrainTime = 2s;
constexpr size_t kMaxTunnels = 20000;

void log(const std::string &line) { std::fprintf(stderr, "%s\n", line.c_str()); }

// Listener addresses: IP literals, "localhost", or "*"/"" for all interfaces.
rt::Result<net::Endpoint> bind_endpoint(const std::string &host, uint16_t port) {
  std::string ip = host;
  if (host.empty() || host == "*") ip = "0.0.0.0";
  if (host == "localhost") ip = "127.0.0.1";
  auto ep = net::Endpoint::from_ip(ip, port);
  if (!ep) return rt::Error{EINVAL, "bind address must be an IP address or localhost: " + host};
  return *ep;
}

rt::Result<net::Acceptor *> open_listener(std::vector<std::unique_ptr<net::Acceptor>> &out, const std::string &host,
                                          uint16_t port, const char *what) {
  auto ep = bind_endpoint(host, port);
  if (!ep) return ep.error();
  auto fd = net::listen_tcp(*ep);
  if (!fd) return rt::Error{fd.error().code, std::string(what) + ": " + fd.error().what};
  out.push_back(std::make_unique<net::Acceptor>(std::move(fd).value()));
  return out.back().get();
}

class App {
 public:
  explicit App(const cli::ConnectOptions &o) : o_(o) {}

  // The reactor is the caller's: it must outlive every member (listeners cancel on it).
  int run(rt::Reactor &reactor) {
    rt::SignalWatch signals;
    auto id = ssh::Identity::load(o_.identity);
    if (!id) return fail(id.error().what);
    id_ = *id;
    if (o_.transport == "tls") {
      transport::TlsClientConfig tc;
      tc.server_name = o_.tls_server_name.empty() ? o_.server.host : o_.tls_server_name;
      tc.insecure = o_.insecure;
      tc.ca_file = o_.tls_ca;
      auto ctx = transport::TlsClientContext::create(tc);
      if (!ctx) return fail(ctx.error().what);
      tls_ = *ctx;
      if (o_.insecure) log("warning: --insecure: the server's TLS certificate is not verified");
    } else if (o_.transport == "quic") {
      // QUIC is UDP: an HTTP CONNECT or SOCKS5 CONNECT proxy cannot carry it.
      if (o_.proxy) return fail("--proxy cannot carry --transport quic (UDP); use tls or tcp through a proxy");
      quic_.server_name = o_.tls_server_name;
      quic_.insecure = o_.insecure;
      quic_.ca_file = o_.tls_ca;
      quic_.cc_algo = quic::cc_algo(o_.quic.cc);
      quic_.idle_timeout = std::chrono::seconds(o_.quic.idle_timeout_s);
      quic_.keepalive = std::chrono::seconds(o_.quic.keepalive_s);
      // No name given and the server is a name: verify the certificate against that name.
      if (quic_.server_name.empty() && !net::Endpoint::from_ip(o_.server.host, o_.server.port))
        quic_.server_name = o_.server.host;
      if (o_.insecure) log("warning: --insecure: the server's TLS certificate is not verified");
    } else if (o_.transport != "tcp") {
      return fail("transport " + o_.transport + " is not available in this build");
    }
    if (o_.proxy && o_.transport == "tcp")
      log("warning: --proxy with --transport tcp only tunnels the TCP connection to the server");

    if (!o_.socks5_auth_file.empty()) {
      auto up = socks5::load_credentials_file(o_.socks5_auth_file);
      if (!up) return fail(up.error().what);
      socks_cfg_.credentials = socks5::UserPass{up->user, up->pass};
    }
    auto socks = open_listener(listeners_, o_.socks5.host, o_.socks5.port, "--socks5");
    if (!socks) return fail(socks.error().what);
    std::vector<std::pair<net::Acceptor *, const net::ForwardSpec *>> locals;
    for (const auto &f : o_.forwards) {
      auto l = open_listener(listeners_, f.bind_host, f.bind_port, "--forward");
      if (!l) return fail(l.error().what);
      locals.emplace_back(*l, &f);
    }

    if (!o_.quiet)
      log("alknet connect " ALKNET_VERSION " server=" + o_.server.host + ":" + std::to_string(o_.server.port) +
          " transport=" + o_.transport + " socks5=" + listeners_.front()->local().to_string() +
          " forwards=" + std::to_string(o_.forwards.size()) + " remote_forwards=" + std::to_string(o_.remote_forwards.size()));
    rt::Scope main;
    bool stop = false;
    main.spawn(supervise());
    main.spawn(accept_socks(**socks));
    for (auto [acc, spec] : locals) main.spawn(accept_local(*acc, *spec));
    main.spawn([](rt::SignalWatch &sw, bool &st) -> rt::Task<void> {
      int sig = co_await sw.next();
      if (sig > 0) st = true;
    }(signals, stop));
    reactor.run_until([&] { return stop; });

    // Shutdown: stop accepting, say goodbye to the server, let tunnels drain briefly.
    if (!o_.quiet) log("shutting down");
    stopping_ = true;
    rt::run_blocking([](App &self, rt::Scope &m) -> rt::Task<void> {
      for (auto &l : self.listeners_) co_await l->stop();
      auto deadline = rt::Clock::now() + kDrainTime;
      while (!self.tunnels_.empty() && rt::Clock::now() < deadline) co_await rt::sleep_for(20ms);
      co_await self.tunnels_.close();
      m.cancel();
      if (self.client_) co_await self.client_->disconnect();
      co_await m.close();
      self.client_.reset();
      // A quic connection lingers until its CONNECTION_CLOSE is out; its socket's loops own it.
      // Let them finish (bounded) rather than leave them suspended when the reactor goes.
      for (int i = 0; i < 75 && quic::live_endpoints() > 0; ++i) {
        const int r = co_await rt::sleep_for(20ms);
        if (r == -ECANCELED) break;
      }
    }(*this, main));
    return 0;
  }

 private:
  int fail(const std::string &msg) {
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
  }

  // Tries each address the server's name resolves to, like net::dial does for TCP.
  rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> open_quic() {
    auto eps = co_await net::resolve(o_.server.host, o_.server.port);
    if (!eps) co_return eps.error();
    rt::Error last{EHOSTUNREACH, "no address for " + o_.server.host};
    for (const auto &ep : eps.value()) {
      auto s = co_await quic::quic_connect(quic_, ep);
      if (s) co_return std::move(s).value();
      if (s.error().code == ECANCELED) co_return s.error();
      last = s.error();
    }
    co_return last;
  }

  rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> open_transport() {
    if (o_.transport == "quic") co_return co_await open_quic();
    auto fd = co_await net::dial_maybe_proxy(o_.proxy, o_.server.host, o_.server.port, 15s);
    if (!fd) co_return fd.error();
    if (tls_) co_return co_await transport::tls_connect(tls_, std::move(fd).value());
    co_return std::unique_ptr<stream::Stream>(std::make_unique<stream::FdStream>(std::move(fd).value()));
  }

  rt::Task<rt::Result<std::unique_ptr<ssh::Client>>> connect_once() {
    auto t = co_await open_transport();
    if (!t) co_return t.error();
    ssh::ClientConfig cc;
    cc.host = o_.server.host;
    cc.port = o_.server.port;
    cc.user = o_.user;
    cc.known_hosts_path = o_.known_hosts;
    cc.pinned_fingerprint = o_.host_key;
    co_return co_await ssh::Client::connect(std::move(t).value(), cc, id_);
  }

  // Keeps one session up: connect, register -R forwards, wait for death, back off, again.
  rt::Task<void> supervise() {
    auto backoff = 1s;
    const std::string server = o_.server.host + ":" + std::to_string(o_.server.port);
    for (;;) {
      auto c = co_await connect_once();
      if (stopping_) co_return;
      if (!c) {
        log("connect failed server=" + server + " reason=\"" + c.error().what + "\" retry_in=" +
            std::to_string(backoff.count()) + "s");
      } else {
        client_ = std::move(c).value();
        client_->on_forwarded = [this](std::unique_ptr<ssh::Channel> ch, int port) { on_forwarded(std::move(ch), port); };
        if (!o_.quiet)
          log("connected transport=" + o_.transport + " server=" + server + " host_key=" +
              client_->host_key_fingerprint() +
              " cipher=" + std::string(ssh::cipher_name(client_->core().wire().negotiated().c2s)) + " socks5=" + o_.socks5.host + ":" + std::to_string(o_.socks5.port));
        backoff = 1s;
        co_await register_remote_forwards();
        co_await client_->core().dead_event().wait();
        if (stopping_) co_return;
        std::string why = client_->core().death_reason();
        // Tunnels of the dead session end on their own (their channels are orphaned).
        client_.reset();
        log("disconnected server=" + server + " reason=\"" + why + "\" retry_in=" + std::to_string(backoff.count()) + "s");
      }
      int r = co_await rt::sleep_for(backoff);
      if (r < 0) co_return;
      backoff = std::min<std::chrono::seconds>(backoff * 2, 30s);
    }
  }

  rt::Task<void> register_remote_forwards() {
    for (const auto &f : o_.remote_forwards) {
      if (!client_) co_return;
      auto r = co_await client_->listen_forward(f.bind_host, f.bind_port, kOpenTimeout);
      if (!r) log("remote forward " + f.bind_host + ":" + std::to_string(f.bind_port) + " failed: " + r.error().what);
    }
  }

  void on_forwarded(std::unique_ptr<ssh::Channel> ch, int port) {
    const net::ForwardSpec *spec = nullptr;
    for (const auto &f : o_.remote_forwards)
      if (f.bind_port == port) spec = &f;
    if (!spec || tunnels_.size() >= kMaxTunnels) return;  // channel closes when dropped
    tunnels_.spawn([](std::unique_ptr<ssh::Channel> c, const net::ForwardSpec *s) -> rt::Task<void> {
      auto fd = co_await net::dial(s->target_host, s->target_port, kOpenTimeout);
      if (!fd) co_return;
      stream::FdStream local(std::move(fd).value());
      co_await stream::pump(local, *c);
      c->close();
    }(std::move(ch), spec));
  }

  rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> open_tunnel(const std::string &host, uint16_t port) {
    // While disconnected, fail at once: a prompt SOCKS failure beats a hang.
    if (!client_ || !client_->core().alive()) co_return rt::Error{ENETUNREACH, "not connected"};
    auto ch = co_await client_->open_direct_tcpip(host, port, "127.0.0.1", 0, kOpenTimeout);
    if (!ch) {
      // The reason only: destinations are never logged.
      if (o_.verbose) log("tunnel open failed reason=\"" + std::string(std::strerror(ch.error().code)) + "\"");
      co_return ch.error();
    }
    co_return std::unique_ptr<stream::Stream>(std::move(ch).value());
  }

  // UDP ASSOCIATE rides a channel to the reserved alknet-udp destination, which only alknet
  // servers serve (a stock sshd would try to resolve the name): others get "not supported".
  rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> open_udp_tunnel(const socks5::Address &dst) {
    if (client_ && client_->core().alive() && !client_->peer_is_alknet())
      co_return rt::Error{EPROTONOSUPPORT, "UDP needs an alknet server"};
    co_return co_await open_tunnel(dst.host, dst.port);
  }

  // Hands every accepted connection to serve() as a tunnel task, within kMaxTunnels. serve is
  // a reference to a named local of the caller (gcc 12: no temporaries inside a co_await).
  using Serve = std::function<rt::Task<void>(rt::UniqueFd)>;
  rt::Task<void> accept_loop(net::Acceptor &acc, const Serve &serve) {
    const net::OnConnection on_conn = [this, &serve](rt::UniqueFd fd) {
      if (tunnels_.size() >= kMaxTunnels) return;  // dropping the fd closes it
      tunnels_.spawn(serve(std::move(fd)));
    };
    co_await net::accept_each(acc, on_conn);
  }

  rt::Task<void> accept_socks(net::Acceptor &acc) {
    if (o_.socks5_auth) socks_cfg_.credentials = socks5::UserPass{o_.socks5_auth->user, o_.socks5_auth->pass};
    socks_connect_ = [this](const socks5::Address &dst) { return open_tunnel(dst.host, dst.port); };
    socks_cfg_.udp_tunnel = [this](const socks5::Address &dst) { return open_udp_tunnel(dst); };
    // Config and connector are members: tunnels still draining after the listener stopped use them.
    const Serve serve = [this](rt::UniqueFd f) { return socks5::serve_client(std::move(f), socks_cfg_, socks_connect_); };
    co_await accept_loop(acc, serve);
  }

  rt::Task<void> accept_local(net::Acceptor &acc, const net::ForwardSpec &spec) {
    const Serve serve = [this, &spec](rt::UniqueFd f) { return forward_one(std::move(f), spec); };
    co_await accept_loop(acc, serve);
  }

  rt::Task<void> forward_one(rt::UniqueFd fd, const net::ForwardSpec &s) {
    stream::FdStream local(std::move(fd));
    auto t = co_await open_tunnel(s.target_host, s.target_port);
    if (!t) co_return;
    co_await stream::pump(local, **t);
    (*t)->close();
  }

  const cli::ConnectOptions &o_;
  std::shared_ptr<ssh::Identity> id_;
  std::shared_ptr<transport::TlsClientContext> tls_;
  quic::QuicClientConfig quic_;
  std::unique_ptr<ssh::Client> client_;
  std::vector<std::unique_ptr<net::Acceptor>> listeners_;
  socks5::ServerConfig socks_cfg_;
  socks5::Connector socks_connect_;
  rt::Scope tunnels_;
  bool stopping_ = false;
};

}  // namespace

int run_connect(const cli::ConnectOptions &opts) {
  try {
    rt::Reactor reactor;
    App app(opts);
    return app.run(reactor);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}

}  // namespace alk::client
