// TLS transport over loopback: our client against our server in one reactor, and openssl
// s_client against our server for interop and stealth. Certificates are made at test time.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "stream/stream.hpp"
#include "transport/tls/record.hpp"
#include "transport/tls/tls.hpp"

using namespace alk;
using namespace std::chrono_literals;
using transport::TlsClientConfig;
using transport::TlsClientContext;
using transport::TlsServerConfig;
using transport::TlsServerContext;
using StreamResult = rt::Result<std::unique_ptr<stream::Stream>>;

extern char **environ;

namespace {

size_t open_fds() {
  size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd)
    if (fcntl(fd, F_GETFD) != -1) ++n;
  return n;
}

struct Fixtures {
  std::string dir, cert, key, rsa_cert, rsa_key, garbage;
  ~Fixtures() {
    std::error_code ec;
    if (!dir.empty()) std::filesystem::remove_all(dir, ec);
  }
};

// One self-signed EC and one RSA certificate for localhost / 127.0.0.1, made once per run.
const Fixtures &fixtures() {
  // Filled in place: a copy's destructor would delete the directory.
  static Fixtures x;
  static bool made = [] {
    char tmpl[] = "/tmp/alknet-tls-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    x.dir = tmpl;
    x.cert = x.dir + "/cert.pem";
    x.key = x.dir + "/key.pem";
    x.rsa_cert = x.dir + "/rsa-cert.pem";
    x.rsa_key = x.dir + "/rsa-key.pem";
    x.garbage = x.dir + "/garbage.pem";
    const std::string san = " -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null";
    std::string ec = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -keyout " +
                     x.key + " -out " + x.cert + san;
    std::string rsa = "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -keyout " + x.rsa_key + " -out " +
                      x.rsa_cert + san;
    REQUIRE(std::system(ec.c_str()) == 0);
    REQUIRE(std::system(rsa.c_str()) == 0);
    std::ofstream(x.garbage) << "this is not a certificate\n";
    return true;
  }();
  (void)made;
  return x;
}

std::shared_ptr<TlsServerContext> server_ctx(TlsServerConfig cfg = {}) {
  if (cfg.cert_file.empty()) cfg.cert_file = fixtures().cert;
  if (cfg.key_file.empty()) cfg.key_file = fixtures().key;
  auto r = TlsServerContext::create(cfg);
  INFO((r ? std::string() : r.error().what));
  REQUIRE(r);
  return r.value();
}

std::shared_ptr<TlsClientContext> client_ctx(TlsClientConfig cfg) {
  auto r = TlsClientContext::create(cfg);
  INFO((r ? std::string() : r.error().what));
  REQUIRE(r);
  return r.value();
}

std::shared_ptr<TlsClientContext> insecure_client() {
  TlsClientConfig c;
  c.server_name = "localhost";
  c.insecure = true;
  return client_ctx(c);
}

struct Listener {
  rt::UniqueFd fd;
  uint16_t port = 0;
  Listener() {
    auto l = net::listen_tcp(*net::Endpoint::from_ip("127.0.0.1", 0));
    REQUIRE(l);
    fd = std::move(l.value());
    port = net::Endpoint::of_socket_local(fd.get()).port();
  }
};

rt::Task<rt::Result<rt::UniqueFd>> dial(uint16_t port) {
  co_return co_await net::connect_tcp(*net::Endpoint::from_ip("127.0.0.1", port), 5s);
}

rt::Task<void> do_accept(int lfd, std::shared_ptr<TlsServerContext> ctx, std::optional<StreamResult> &out) {
  int fd = co_await rt::accept(lfd);
  if (fd < 0) {
    out.emplace(rt::errno_error(-fd, "accept"));
    co_return;
  }
  auto r = co_await transport::tls_accept(std::move(ctx), rt::UniqueFd(fd));
  out.emplace(std::move(r));
}

rt::Task<void> do_connect(uint16_t port, std::shared_ptr<TlsClientContext> ctx, std::optional<StreamResult> &out) {
  auto fd = co_await dial(port);
  if (!fd) {
    out.emplace(fd.error());
    co_return;
  }
  auto r = co_await transport::tls_connect(std::move(ctx), std::move(fd.value()));
  out.emplace(std::move(r));
}

struct Both {
  std::optional<StreamResult> client, server;
};

// Runs a client handshake and a server handshake against each other in one reactor.
rt::Task<void> handshake_both(std::shared_ptr<TlsServerContext> s, std::shared_ptr<TlsClientContext> c, Both &out) {
  Listener l;
  rt::Scope sc;
  sc.spawn(do_accept(l.fd.get(), s, out.server));
  sc.spawn(do_connect(l.port, c, out.client));
  co_await sc.join();
}

Both handshake(std::shared_ptr<TlsServerContext> s, std::shared_ptr<TlsClientContext> c) {
  Both b;
  rt::run_blocking(handshake_both(std::move(s), std::move(c), b));
  REQUIRE(b.client);
  REQUIRE(b.server);
  return b;
}

