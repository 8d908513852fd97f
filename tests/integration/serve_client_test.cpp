// alknet's own client (ssh::Client) against `alknet serve` (the test binary, as a child process):
// the open-status protocol must turn every dial outcome into the right errno on the client.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "ssh/client.hpp"
#include "stream/stream.hpp"

extern char **environ;

using namespace alk;
using namespace std::chrono_literals;

namespace {

std::string data(const std::string &name) {
  const char *dir = std::getenv("ALKNET_TEST_DATA");
  return std::string(dir ? dir : "tests/unit/data") + "/ssh/" + name;
}

uint16_t free_port() {
  auto l = net::listen_tcp(*net::Endpoint::from_ip("127.0.0.1", 0), 1);
  REQUIRE(l.ok());
  return net::Endpoint::of_socket_local(l.value().get()).port();
}

// `alknet serve` (the test binary) on a free loopback port, stopped when the test ends.
struct Child {
  pid_t pid = -1;
  uint16_t spawn_serve() {
    const char *bin = std::getenv("ALKNET_SERVE_BIN");
    REQUIRE(bin);
    const uint16_t port = free_port();
    std::vector<std::string> args{bin, "serve", "--key", data("host_ed25519"), "--authorized-keys",
                                  data("user_ed25519.pub"), "--listen", "127.0.0.1:" + std::to_string(port), "--quiet"};
    std::vector<char *> argv;
    for (auto &a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid, bin, nullptr, nullptr, argv.data(), environ) == 0);
    return port;
  }
  ~Child() {
    if (pid > 0) {
      kill(pid, SIGTERM);
      int st = 0;
      waitpid(pid, &st, 0);
    }
  }
};

// A listening socket for a test target on 127.0.0.1.
rt::UniqueFd loopback_listener(uint16_t *port) {
  auto l = net::listen_tcp(*net::Endpoint::from_ip("127.0.0.1", 0), 16);
  REQUIRE(l.ok());
  *port = net::Endpoint::of_socket_local(l.value().get()).port();
  return std::move(l.value());
}

// ssh::Client to the spawned server, retried while it starts; nullptr if it never answers.
rt::Task<std::unique_ptr<ssh::Client>> connect_client(uint16_t port, uint64_t rekey_bytes) {
  auto id = ssh::Identity::load(data("user_ed25519"));
  if (!id) co_return nullptr;
  for (int i = 0; i < 100; ++i) {
    auto fd = co_await net::connect_tcp(*net::Endpoint::from_ip("127.0.0.1", port), 1s);
    if (!fd) {
      co_await rt::sleep_for(50ms);
      continue;
    }
    ssh::ClientConfig cfg;
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.rekey_bytes = rekey_bytes;
    auto c = co_await ssh::Client::connect(std::make_unique<stream::FdStream>(std::move(fd.value())), cfg, id.value());
    if (c) co_return std::move(c.value());
  }
  co_return nullptr;
}

// What every test here starts with: the server, a reactor, and a listening target.
struct Setup {
  Child child;
  const uint16_t port = child.spawn_serve();
  rt::Reactor reactor;
  uint16_t target_port = 0;
  net::Acceptor acceptor{loopback_listener(&target_port)};
};

}  // namespace