std::span<const std::byte> bytes(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

// Reads until end of stream (or error, returned as negative in err).
rt::Task<std::string> read_all(stream::Stream &s, int &err) {
  std::string out;
  std::byte buf[16384];
  for (;;) {
    ssize_t n = co_await s.read(buf);
    if (n < 0) err = int(-n);
    if (n <= 0) break;
    out.append(reinterpret_cast<const char *>(buf), size_t(n));
  }
  co_return out;
}

rt::Task<int> write_str(stream::Stream &s, std::string_view text) {
  ssize_t n = co_await s.write(bytes(text));
  co_return n < 0 ? int(n) : 0;
}

// Accepts one TLS client, echoes what it sends piece by piece until want bytes came (kept in
// got) or it half-closed, then closes. An accept error lands in err.
rt::Task<void> echo_server(int lfd, std::shared_ptr<TlsServerContext> ctx, size_t want, std::optional<rt::Error> &err,
                           std::string &got) {
  std::optional<StreamResult> r;
  co_await do_accept(lfd, std::move(ctx), r);
  if (!r->ok()) {
    err = r->error();
    co_return;
  }
  auto &s = *r->value();
  std::byte buf[65536];
  while (got.size() < want) {
    const ssize_t n = co_await s.read(buf);
    if (n <= 0) break;
    const std::string_view piece(reinterpret_cast<const char *>(buf), size_t(n));
    got.append(piece);
    const int w = co_await write_str(s, piece);
    if (w < 0) break;
  }
  co_await s.shutdown_write();
  s.close();
}

std::vector<std::byte> pattern(size_t n, uint64_t seed) {
  std::vector<std::byte> v(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto &b : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b = std::byte(x);
  }
  return v;
}

// Writes data in uneven pieces, then half-closes.
rt::Task<void> write_all(stream::Stream &s, const std::vector<std::byte> &data, int &err) {
  size_t off = 0, step = 1;
  while (off < data.size()) {
    size_t n = std::min(data.size() - off, step);
    ssize_t w = co_await s.write(std::span(data).subspan(off, n));
    if (w < 0) {
      err = int(-w);
      co_return;
    }
    off += n;
    step = step * 3 % 300007 + 1;  // 1 B .. ~300 KiB
  }
  int r = co_await s.shutdown_write();
  if (r < 0) err = -r;
}

rt::Task<void> read_into(stream::Stream &s, std::vector<std::byte> &out, int &err) {
  std::vector<std::byte> buf(100000);
  for (;;) {
    ssize_t n = co_await s.read(buf);
    if (n < 0) err = int(-n);
    if (n <= 0) co_return;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
}

// Echo on a raw fd: what pump's far side talks to.
rt::Task<void> fd_echo(int fd) {
  std::vector<std::byte> buf(65536);
  for (;;) {
    int n = co_await rt::recv(fd, buf);
    if (n <= 0) break;
    int off = 0;
    while (off < n) {
      int w = co_await rt::send(fd, std::span(buf).subspan(size_t(off), size_t(n - off)));
      if (w <= 0) co_return;
      off += w;
    }
  }
  ::shutdown(fd, SHUT_WR);
}

// openssl s_client as an independent peer: stdin is a pipe we hold, stdout goes to a file.
struct SClient {
  pid_t pid = -1;
  int stdin_fd = -1;
  std::string out_path;

  SClient(uint16_t port, std::vector<std::string> extra) {
    out_path = fixtures().dir + "/s_client." + std::to_string(port) + ".out";
    int p[2];
    REQUIRE(pipe2(p, O_CLOEXEC) == 0);
    stdin_fd = p[1];
    std::vector<std::string> args = {"openssl", "s_client", "-connect", "127.0.0.1:" + std::to_string(port),
                                     "-servername", "localhost", "-quiet"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    REQUIRE(posix_spawnp(&pid, "openssl", &fa, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&fa);
    ::close(p[0]);
  }
  void send(std::string_view s) { REQUIRE(::write(stdin_fd, s.data(), s.size()) == ssize_t(s.size())); }
  // Waits (bounded) for s_client to end and returns what it printed.
  std::string finish() {
    ::close(stdin_fd);
    stdin_fd = -1;
    int status = 0;
    for (int i = 0; i < 1500; ++i) {
      if (waitpid(pid, &status, WNOHANG) == pid) {
        pid = -1;
        break;
      }
      std::this_thread::sleep_for(10ms);
    }
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      pid = -1;
      FAIL("openssl s_client did not exit");
    }
    std::ifstream in(out_path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  ~SClient() {
    if (stdin_fd >= 0) ::close(stdin_fd);
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

TlsServerConfig stealth_cfg(rt::Duration peek = 2s) {
  TlsServerConfig c;
  c.stealth = true;
  c.peek_timeout = peek;
  return c;
}

}  // namespace

TEST_CASE("stealth classifier: prefix compare of SSH-2.0-", "[tls][stealth]") {
  using transport::classify_first_bytes;
  using transport::PeekVerdict;
  auto v = [](std::string_view s) { return classify_first_bytes(bytes(s)); };
  CHECK(v("") == PeekVerdict::NeedMore);
  CHECK(v("S") == PeekVerdict::NeedMore);
  CHECK(v("SSH-2.0") == PeekVerdict::NeedMore);
  CHECK(v("SSH-2.0-") == PeekVerdict::Ssh);
  CHECK(v("SSH-2.0-OpenSSH_9.2\r\n") == PeekVerdict::Ssh);
  CHECK(v("G") == PeekVerdict::NotSsh);
  CHECK(v("GET / HTTP/1.1\r\n") == PeekVerdict::NotSsh);
  CHECK(v("SSH-1.99-old") == PeekVerdict::NotSsh);
  CHECK(v("ssh-2.0-") == PeekVerdict::NotSsh);
  CHECK(v(std::string_view("SSH\0", 4)) == PeekVerdict::NotSsh);
  CHECK(v("SSH-2.0_") == PeekVerdict::NotSsh);
}

TEST_CASE("server context: errors name the file and the reason", "[tls]") {
  const auto &f = fixtures();
  TlsServerConfig c;
  c.cert_file = f.dir + "/missing.pem";
  c.key_file = f.key;
  auto r = TlsServerContext::create(c);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().what, Catch::Contains(c.cert_file) && Catch::Contains("No such file"));

  c.cert_file = f.garbage;
  r = TlsServerContext::create(c);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().what, Catch::Contains(f.garbage) && Catch::Contains("no PEM data"));

  c.cert_file = f.cert;
  c.key_file = f.garbage;
  r = TlsServerContext::create(c);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().what, Catch::Contains(f.garbage));

  c.key_file = f.rsa_key;  // the RSA key does not belong to the EC certificate
  r = TlsServerContext::create(c);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().what, Catch::Contains("does not match"));

  c.cert_file = f.rsa_cert;
  CHECK(TlsServerContext::create(c));
  c.cert_file = f.cert;
  c.key_file = f.key;
  CHECK(TlsServerContext::create(c));
}

TEST_CASE("client context: unreadable CA file and missing name are refused", "[tls]") {
  TlsClientConfig c;
  c.server_name = "localhost";
  c.ca_file = fixtures().dir + "/no-ca.pem";
  auto r = TlsClientContext::create(c);
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().what, Catch::Contains(c.ca_file));
  c.ca_file = fixtures().garbage;
  CHECK_FALSE(TlsClientContext::create(c));
  c.ca_file.clear();
  c.server_name.clear();
  CHECK_FALSE(TlsClientContext::create(c));
}

TEST_CASE("8 MiB byte-exact through TLS, pump and an echo", "[tls]") {
  rt::Reactor reactor;
  auto sctx = server_ctx();
  auto cctx = insecure_client();
  auto data = pattern(8 << 20, 1);
  std::vector<std::byte> back;
  int werr = 0, rerr = 0;
  stream::PumpStats stats;
  rt::run_blocking([](auto sctx, auto cctx, auto &data, auto &back, int &werr, int &rerr,
                      stream::PumpStats &stats) -> rt::Task<void> {
    Both b;
    co_await handshake_both(sctx, cctx, b);
    REQUIRE(b.client->ok());
    REQUIRE(b.server->ok());
    auto &client = *b.client->value();
    auto &server = *b.server->value();
    // Both ends of one TLS 1.3 connection export the same channel binding (kex.hpp).
    REQUIRE(client.channel_binding());
    CHECK(client.channel_binding() == server.channel_binding());
    CHECK(*client.channel_binding() != stream::ChannelBinding{});
    int sp[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp) == 0);
    stream::FdStream near(rt::UniqueFd{sp[0]});
    rt::UniqueFd far(sp[1]);
    rt::Scope sc;
    sc.spawn(fd_echo(far.get()));
    sc.spawn([](stream::Stream &a, stream::Stream &b, stream::PumpStats &st) -> rt::Task<void> {
      st = co_await stream::pump(a, b);
    }(server, near, stats));
    sc.spawn(write_all(client, data, werr));
    sc.spawn(read_into(client, back, rerr));
    co_await sc.join();
  }(sctx, cctx, data, back, werr, rerr, stats));
  CHECK(werr == 0);
  CHECK(rerr == 0);
  CHECK(stats.error == 0);
  CHECK(stats.a_to_b == data.size());
  CHECK(stats.b_to_a == data.size());
  REQUIRE(back.size() == data.size());
  CHECK((back == data));  // parenthesised: never print 8 MiB
}