TEST_CASE("alknet client <-> alknet serve: open-status codes and data") {
  Setup t;  // its target greets and echoes one read
  auto &[child, port, reactor, target_port, acceptor] = t;

  struct Outcome {
    bool connected = false, alknet = false;
    std::string greeting;
    int refused = -1, link_local = -1, reserved = -1, closed_after = -1;
  } out;

  rt::run_blocking([](net::Acceptor &acc, uint16_t port, uint16_t tport, Outcome &o) -> rt::Task<void> {
    rt::Scope servers;
    servers.spawn([](net::Acceptor &acc) -> rt::Task<void> {
      for (;;) {
        auto fd = co_await acc.accept();
        if (!fd) co_return;
        stream::FdStream s(std::move(fd.value()));
        const char hi[] = "hello from target";
        co_await s.write(std::as_bytes(std::span(hi, sizeof hi - 1)));
        co_await s.shutdown_write();
      }
    }(acc));
    auto client = co_await connect_client(port, uint64_t{1} << 30);
    if (!client) co_return;
    o.connected = true;
    o.alknet = client->peer_is_alknet();

    {
    auto ch = co_await client->open_direct_tcpip("127.0.0.1", tport, "127.0.0.1", 1234, 10s);
    if (ch) {
      std::byte buf[256];
      for (;;) {
        auto n = co_await ch.value()->read(buf);
        if (n <= 0) break;
        o.greeting.append(reinterpret_cast<char *>(buf), size_t(n));
      }
    }
    }  // channels end before the session
    auto code = [&](const std::string &host, uint16_t p) -> rt::Task<int> {
      auto r = co_await client->open_direct_tcpip(host, p, "127.0.0.1", 1234, 10s);
      co_return r ? 0 : r.error().code;
    };
    o.refused = co_await code("127.0.0.1", free_port());
    o.link_local = co_await code("169.254.169.254", 80);
    o.reserved = co_await code("alknet-nothing", 1);
    // The session survived all of that.
    o.closed_after = co_await code("127.0.0.1", tport);
    co_await client->disconnect();
    co_await acc.stop();
    co_await servers.close();
  }(acceptor, port, target_port, out));

  REQUIRE(out.connected);
  CHECK(out.alknet);
  CHECK(out.greeting == "hello from target");
  CHECK(out.refused == ECONNREFUSED);
  CHECK(out.link_local == rt::kErrNotAllowed);
  CHECK(out.reserved == rt::kErrNotAllowed);
  CHECK(out.closed_after == 0);
}

TEST_CASE("alknet client <-> alknet serve: 8 MiB echoed byte-exact across many re-keys") {
  Setup t;
  auto &[child, port, reactor, target_port, acceptor] = t;

  struct Outcome {
    bool connected = false, exact = false;
    size_t received = 0;
    uint64_t rekeys = 0;
  } out;

  rt::run_blocking([](net::Acceptor &acc, uint16_t port, uint16_t tport, Outcome &o) -> rt::Task<void> {
    rt::Scope servers;
    servers.spawn([](net::Acceptor &acc) -> rt::Task<void> {
      auto fd = co_await acc.accept();
      if (!fd) co_return;
      stream::FdStream s(std::move(fd.value()));
      std::vector<std::byte> buf(64 * 1024);
      for (;;) {
        auto n = co_await s.read(buf);
        if (n <= 0) break;
        auto w = co_await s.write(std::span<const std::byte>(buf.data(), size_t(n)));
        if (w < 0) break;
      }
      co_await s.shutdown_write();
    }(acc));
    // The client starts a key exchange every 256 KiB.
    auto client = co_await connect_client(port, 256 * 1024);
    if (!client) co_return;
    o.connected = true;
    {
      auto ch = co_await client->open_direct_tcpip("127.0.0.1", tport, "127.0.0.1", 1234, 10s);
      if (ch) {
        const size_t total = 8 * 1024 * 1024;
        std::vector<std::byte> sent(total), got;
        for (size_t i = 0; i < total; ++i) sent[i] = std::byte((i * 131) ^ (i >> 11));
        rt::Scope writer;
        auto *c = ch.value().get();
        writer.spawn([](ssh::Channel *c, const std::vector<std::byte> &d) -> rt::Task<void> {
          for (size_t off = 0; off < d.size(); off += 100000) {
            auto w = co_await c->write(std::span<const std::byte>(d).subspan(off, std::min<size_t>(100000, d.size() - off)));
            if (w < 0) co_return;
          }
          co_await c->shutdown_write();
        }(c, sent));
        std::vector<std::byte> buf(70000);
        for (;;) {
          auto n = co_await c->read(buf);
          if (n <= 0) break;
          got.insert(got.end(), buf.begin(), buf.begin() + n);
        }
        co_await writer.close();
        o.received = got.size();
        o.exact = got == sent;
      }
    }
    o.rekeys = client->core().wire().key_exchanges();
    co_await client->disconnect();
    co_await acc.stop();
    co_await servers.close();
  }(acceptor, port, target_port, out));

  REQUIRE(out.connected);
  CHECK(out.received == 8 * 1024 * 1024);
  CHECK(out.exact);
  // ~16 MiB on the wire; data keeps flowing (held) while each exchange completes.
  CHECK(out.rekeys >= 8);
}