TEST_CASE("8 MiB each way at once, independent data", "[tls]") {
  rt::Reactor reactor;
  auto data_c = pattern(8 << 20, 2), data_s = pattern(8 << 20, 3);
  std::vector<std::byte> got_c, got_s;
  int e[4] = {};
  rt::run_blocking([](auto sctx, auto cctx, auto &dc, auto &ds, auto &gc, auto &gs, int *e) -> rt::Task<void> {
    Both b;
    co_await handshake_both(sctx, cctx, b);
    REQUIRE(b.client->ok());
    REQUIRE(b.server->ok());
    rt::Scope sc;
    sc.spawn(write_all(*b.client->value(), dc, e[0]));
    sc.spawn(read_into(*b.client->value(), gc, e[1]));
    sc.spawn(write_all(*b.server->value(), ds, e[2]));
    sc.spawn(read_into(*b.server->value(), gs, e[3]));
    co_await sc.join();
  }(server_ctx(), insecure_client(), data_c, data_s, got_c, got_s, e));
  CHECK(e[0] == 0);
  CHECK(e[1] == 0);
  CHECK(e[2] == 0);
  CHECK(e[3] == 0);
  CHECK((got_s == data_c));
  CHECK((got_c == data_s));
}

TEST_CASE("self-signed certificate is refused against the system store", "[tls]") {
  rt::Reactor reactor;
  TlsClientConfig c;
  c.server_name = "localhost";
  auto b = handshake(server_ctx(), client_ctx(c));
  REQUIRE_FALSE(b.client->ok());
  CHECK_THAT(b.client->error().what, Catch::Contains("not trusted"));
  CHECK_FALSE(b.server->ok());
}

TEST_CASE("ca_file = the certificate is trusted, by name and by IP", "[tls]") {
  rt::Reactor reactor;
  TlsClientConfig c;
  c.ca_file = fixtures().cert;
  c.server_name = GENERATE("localhost", "127.0.0.1");
  auto b = handshake(server_ctx(), client_ctx(c));
  INFO((b.client->ok() ? std::string() : b.client->error().what));
  CHECK(b.client->ok());
  CHECK(b.server->ok());
}

TEST_CASE("a server name the certificate does not carry fails", "[tls]") {
  rt::Reactor reactor;
  TlsClientConfig c;
  c.ca_file = fixtures().cert;
  c.server_name = GENERATE("example.com", "127.0.0.2");
  auto b = handshake(server_ctx(), client_ctx(c));
  REQUIRE_FALSE(b.client->ok());
  CHECK_THAT(b.client->error().what, Catch::Contains(c.server_name));
  CHECK_FALSE(b.server->ok());
}

TEST_CASE("insecure accepts a self-signed certificate, RSA too", "[tls]") {
  rt::Reactor reactor;
  TlsServerConfig s;
  s.cert_file = GENERATE(as<std::string>{}, "", fixtures().rsa_cert);
  s.key_file = s.cert_file.empty() ? "" : fixtures().rsa_key;
  auto b = handshake(server_ctx(s), insecure_client());
  CHECK(b.client->ok());
  CHECK(b.server->ok());
}

TEST_CASE("ALPN mismatch fails the handshake without stealth", "[tls]") {
  rt::Reactor reactor;
  SECTION("client offers another protocol") {
    TlsClientConfig c;
    c.server_name = "localhost";
    c.insecure = true;
    c.alpn = "h2";
    auto b = handshake(server_ctx(), client_ctx(c));
    CHECK_FALSE(b.client->ok());
    REQUIRE_FALSE(b.server->ok());
    CHECK(b.server->error().code == rt::kErrProtocol);
  }
  SECTION("server does not speak alknet-ssh") {
    TlsServerConfig s;
    s.alpn = {"something-else"};
    auto b = handshake(server_ctx(s), insecure_client());
    REQUIRE_FALSE(b.client->ok());
    CHECK(b.client->error().code == rt::kErrProtocol);
    CHECK_FALSE(b.server->ok());
  }
}