TEST_CASE("alknet client <-> alknet serve: a target that reads slowly gets every byte in order, then EOF") {
  // The server hands channel data straight to the target socket while nothing waits in the
  // channel; when the target falls behind, the rest waits in the channel and must not be
  // overtaken by later packets.
  Setup t;
  auto &[child, port, reactor, target_port, acceptor] = t;
  constexpr size_t kTotal = 6 * 1024 * 1024;
  auto pattern = [](size_t i) { return std::byte((i * 7) ^ (i >> 13)); };

  struct Outcome {
    bool connected = false, eof = false;
    size_t received = 0, first_bad = SIZE_MAX;
    std::string reply;
  } out;

  rt::run_blocking([](net::Acceptor &acc, uint16_t port, uint16_t tport, Outcome &o, auto pattern) -> rt::Task<void> {
    rt::Scope servers;
    servers.spawn([](net::Acceptor &acc, Outcome &o, auto pattern) -> rt::Task<void> {
      auto fd = co_await acc.accept();
      if (!fd) co_return;
      stream::FdStream s(std::move(fd.value()));
      std::vector<std::byte> buf(16 * 1024);
      for (int reads = 0;; ++reads) {
        // Slow for the first ~2 MiB (a read of at most 16 KiB per 2 ms), then as fast as it can.
        if (o.received < 2 * 1024 * 1024) co_await rt::sleep_for(2ms);
        auto n = co_await s.read(buf);
        if (n < 0) co_return;
        if (n == 0) {
          o.eof = true;
          break;
        }
        for (size_t i = 0; i < size_t(n); ++i)
          if (buf[i] != pattern(o.received + i) && o.first_bad == SIZE_MAX) o.first_bad = o.received + i;
        o.received += size_t(n);
      }
      const std::string ok = std::to_string(o.received);
      co_await s.write(std::as_bytes(std::span(ok.data(), ok.size())));
      co_await s.shutdown_write();
    }(acc, o, pattern));
    auto client = co_await connect_client(port, uint64_t{1} << 30);
    if (!client) co_return;
    o.connected = true;
    {
      auto ch = co_await client->open_direct_tcpip("127.0.0.1", tport, "127.0.0.1", 1234, 10s);
      if (ch) {
        std::vector<std::byte> sent(kTotal);
        for (size_t i = 0; i < kTotal; ++i) sent[i] = pattern(i);
        for (size_t off = 0; off < kTotal; off += 100000) {
          auto w = co_await ch.value()->write(std::span<const std::byte>(sent).subspan(off, std::min<size_t>(100000, kTotal - off)));
          if (w < 0) break;
        }
        co_await ch.value()->shutdown_write();
        std::byte buf[64];
        for (;;) {
          auto n = co_await ch.value()->read(buf);
          if (n <= 0) break;
          o.reply.append(reinterpret_cast<char *>(buf), size_t(n));
        }
      }
    }
    co_await client->disconnect();
    co_await acc.stop();
    co_await servers.close();
  }(acceptor, port, target_port, out, pattern));

  REQUIRE(out.connected);
  CHECK(out.received == kTotal);
  CHECK(out.first_bad == SIZE_MAX);
  CHECK(out.eof);
  CHECK(out.reply == std::to_string(kTotal));
}