TEST_CASE("stealth: s_client with -alpn http/1.1 or no ALPN gets exactly the 404", "[tls][stealth]") {
  rt::Reactor reactor;
  std::vector<std::string> extra = GENERATE(std::vector<std::string>{"-alpn", "http/1.1"},
                                            std::vector<std::string>{});
  Listener l;
  SClient sc(l.port, extra);
  sc.send("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  std::optional<rt::Error> err;
  std::string got;
  rt::run_blocking(echo_server(l.fd.get(), server_ctx(stealth_cfg()), SIZE_MAX, err, got));
  REQUIRE(err);
  CHECK(err->code == rt::kErrNotAllowed);
  CHECK(err->what == "stealth: not an SSH client");
  CHECK(sc.finish() == transport::kStealthNotFound);
}

TEST_CASE("stealth: a silent client gets the 404 after peek_timeout", "[tls][stealth]") {
  rt::Reactor reactor;
  Listener l;
  SClient sc(l.port, {"-alpn", "alknet-ssh"});
  std::optional<rt::Error> err;
  std::string got;
  auto t0 = std::chrono::steady_clock::now();
  rt::run_blocking(echo_server(l.fd.get(), server_ctx(stealth_cfg(300ms)), SIZE_MAX, err, got));
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE(err);
  CHECK(err->code == rt::kErrNotAllowed);
  CHECK(took >= 300ms);
  CHECK(took < 5s);
  CHECK(sc.finish() == transport::kStealthNotFound);
}

TEST_CASE("stealth: an SSH client gets its peeked bytes replayed", "[tls][stealth]") {
  rt::Reactor reactor;
  std::optional<rt::Error> err;
  std::string server_got, client_got;
  int cerr = 0;
  rt::run_blocking([](auto sctx, auto cctx, auto &err, auto &server_got, auto &client_got, int &cerr) -> rt::Task<void> {
    Listener l;
    rt::Scope sc;
    sc.spawn(echo_server(l.fd.get(), sctx, SIZE_MAX, err, server_got));
    std::optional<StreamResult> c;
    co_await do_connect(l.port, cctx, c);
    REQUIRE(c->ok());
    auto &s = *c->value();
    // The banner arrives in pieces: the peek must wait for all of "SSH-2.0-".
    co_await write_str(s, "SSH-");
    co_await rt::sleep_for(50ms);
    co_await write_str(s, "2.0");
    co_await rt::sleep_for(50ms);
    co_await write_str(s, "-alknet_test\r\npayload after the banner");
    co_await s.shutdown_write();
    client_got = co_await read_all(s, cerr);
    co_await sc.join();
  }(server_ctx(stealth_cfg()), insecure_client(), err, server_got, client_got, cerr));
  CHECK_FALSE(err);
  CHECK(server_got == "SSH-2.0-alknet_test\r\npayload after the banner");
  CHECK(client_got == server_got);
  CHECK(cerr == 0);
}

TEST_CASE("stealth: non-SSH bytes over alknet-ssh, or plain http/1.1, get the 404", "[tls][stealth]") {
  rt::Reactor reactor;
  TlsClientConfig c;
  c.server_name = "localhost";
  c.insecure = true;
  c.alpn = GENERATE("alknet-ssh", "http/1.1");
  std::optional<rt::Error> err;
  std::string unused, client_got;
  int cerr = 0;
  rt::run_blocking([](auto sctx, auto cctx, auto &err, auto &unused, auto &client_got, int &cerr) -> rt::Task<void> {
    Listener l;
    rt::Scope sc;
    sc.spawn(echo_server(l.fd.get(), sctx, SIZE_MAX, err, unused));
    std::optional<StreamResult> r;
    co_await do_connect(l.port, cctx, r);
    REQUIRE(r->ok());
    co_await write_str(*r->value(), "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    client_got = co_await read_all(*r->value(), cerr);
    co_await sc.join();
  }(server_ctx(stealth_cfg()), client_ctx(c), err, unused, client_got, cerr));
  REQUIRE(err);
  CHECK(err->code == rt::kErrNotAllowed);
  CHECK(client_got == transport::kStealthNotFound);
}

TEST_CASE("garbage instead of a ClientHello fails cleanly and leaks no fd", "[tls]") {
  rt::Reactor reactor;
  Listener l;
  size_t before = open_fds();
  std::optional<StreamResult> srv;
  std::string reply;
  for (bool stealth : {false, true}) {
    TlsServerConfig cfg;
    cfg.stealth = stealth;
    rt::run_blocking([](int lfd, uint16_t port, auto ctx, auto &srv, std::string &reply) -> rt::Task<void> {
      rt::Scope sc;
      sc.spawn(do_accept(lfd, ctx, srv));
      auto fd = co_await dial(port);
      REQUIRE(fd);
      std::string_view req = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
      co_await rt::send(fd->get(), bytes(req));
      std::byte buf[4096];
      for (;;) {
        int n = co_await rt::recv(fd->get(), buf);
        if (n <= 0) break;
        reply.append(reinterpret_cast<const char *>(buf), size_t(n));
      }
      co_await sc.join();
    }(l.fd.get(), l.port, server_ctx(cfg), srv, reply));
    REQUIRE(srv);
    REQUIRE_FALSE(srv->ok());
    CHECK(srv->error().code == rt::kErrProtocol);
    CHECK(open_fds() == before);
    srv.reset();
  }
}

TEST_CASE("handshake timeout drops a silent TCP peer", "[tls]") {
  rt::Reactor reactor;
  Listener l;
  size_t before = open_fds();
  TlsServerConfig cfg;
  cfg.handshake_timeout = 200ms;
  std::optional<StreamResult> srv;
  int peer_read = -1;
  auto t0 = std::chrono::steady_clock::now();
  rt::run_blocking([](int lfd, uint16_t port, auto ctx, auto &srv, int &peer_read) -> rt::Task<void> {
    rt::Scope sc;
    sc.spawn(do_accept(lfd, ctx, srv));
    auto fd = co_await dial(port);
    REQUIRE(fd);
    std::byte buf[16];
    peer_read = co_await rt::recv(fd->get(), buf).with_timeout(5s);  // the server hangs up
    co_await sc.join();
  }(l.fd.get(), l.port, server_ctx(cfg), srv, peer_read));
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE(srv);
  REQUIRE_FALSE(srv->ok());
  CHECK(srv->error().code == ETIMEDOUT);
  CHECK(peer_read == 0);
  CHECK(took >= 200ms);
  CHECK(took < 3s);
  CHECK(open_fds() == before);
}

TEST_CASE("half-close through TLS: each direction ends on its own", "[tls]") {
  rt::Reactor reactor;
  std::string server_got, client_got;
  int e1 = 0, e2 = 0;
  rt::run_blocking([](auto sctx, auto cctx, std::string &server_got, std::string &client_got, int &e1,
                      int &e2) -> rt::Task<void> {
    Both b;
    co_await handshake_both(sctx, cctx, b);
    REQUIRE(b.client->ok());
    REQUIRE(b.server->ok());
    auto &c = *b.client->value();
    auto &s = *b.server->value();
    REQUIRE(c.native_fd() == -1);
    co_await write_str(c, "request");
    int r = co_await c.shutdown_write();
    REQUIRE(r == 0);
    ssize_t late = co_await c.write(bytes("late"));
    CHECK(late < 0);  // written after shutdown: refused
    server_got = co_await read_all(s, e1);       // ends at the client's close_notify
    // The server's direction is still open: answer after the client stopped writing.
    co_await write_str(s, "response to ");
    co_await write_str(s, server_got);
    co_await s.shutdown_write();
    client_got = co_await read_all(c, e2);
  }(server_ctx(), insecure_client(), server_got, client_got, e1, e2));
  CHECK(server_got == "request");
  CHECK(client_got == "response to request");
  CHECK(e1 == 0);
  CHECK(e2 == 0);
}

TEST_CASE("interop: openssl s_client -alpn alknet-ssh -quiet against tls_accept", "[tls][interop]") {
  rt::Reactor reactor;
  bool stealth = GENERATE(false, true);
  Listener l;
  SClient sc(l.port, {"-alpn", "alknet-ssh"});
  const std::string msg = "SSH-2.0-OpenSSL_s_client\r\nping\n";
  sc.send(msg);
  std::optional<rt::Error> err;
  std::string got;
  // s_client never half-closes (-quiet implies -ign_eof): the server closes once it has it all.
  rt::run_blocking(echo_server(l.fd.get(), server_ctx(stealth ? stealth_cfg() : TlsServerConfig{}), msg.size(), err, got));
  INFO((err ? err->what : std::string()));
  REQUIRE_FALSE(err);
  CHECK(got == msg);
  CHECK(sc.finish() == msg);
}

// ---------------------------------------------------------------------------------------
// The record layer (record.hpp) against BoringSSL's: two SSL objects joined by a BIO pair in
// memory, our keys taking over one side's records after the handshake.

namespace {

namespace tls13 = transport::tls13;

struct MemoryPair {
  bssl::UniquePtr<SSL_CTX> server_ctx{SSL_CTX_new(TLS_method())}, client_ctx{SSL_CTX_new(TLS_method())};
  bssl::UniquePtr<SSL> server, client;
  BIO *client_end = nullptr;  // the bytes on the wire at the client: what it sends, what it gets

  MemoryPair() {
    REQUIRE(SSL_CTX_use_certificate_chain_file(server_ctx.get(), fixtures().cert.c_str()) == 1);
    REQUIRE(SSL_CTX_use_PrivateKey_file(server_ctx.get(), fixtures().key.c_str(), SSL_FILETYPE_PEM) == 1);
    // This BoringSSL offers no way to choose a TLS 1.3 suite: with AES hardware both ends pick
    // TLS_AES_128_GCM_SHA256. TLS_AES_256_GCM_SHA384, OpenSSL's first choice, is met in the
    // openssl s_client interop test and through the TLS-terminating relay (integration).
    for (auto *ctx : {server_ctx.get(), client_ctx.get()}) {
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    }
    server.reset(SSL_new(server_ctx.get()));
    client.reset(SSL_new(client_ctx.get()));
    BIO *server_end = nullptr;
    REQUIRE(BIO_new_bio_pair(&client_end, 1 << 20, &server_end, 1 << 20) == 1);
    SSL_set_bio(server.get(), server_end, server_end);
    BIO_up_ref(client_end);  // one reference for the SSL, one for the tests' raw reads/writes
    SSL_set_bio(client.get(), client_end, client_end);
    SSL_set_accept_state(server.get());
    SSL_set_connect_state(client.get());
    for (int i = 0; i < 10; ++i) {
      const int c = SSL_do_handshake(client.get()), s = SSL_do_handshake(server.get());
      if (c == 1 && s == 1) break;
    }
    REQUIRE(SSL_is_init_finished(client.get()));
    REQUIRE(SSL_is_init_finished(server.get()));
    // BoringSSL sends its session tickets with the server's first write: let the client take
    // them in, so that only our records follow.
    uint8_t byte;
    REQUIRE(SSL_write(server.get(), "x", 1) == 1);
    REQUIRE(SSL_read(client.get(), &byte, 1) == 1);
  }
  ~MemoryPair() { BIO_free(client_end); }

  uint16_t suite() const { return SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(client.get())); }

  // Our keys for the client's two directions, from BoringSSL's state now.
  void take_over(tls13::RecordKeys &rx, tls13::RecordKeys &tx) {
    bssl::Span<const uint8_t> r, w;
    REQUIRE(bssl::SSL_get_traffic_secrets(client.get(), &r, &w));
    REQUIRE(rx.init(suite(), r, SSL_get_read_sequence(client.get())));
    REQUIRE(tx.init(suite(), w, SSL_get_write_sequence(client.get())));
  }

  // Everything the server sent that the client has not read.
  std::vector<uint8_t> wire_to_client() {
    std::vector<uint8_t> out;
    uint8_t buf[65536];
    for (int n; (n = BIO_read(client_end, buf, sizeof buf)) > 0;) out.insert(out.end(), buf, buf + n);
    return out;
  }
  void wire_to_server(std::span<const uint8_t> bytes) {
    REQUIRE(BIO_write(client_end, bytes.data(), int(bytes.size())) == int(bytes.size()));
  }
  std::string server_reads(size_t n) {
    std::string got(n, '\0');
    size_t have = 0;
    while (have < n) {
      const int r = SSL_read(server.get(), got.data() + have, int(n - have));
      if (r <= 0) break;
      have += size_t(r);
    }
    got.resize(have);
    return got;
  }
};

// Opens every record in wire; returns (type, content) pairs.
std::vector<std::pair<tls13::ContentType, std::string>> open_all(tls13::RecordKeys &rx, std::vector<uint8_t> wire) {
  std::vector<std::pair<tls13::ContentType, std::string>> out;
  std::span<uint8_t> rest(wire);
  while (!rest.empty()) {
    const auto h = tls13::parse_header(rest);
    REQUIRE(h.status == tls13::Header::ok);
    REQUIRE(rest.size() >= h.record_len);
    auto record = rest.first(h.record_len);
    const auto opened = rx.open(record, record.data() + tls13::kHeaderLen);  // in place
    out.emplace_back(opened.type, std::string(reinterpret_cast<const char *>(record.data()) + tls13::kHeaderLen,
                                              opened.len));
    rest = rest.subspan(h.record_len);
  }
  return out;
}

std::string text_pattern(size_t n, uint64_t seed) {
  const auto bytes = pattern(n, seed);
  return std::string(reinterpret_cast<const char *>(bytes.data()), bytes.size());
}

}  // namespace

TEST_CASE("tls13 records: ours seal what BoringSSL opens and open what it seals", "[tls][record]") {
  MemoryPair p;
  REQUIRE(p.suite() == 0x1301);
  tls13::RecordKeys rx, tx;
  p.take_over(rx, tx);

  for (size_t n : {size_t(0), size_t(1), size_t(15), size_t(16), size_t(17), size_t(1000), tls13::kMaxPlaintext}) {
    INFO("content " << n);
    const std::string msg = text_pattern(n, n);
    std::vector<uint8_t> record(n + tls13::kSealOverhead);
    const std::span<const uint8_t> content(reinterpret_cast<const uint8_t *>(msg.data()), n);
    REQUIRE(tx.seal(tls13::ContentType::application_data, content, record.data()) == record.size());
    p.wire_to_server(record);
    if (n > 0) CHECK(p.server_reads(n) == msg);

    const std::string reply = text_pattern(n, n + 1);
    if (n > 0) REQUIRE(SSL_write(p.server.get(), reply.data(), int(n)) == int(n));
    const auto opened = open_all(rx, p.wire_to_client());
    REQUIRE(opened.size() == (n > 0 ? 1u : 0u));
    if (n > 0) {
      CHECK(opened[0].first == tls13::ContentType::application_data);
      CHECK(opened[0].second == reply);
    }
  }

  // A flipped bit anywhere in a record fails it.
  const std::string reply = "tamper with me";
  REQUIRE(SSL_write(p.server.get(), reply.data(), int(reply.size())) == int(reply.size()));
  auto wire = p.wire_to_client();
  wire[wire.size() / 2] ^= 0x10;
  CHECK(open_all(rx, wire)[0].first == tls13::ContentType::invalid);
}

TEST_CASE("tls13 records: a KeyUpdate from BoringSSL moves both directions on", "[tls][record]") {
  MemoryPair p;
  tls13::RecordKeys rx, tx;
  p.take_over(rx, tx);
  REQUIRE(SSL_key_update(p.server.get(), SSL_KEY_UPDATE_REQUESTED) == 1);
  REQUIRE(SSL_write(p.server.get(), "after", 5) == 5);
  std::vector<uint8_t> wire = p.wire_to_client();
  // The first record is the KeyUpdate under the old keys; the data needs the new ones.
  const auto h = tls13::parse_header(wire);
  REQUIRE(h.status == tls13::Header::ok);
  const auto split = wire.begin() + long(h.record_len);
  std::vector<uint8_t> first(wire.begin(), split), rest(split, wire.end());
  auto opened = open_all(rx, first);
  REQUIRE(opened[0].first == tls13::ContentType::handshake);
  const auto &msg = opened[0].second;
  const auto ph = tls13::parse_post_handshake({reinterpret_cast<const uint8_t *>(msg.data()), msg.size()});
  REQUIRE(ph.kind == tls13::PostHandshake::key_update_requested);
  REQUIRE(rx.update());
  opened = open_all(rx, rest);
  REQUIRE(opened[0].first == tls13::ContentType::application_data);
  CHECK(opened[0].second == "after");

  // Our answer, then data under our next keys: BoringSSL reads it.
  std::vector<uint8_t> out(5 + tls13::kSealOverhead + 4 + tls13::kSealOverhead);
  const uint8_t key_update[] = {24, 0, 0, 1, 0};
  std::memcpy(out.data() + tls13::kHeaderLen, key_update, 5);  // in place
  size_t at = tx.seal(tls13::ContentType::handshake, {out.data() + tls13::kHeaderLen, 5}, out.data());
  REQUIRE(tx.update());
  const uint8_t next[] = {'n', 'e', 'x', 't'};
  at += tx.seal(tls13::ContentType::application_data, next, out.data() + at);
  p.wire_to_server({out.data(), at});
  CHECK(p.server_reads(4) == "next");
}

TEST_CASE("tls13 record headers and post-handshake messages parse strictly", "[tls][record]") {
  using tls13::Header;
  using tls13::PostHandshake;
  const uint8_t ok[] = {23, 3, 3, 0, 17};
  CHECK(tls13::parse_header({ok, 4}).status == Header::need_more);
  CHECK(tls13::parse_header(ok).status == Header::ok);
  CHECK(tls13::parse_header(ok).record_len == 22);
  const uint8_t handshake_type[] = {22, 3, 3, 0, 40}, too_short[] = {23, 3, 3, 0, 16}, too_long[] = {23, 3, 3, 0x41, 1};
  const uint8_t longest[] = {23, 3, 3, 0x41, 0};
  CHECK(tls13::parse_header(handshake_type).status == Header::bad);
  CHECK(tls13::parse_header(too_short).status == Header::bad);
  CHECK(tls13::parse_header(too_long).status == Header::bad);
  CHECK(tls13::parse_header(longest).record_len == 5 + 16384 + 256);

  const uint8_t ticket[] = {4, 0, 0, 3, 1, 2, 3, 24};
  CHECK(tls13::parse_post_handshake({ticket, 6}).kind == PostHandshake::need_more);
  CHECK(tls13::parse_post_handshake(ticket).kind == PostHandshake::new_session_ticket);
  CHECK(tls13::parse_post_handshake(ticket).len == 7);
  const uint8_t update[] = {24, 0, 0, 1, 0}, requested[] = {24, 0, 0, 1, 1}, bad_value[] = {24, 0, 0, 1, 2},
                bad_len[] = {24, 0, 0, 2, 0, 0}, cert_request[] = {13, 0, 0, 1, 0}, huge[] = {4, 0x02, 0, 0};
  CHECK(tls13::parse_post_handshake(update).kind == PostHandshake::key_update);
  CHECK(tls13::parse_post_handshake(requested).kind == PostHandshake::key_update_requested);
  CHECK(tls13::parse_post_handshake(bad_value).kind == PostHandshake::bad);
  CHECK(tls13::parse_post_handshake(bad_len).kind == PostHandshake::bad);
  CHECK(tls13::parse_post_handshake(cert_request).kind == PostHandshake::bad);
  CHECK(tls13::parse_post_handshake(huge).kind == PostHandshake::bad);
}

TEST_CASE("tls_accept follows a peer's KeyUpdate and answers it, on our records", "[tls][record]") {
  // A BoringSSL client on a thread: 100 KB, a KeyUpdate asking for ours, 100 KB more; our
  // server echoes everything, so the client's read of the second half needs our new keys.
  rt::Reactor reactor;
  Listener l;
  const std::string first = text_pattern(100000, 1), second = text_pattern(100000, 2);
  std::string client_got;
  bool client_ok = false;
  std::thread client([&] {
    bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    const uint8_t alpn[] = {10, 'a', 'l', 'k', 'n', 'e', 't', '-', 's', 's', 'h'};
    SSL_CTX_set_alpn_protos(ctx.get(), alpn, sizeof alpn);
    bssl::UniquePtr<SSL> ssl(SSL_new(ctx.get()));
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(l.port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) return;
    SSL_set_fd(ssl.get(), fd);
    if (SSL_connect(ssl.get()) != 1) return;
    bool ok = SSL_write(ssl.get(), first.data(), int(first.size())) == int(first.size()) &&
              SSL_key_update(ssl.get(), SSL_KEY_UPDATE_REQUESTED) == 1 &&
              SSL_write(ssl.get(), second.data(), int(second.size())) == int(second.size());
    char buf[16384];
    while (ok && client_got.size() < first.size() + second.size()) {
      const int n = SSL_read(ssl.get(), buf, sizeof buf);
      if (n <= 0) break;
      client_got.append(buf, size_t(n));
    }
    client_ok = ok;
    SSL_shutdown(ssl.get());
    ::close(fd);
  });
  std::optional<rt::Error> err;
  std::string server_got;
  rt::run_blocking(echo_server(l.fd.get(), server_ctx(), first.size() + second.size(), err, server_got));
  client.join();
  INFO((err ? err->what : std::string()));
  REQUIRE_FALSE(err);
  CHECK(server_got == first + second);
  CHECK(client_ok);
  CHECK(client_got == first + second);
}
