// The QUIC transport end to end on loopback: real UDP sockets, one reactor, our glue.
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "net/socket.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "stream/stream.hpp"
#include "transport/quic/transport.hpp"

using namespace alk;
using namespace std::chrono_literals;
using quic::QuicClientConfig;
using quic::QuicListener;
using quic::QuicServerConfig;

namespace {

struct Certs {
  std::string dir, cert, key;
  Certs() {
    char tmpl[] = "/tmp/alk-quic-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    cert = dir + "/c.pem";
    key = dir + "/k.pem";
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
        key + " -out " + cert + " -days 2 >/dev/null 2>&1";
    REQUIRE(std::system(cmd.c_str()) == 0);
  }
  ~Certs() {
    std::remove(cert.c_str());
    std::remove(key.c_str());
    ::rmdir(dir.c_str());
  }
};

const Certs &certs() {
  static Certs c;
  return c;
}

int count_fds() {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  while (dirent *e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // the DIR itself
}

net::Endpoint loopback(uint16_t port = 0) { return *net::Endpoint::from_ip("127.0.0.1", port); }

QuicServerConfig server_cfg() {
  QuicServerConfig c;
  c.cert_file = certs().cert;
  c.key_file = certs().key;
  return c;
}

QuicClientConfig client_cfg() {
  QuicClientConfig c;
  c.server_name = "localhost";
  c.ca_file = certs().cert;
  return c;
}

uint8_t pattern(uint64_t i, uint64_t seed) { return static_cast<uint8_t>((i * 31) ^ (i >> 11) ^ (seed * 101)); }

rt::Task<ssize_t> write_pattern(stream::Stream &s, uint64_t total, uint64_t seed) {
  std::vector<std::byte> buf(64 * 1024);
  uint64_t off = 0;
  while (off < total) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), total - off));
    for (size_t i = 0; i < n; ++i) buf[i] = std::byte(pattern(off + i, seed));
    const ssize_t w = co_await s.write(std::span<const std::byte>(buf.data(), n));
    if (w < 0) co_return w;
    off += n;
  }
  co_return static_cast<ssize_t>(off);
}

struct ReadResult {
  uint64_t bytes = 0;
  bool intact = true;
  ssize_t last = 0;  // 0 = clean end of stream, <0 = error
};

// Reads to end of stream (or error), checking every byte against the pattern.
rt::Task<void> read_pattern(stream::Stream &s, uint64_t seed, ReadResult &out) {
  std::vector<std::byte> buf(64 * 1024);
  for (;;) {
    const ssize_t n = co_await s.read(buf);
    if (n <= 0) {
      out.last = n;
      co_return;
    }
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[size_t(i)] != std::byte(pattern(out.bytes + uint64_t(i), seed))) out.intact = false;
    }
    out.bytes += uint64_t(n);
  }
}

rt::Task<void> echo(stream::Stream &s) {
  std::vector<std::byte> buf(64 * 1024);
  for (;;) {
    const ssize_t n = co_await s.read(buf);
    if (n <= 0) break;
    const ssize_t w = co_await s.write(std::span<const std::byte>(buf.data(), size_t(n)));
    if (w < 0) break;
  }
  const int r = co_await s.shutdown_write();
  (void)r;
}

// Server: accepts n connections and echoes each; keeps going until the listener stops.
rt::Task<void> echo_one(std::unique_ptr<stream::Stream> s) { co_await echo(*s); }

rt::Task<void> echo_server(QuicListener &l, int n, int &accepted) {
  rt::Scope conns;
  for (int i = 0; i < n; ++i) {
    auto a = co_await l.accept();
    if (!a) break;
    ++accepted;
    conns.spawn(echo_one(std::move(a.value().first)));
  }
  const bool j = co_await conns.join();
  (void)j;
}

// Waits (bounded) until every QUIC socket core has wound down.
rt::Task<void> drain() {
  for (int i = 0; i < 400 && quic::live_endpoints() != 0; ++i) {
    const int r = co_await rt::sleep_for(5ms);
    (void)r;
  }
}

struct Fixture {
  rt::Reactor reactor;
  int baseline;
  Fixture() {
    certs();
    baseline = count_fds();
  }
  void finish() {
    rt::run_blocking(drain());
    CHECK(quic::live_endpoints() == 0);
    CHECK(count_fds() == baseline);
  }
};

rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> connect_to(const QuicListener &l, QuicClientConfig cfg) {
  co_return co_await quic::quic_connect(cfg, l.local());
}

// A listener on loopback with one connection accepted: the client's and the server's stream.
struct Connected {
  std::unique_ptr<QuicListener> listener;
  std::unique_ptr<stream::Stream> client, server;
};

rt::Task<Connected> connected_pair() {
  Connected c;
  auto lr = QuicListener::create(server_cfg(), loopback());
  REQUIRE(lr);
  c.listener = std::move(lr.value());
  auto cr = co_await connect_to(*c.listener, client_cfg());
  REQUIRE(cr);
  c.client = std::move(cr.value());
  auto ar = co_await c.listener->accept();
  REQUIRE(ar);
  c.server = std::move(ar.value().first);
  co_return c;
}

// Client: sends |total| bytes, half-closes, and collects everything the server sends back.
rt::Task<void> client_echo_roundtrip(stream::Stream &s, uint64_t total, uint64_t seed, ReadResult &back,
                                     ssize_t &wrote) {
  rt::Scope both;
  both.spawn(read_pattern(s, seed, back));
  wrote = co_await write_pattern(s, total, seed);
  const int r = co_await s.shutdown_write();
  (void)r;
  const bool j = co_await both.join();
  (void)j;
}

}  // namespace

TEST_CASE("handshake, then 32 MB client to server byte-exact", "[quic][transport]") {
  Fixture f;
  double mbps = 0;
  rt::run_blocking([](double &mbps) -> rt::Task<void> {
    constexpr uint64_t kTotal = 32ull * 1024 * 1024;
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    CHECK(l.local().port() != 0);

    auto cr = co_await connect_to(l, client_cfg());
    REQUIRE(cr);
    auto client = std::move(cr.value());
    CHECK(client->native_fd() == -1);
    auto ar = co_await l.accept();
    REQUIRE(ar);
    auto server = std::move(ar.value().first);
    CHECK(ar.value().second.ip() == "127.0.0.1");
    // One TLS 1.3 handshake inside QUIC: both ends export the same channel binding.
    REQUIRE(client->channel_binding());
    CHECK(client->channel_binding() == server->channel_binding());

    ReadResult got;
    rt::Scope sc;
    sc.spawn(read_pattern(*server, 7, got));
    const auto t0 = std::chrono::steady_clock::now();
    const ssize_t w = co_await write_pattern(*client, kTotal, 7);
    CHECK(w == ssize_t(kTotal));
    const int sr = co_await client->shutdown_write();
    CHECK(sr == 0);
    const bool j = co_await sc.join();
    (void)j;
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    mbps = double(kTotal) / (1024 * 1024) / secs;
    CHECK(got.bytes == kTotal);
    CHECK(got.intact);
    CHECK(got.last == 0);

    // The other direction still works after the client's FIN.
    const char msg[] = "done";
    const ssize_t w2 = co_await server->write(std::as_bytes(std::span(msg, 4)));
    CHECK(w2 == 4);
    std::byte buf[16];
    const ssize_t n = co_await client->read(buf);
    CHECK(n == 4);
    server->close();
    client->close();
    co_await l.stop();
  }(mbps));
  std::printf("quic: 32 MB one way over loopback: %.1f MB/s\n", mbps);
  f.finish();
}

// Loopback normally gets same-host datagrams (65000 bytes, one per send); with them off the
// connection takes the network-path code: ~1.4 KB packets sized by PMTUD, sent in GSO batches
// and received as GRO runs.
TEST_CASE("network-path packetization (PMTUD, GSO, GRO): 16 MB client to server byte-exact", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    constexpr uint64_t kTotal = 16ull * 1024 * 1024;
    auto scfg = server_cfg();
    scfg.same_host_datagrams = false;
    auto lr = QuicListener::create(scfg, loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    auto ccfg = client_cfg();
    ccfg.same_host_datagrams = false;
    auto cr = co_await connect_to(l, ccfg);
    REQUIRE(cr);
    auto client = std::move(cr.value());
    auto ar = co_await l.accept();
    REQUIRE(ar);
    auto server = std::move(ar.value().first);

    const uint64_t gro_before = quic::gro_runs();
    ReadResult got;
    rt::Scope sc;
    sc.spawn(read_pattern(*server, 3, got));
    const ssize_t w = co_await write_pattern(*client, kTotal, 3);
    CHECK(w == ssize_t(kTotal));
    const int sr = co_await client->shutdown_write();
    CHECK(sr == 0);
    const bool j = co_await sc.join();
    (void)j;
    CHECK(got.bytes == kTotal);
    CHECK(got.intact);
    // GSO batches cross loopback intact, so a GRO socket receives them as runs to split.
    int one = 1, probe = ::socket(AF_INET, SOCK_DGRAM, 0);
    if (::setsockopt(probe, IPPROTO_UDP, 104 /* UDP_GRO */, &one, sizeof one) == 0) CHECK(quic::gro_runs() > gro_before);
    ::close(probe);
    server->close();
    client->close();
    co_await l.stop();
  }());
  f.finish();
}

// The SSH session hands its sealed output over with write_owned(): the send queue keeps the
// buffer itself until it is acknowledged. Given buffers of every size, between plain writes,
// must arrive in order, and the buffers handed back must be emptied ones to fill again.
TEST_CASE("write_owned buffers mixed with write() arrive byte-exact; emptied buffers come back", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto p = co_await connected_pair();

    ReadResult got;
    rt::Scope sc;
    sc.spawn(read_pattern(*p.server, 5, got));
    const size_t sizes[] = {100, 300 * 1024, 20 * 1024, 1024 * 1024, 1, 70 * 1000};
    uint64_t off = 0;
    size_t taken = 0, handed_back = 0, reused = 0;
    stream::Bytes buf;
    for (int round = 0; round < 12; ++round) {
      for (size_t n : sizes) {
        const uint8_t *before = buf.data();
        const bool had = buf.capacity() > 0;
        buf.resize(n);  // what take_output() does: fill the buffer, maybe one handed back
        if (had && buf.data() == before) ++reused;
        for (size_t i = 0; i < n; ++i) buf[i] = pattern(off + i, 5);
        const uint8_t *filled = buf.data();
        const ssize_t w = co_await p.client->write_owned(buf);
        REQUIRE(w == ssize_t(n));
        off += n;
        CHECK(buf.empty());
        if (n >= 64 * 1024 && buf.data() != filled) ++taken;  // kept by the stream, not copied
        if (buf.capacity() > 0) ++handed_back;
        // and a plain write between given buffers
        std::byte small[333];
        for (size_t i = 0; i < sizeof small; ++i) small[i] = std::byte(pattern(off + i, 5));
        const ssize_t ws = co_await p.client->write(small);
        REQUIRE(ws == ssize_t(sizeof small));
        off += sizeof small;
      }
    }
    const int sr = co_await p.client->shutdown_write();
    CHECK(sr == 0);
    const bool j = co_await sc.join();
    (void)j;
    CHECK(got.bytes == off);
    CHECK(got.intact);
    CHECK(got.last == 0);
    CHECK(taken == 12 * 3);  // every big buffer (300 KiB, 1 MiB, 70 kB) was taken
    CHECK(handed_back > 0);  // acknowledged buffers were handed back
    CHECK(reused > 0);       // and filled again without moving
    p.client->close();
    p.server->close();
    co_await p.listener->stop();
  }());
  f.finish();
}

// Like TCP_NOTSENT_LOWAT: against a peer that reads nothing, the stream's flow-control window
// (8 MiB) goes out and then write() stops taking bytes once 256 KiB wait unsent. (It used to
// take another 8 MiB.) Everything still arrives intact once the peer reads.
TEST_CASE("write() holds at most 256 KiB unsent once the peer's window is full", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    constexpr uint64_t kWindow = 8ull * 1024 * 1024, kUnsent = 256 * 1024, kChunk = 64 * 1024;
    constexpr uint64_t kTotal = 12ull * 1024 * 1024;
    auto p = co_await connected_pair();

    uint64_t accepted = 0;
    rt::Scope writer;
    writer.spawn([](stream::Stream &s, uint64_t &accepted) -> rt::Task<void> {
      std::vector<std::byte> buf(kChunk);
      while (accepted < kTotal) {
        for (size_t i = 0; i < buf.size(); ++i) buf[i] = std::byte(pattern(accepted + i, 9));
        const ssize_t w = co_await s.write(buf);
        if (w <= 0) co_return;
        accepted += uint64_t(w);
      }
      const int r = co_await s.shutdown_write();
      (void)r;
    }(*p.client, accepted));
    // Wait until the writer stalls: no progress for 300 ms (at most 10 s).
    uint64_t seen = ~0ull;
    for (int quiet = 0, i = 0; quiet < 6 && i < 200; ++i) {
      const int r = co_await rt::sleep_for(50ms);
      (void)r;
      quiet = accepted == seen ? quiet + 1 : 0;
      seen = accepted;
    }
    CHECK(accepted >= kWindow);                      // the window went out
    CHECK(accepted <= kWindow + kUnsent + kChunk);   // and little more was taken
    ReadResult got;
    co_await read_pattern(*p.server, 9, got);
    const bool j = co_await writer.join();
    (void)j;
    CHECK(got.bytes == kTotal);
    CHECK(got.intact);
    CHECK(got.last == 0);
    p.client->close();
    p.server->close();
    co_await p.listener->stop();
  }());
  f.finish();
}

TEST_CASE("4 MB both ways through stream::pump to an echo on the server", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server_side;
    stream::PumpStats stats;
    auto cr = co_await connect_to(l, client_cfg());
    REQUIRE(cr);
    auto client = std::move(cr.value());
    auto ar = co_await l.accept();
    REQUIRE(ar);
    auto server = std::move(ar.value().first);

    // server QUIC stream <-pump-> socketpair end A; end B echoes.
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    stream::FdStream a{rt::UniqueFd(sv[0])}, b{rt::UniqueFd(sv[1])};
    server_side.spawn([](stream::Stream &x, stream::Stream &y, stream::PumpStats &st) -> rt::Task<void> {
      st = co_await stream::pump(x, y);
    }(*server, a, stats));
    server_side.spawn(echo(b));

    constexpr uint64_t kTotal = 4ull * 1024 * 1024;
    ReadResult back;
    ssize_t wrote = 0;
    co_await client_echo_roundtrip(*client, kTotal, 3, back, wrote);
    CHECK(wrote == ssize_t(kTotal));
    CHECK(back.bytes == kTotal);
    CHECK(back.intact);
    CHECK(back.last == 0);
    const bool j = co_await server_side.join();
    (void)j;
    CHECK(stats.error == 0);
    CHECK(stats.a_to_b == kTotal);
    CHECK(stats.b_to_a == kTotal);
    client->close();
    server->close();
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("16 parallel connections each move 1 MB intact", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    constexpr int kConns = 16;
    constexpr uint64_t kTotal = 1024 * 1024;
    int accepted = 0;
    rt::Scope server;
    server.spawn(echo_server(l, kConns, accepted));

    struct One {
      ReadResult back;
      ssize_t wrote = 0;
      bool connected = false;
    };
    std::vector<One> results(kConns);
    rt::Scope clients;
    for (int i = 0; i < kConns; ++i) {
      clients.spawn([](const QuicListener &l, uint64_t seed, One &out) -> rt::Task<void> {
        auto cr = co_await connect_to(l, client_cfg());
        if (!cr) co_return;
        out.connected = true;
        auto s = std::move(cr.value());
        co_await client_echo_roundtrip(*s, kTotal, seed, out.back, out.wrote);
      }(l, uint64_t(i + 100), results[size_t(i)]));
    }
    const bool j = co_await clients.join();
    (void)j;
    for (const auto &r : results) {
      CHECK(r.connected);
      CHECK(r.wrote == ssize_t(kTotal));
      CHECK(r.back.bytes == kTotal);
      CHECK(r.back.intact);
      CHECK(r.back.last == 0);
    }
    const bool j2 = co_await server.join();
    (void)j2;
    CHECK(accepted == kConns);
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("certificate checks: no CA fails, the server cert as CA succeeds, a wrong name fails",
          "[quic][transport][tls]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server;
    int accepted = 0;
    server.spawn(echo_server(l, 2, accepted));

    QuicClientConfig system_store = client_cfg();
    system_store.ca_file.clear();  // the self-signed cert is in no system store
    auto bad = co_await connect_to(l, system_store);
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == rt::kErrProtocol);
    CHECK(bad.error().what.find("certificate verify failed") != std::string::npos);

    QuicClientConfig wrong_name = client_cfg();
    wrong_name.server_name = "example.org";
    auto bad2 = co_await connect_to(l, wrong_name);
    REQUIRE_FALSE(bad2);
    CHECK(bad2.error().code == rt::kErrProtocol);

    auto good = co_await connect_to(l, client_cfg());
    REQUIRE(good);
    ReadResult back;
    ssize_t wrote = 0;
    co_await client_echo_roundtrip(*good.value(), 1000, 1, back, wrote);
    CHECK(back.bytes == 1000);
    CHECK(back.intact);

    QuicClientConfig by_ip = client_cfg();
    by_ip.server_name.clear();  // 127.0.0.1 is in the certificate's IP SAN
    auto good2 = co_await connect_to(l, by_ip);
    REQUIRE(good2);
    co_await client_echo_roundtrip(*good2.value(), 10, 1, back, wrote);
    good.value()->close();
    good2.value()->close();
    const bool j = co_await server.join();
    (void)j;
    CHECK(accepted == 2);  // the refused handshakes never became connections
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("insecure client accepts any certificate", "[quic][transport][tls]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server;
    int accepted = 0;
    server.spawn(echo_server(l, 1, accepted));
    QuicClientConfig cfg;
    cfg.insecure = true;
    cfg.server_name = "not-the-name.invalid";
    auto c = co_await connect_to(l, cfg);
    REQUIRE(c);
    ReadResult back;
    ssize_t wrote = 0;
    co_await client_echo_roundtrip(*c.value(), 5000, 9, back, wrote);
    CHECK(back.bytes == 5000);
    CHECK(back.intact);
    c.value()->close();
    const bool j = co_await server.join();
    (void)j;
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("junk datagrams to the listener do not disturb an active connection", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server;
    int accepted = 0;
    server.spawn(echo_server(l, 1, accepted));
    auto cr = co_await connect_to(l, client_cfg());
    REQUIRE(cr);
    auto client = std::move(cr.value());

    rt::UniqueFd junk(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    REQUIRE(junk);
    const net::Endpoint to = l.local();
    std::mt19937 rng(1234);
    auto send = [&](const std::vector<uint8_t> &d) {
      (void)::sendto(junk.get(), d.data(), d.size(), 0, to.sa(), to.len);
    };
    ReadResult back;
    ssize_t wrote = 0;
    rt::Scope traffic;
    traffic.spawn(client_echo_roundtrip(*client, 2 * 1024 * 1024, 5, back, wrote));
    for (int round = 0; round < 50; ++round) {
      send({});  // empty
      std::vector<uint8_t> d(1 + rng() % 1400);
      for (auto &b : d) b = uint8_t(rng());
      send(d);  // random bytes
      // Truncated long headers: version 1, claimed CID lengths running past the end.
      std::vector<uint8_t> t = {0xc3, 0x00, 0x00, 0x00, 0x01, 0x14};
      t.resize(1 + rng() % t.size());
      send(t);
      // A well-formed-looking Initial (1200 bytes) whose payload is garbage.
      std::vector<uint8_t> ini(1200);
      for (auto &b : ini) b = uint8_t(rng());
      ini[0] = 0xc3;
      ini[1] = 0, ini[2] = 0, ini[3] = 0, ini[4] = 1;
      ini[5] = 8;   // dcid len
      ini[14] = 8;  // scid len
      ini[23] = 0;  // token len
      ini[24] = 0x44, ini[25] = 0x80;  // length 1152
      send(ini);
      // Short header with a random 16-byte CID.
      std::vector<uint8_t> sh(60);
      for (auto &b : sh) b = uint8_t(rng());
      sh[0] = 0x40;
      send(sh);
      const int r = co_await rt::sleep_for(1ms);
      (void)r;
    }
    const bool j = co_await traffic.join();
    (void)j;
    CHECK(wrote == 2 * 1024 * 1024);
    CHECK(back.bytes == 2 * 1024 * 1024);
    CHECK(back.intact);
    CHECK(back.last == 0);
    client->close();
    const bool j2 = co_await server.join();
    (void)j2;
    CHECK(accepted == 1);
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("listener stop: the client's read fails promptly, the server stream reads an error",
          "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    auto cr = co_await connect_to(l, client_cfg());  // idle timeout stays at 60 s
    REQUIRE(cr);
    auto client = std::move(cr.value());
    auto ar = co_await l.accept();
    REQUIRE(ar);
    auto server = std::move(ar.value().first);

    const auto t0 = std::chrono::steady_clock::now();
    co_await l.stop();
    std::byte buf[64];
    const ssize_t n = co_await client->read(buf);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(n < 0);
    CHECK(n == -ECONNRESET);
    CHECK(secs < 2.0);
    const ssize_t m = co_await server->read(buf);
    CHECK(m == -ECONNABORTED);
    auto again = co_await l.accept();
    CHECK_FALSE(again);
    const ssize_t w = co_await client->write(std::as_bytes(std::span("x", 1)));
    CHECK(w < 0);
  }());
  f.finish();
}

TEST_CASE("half-close: client FIN while the server keeps sending", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto p = co_await connected_pair();

    // Client sends a little and closes its side at once.
    const ssize_t w = co_await write_pattern(*p.client, 1000, 11);
    CHECK(w == 1000);
    const int sr = co_await p.client->shutdown_write();
    CHECK(sr == 0);
    const ssize_t w_after = co_await p.client->write(std::as_bytes(std::span("x", 1)));
    CHECK(w_after == -EPIPE);
    ReadResult at_server;
    co_await read_pattern(*p.server, 11, at_server);
    CHECK(at_server.bytes == 1000);
    CHECK(at_server.last == 0);

    // The server's direction is still open: 3 MB, then its own FIN.
    ReadResult at_client;
    rt::Scope sc;
    sc.spawn(read_pattern(*p.client, 12, at_client));
    const ssize_t w2 = co_await write_pattern(*p.server, 3 * 1024 * 1024, 12);
    CHECK(w2 == 3 * 1024 * 1024);
    const int sr2 = co_await p.server->shutdown_write();
    CHECK(sr2 == 0);
    const bool j = co_await sc.join();
    (void)j;
    CHECK(at_client.bytes == 3 * 1024 * 1024);
    CHECK(at_client.intact);
    CHECK(at_client.last == 0);
    p.server->close();
    p.client->close();
    co_await p.listener->stop();
  }());
  f.finish();
}

TEST_CASE("idle timeout: a silent connection's read returns -ETIMEDOUT", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    QuicServerConfig scfg = server_cfg();
    scfg.idle_timeout = 300ms;
    scfg.keepalive = 0s;
    auto lr = QuicListener::create(scfg, loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    QuicClientConfig ccfg = client_cfg();
    ccfg.idle_timeout = 300ms;
    ccfg.keepalive = 0s;
    auto cr = co_await connect_to(l, ccfg);
    REQUIRE(cr);
    auto client = std::move(cr.value());
    auto ar = co_await l.accept();
    REQUIRE(ar);
    const auto t0 = std::chrono::steady_clock::now();
    std::byte buf[16];
    const ssize_t n = co_await client->read(buf);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    CHECK(n == -ETIMEDOUT);
    CHECK(secs > 0.15);
    CHECK(secs < 3.0);
    const ssize_t m = co_await ar.value().first->read(buf);
    CHECK(m == -ETIMEDOUT);
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("keep-alive holds an idle connection open past the idle timeout", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    QuicServerConfig scfg = server_cfg();
    scfg.idle_timeout = 400ms;
    scfg.keepalive = 0s;
    auto lr = QuicListener::create(scfg, loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server;
    int accepted = 0;
    server.spawn(echo_server(l, 1, accepted));
    QuicClientConfig ccfg = client_cfg();
    ccfg.idle_timeout = 400ms;
    ccfg.keepalive = 100ms;
    auto cr = co_await connect_to(l, ccfg);
    REQUIRE(cr);
    const int r = co_await rt::sleep_for(1200ms);
    (void)r;
    ReadResult back;
    ssize_t wrote = 0;
    co_await client_echo_roundtrip(*cr.value(), 100000, 4, back, wrote);
    CHECK(back.bytes == 100000);
    CHECK(back.intact);
    CHECK(back.last == 0);
    cr.value()->close();
    const bool j = co_await server.join();
    (void)j;
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("max_connections bounds the server; a handshake that cannot finish times out", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    QuicServerConfig scfg = server_cfg();
    scfg.max_connections = 1;
    auto lr = QuicListener::create(scfg, loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    QuicClientConfig ccfg = client_cfg();
    ccfg.handshake_timeout = 500ms;
    auto first = co_await connect_to(l, ccfg);
    REQUIRE(first);
    auto a1 = co_await l.accept();
    REQUIRE(a1);
    auto second = co_await connect_to(l, ccfg);
    REQUIRE_FALSE(second);
    CHECK(second.error().code == ETIMEDOUT);
    // Closing the first frees the slot.
    first.value()->close();
    a1.value().first->close();
    const int r = co_await rt::sleep_for(50ms);
    (void)r;
    auto third = co_await connect_to(l, ccfg);
    REQUIRE(third);
    third.value()->close();
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("close() delivers what was written before CONNECTION_CLOSE", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto p = co_await connected_pair();
    constexpr uint64_t kTotal = 2 * 1024 * 1024;
    const ssize_t w = co_await write_pattern(*p.client, kTotal, 21);
    CHECK(w == ssize_t(kTotal));
    p.client.reset();  // destroyed with data in flight
    ReadResult got;
    co_await read_pattern(*p.server, 21, got);
    CHECK(got.bytes == kTotal);
    CHECK(got.intact);
    CHECK(got.last == -ECONNRESET);  // no FIN: the connection was closed after the data
    co_await p.listener->stop();
  }());
  f.finish();
}

TEST_CASE("connect to a port nobody serves fails within the handshake timeout", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    // Reserve a UDP port, then free it, so nothing listens there.
    uint16_t port;
    {
      rt::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      const net::Endpoint any = loopback();
      REQUIRE(::bind(s.get(), any.sa(), any.len) == 0);
      port = net::Endpoint::of_socket_local(s.get()).port();
    }
    QuicClientConfig ccfg = client_cfg();
    ccfg.handshake_timeout = 400ms;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await quic::quic_connect(ccfg, loopback(port));
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE_FALSE(r);
    CHECK(r.error().code == ETIMEDOUT);
    CHECK(secs < 2.0);
  }());
  f.finish();
}

TEST_CASE("listener setup errors are reported, not thrown", "[quic][transport]") {
  Fixture f;
  QuicServerConfig bad = server_cfg();
  bad.cert_file = "/nonexistent/cert.pem";
  auto r = QuicListener::create(bad, loopback());
  REQUIRE_FALSE(r);
  CHECK(r.error().what.find("/nonexistent/cert.pem") != std::string::npos);
  QuicServerConfig swapped = server_cfg();
  swapped.key_file = certs().cert;
  CHECK_FALSE(QuicListener::create(swapped, loopback()));
  f.finish();
}

namespace {

// One datagram to |to| from a fresh socket; the first reply within |wait|, or nothing.
rt::Task<std::vector<uint8_t>> probe(const net::Endpoint &to, const std::vector<uint8_t> &d,
                                     std::chrono::milliseconds wait = 1000ms) {
  rt::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  REQUIRE(s);
  REQUIRE(::sendto(s.get(), d.data(), d.size(), 0, to.sa(), to.len) == ssize_t(d.size()));
  std::vector<uint8_t> buf(2048);
  const int n = co_await rt::recv(s.get(), std::as_writable_bytes(std::span(buf))).with_timeout(wait);
  buf.resize(n > 0 ? size_t(n) : 0);
  co_return buf;
}

// A long-header packet of |size| bytes in QUIC version |version| with 8-byte CIDs.
std::vector<uint8_t> long_header(uint32_t version, size_t size) {
  std::vector<uint8_t> p(size, 0x5a);
  p[0] = 0xc0;
  for (int i = 0; i < 4; ++i) p[1 + i] = uint8_t(version >> (24 - 8 * i));
  p[5] = 8;
  for (int i = 0; i < 8; ++i) p[6 + i] = uint8_t(0xd0 + i);  // dcid
  p[14] = 8;
  for (int i = 0; i < 8; ++i) p[15 + i] = uint8_t(0xe0 + i);  // scid
  return p;
}

std::vector<uint8_t> short_header(uint8_t cid_byte, size_t size) {
  std::vector<uint8_t> p(size, 0x33);
  p[0] = 0x41;
  for (int i = 1; i <= 16; ++i) p[size_t(i)] = cid_byte;
  return p;
}

}  // namespace

TEST_CASE("version negotiation: an Initial in an unknown version gets a VN offering v1", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    auto vn = co_await probe(l.local(), long_header(0x1a2a3a4a, 1200));
    REQUIRE(vn.size() >= 7 + 16 + 4);
    CHECK((vn[0] & 0x80) != 0);
    CHECK((vn[1] | vn[2] | vn[3] | vn[4]) == 0);  // version 0 = Version Negotiation
    REQUIRE(vn[5] == 8);                          // DCID echoes our SCID ...
    CHECK(std::equal(vn.begin() + 6, vn.begin() + 14, long_header(0x1a2a3a4a, 1200).begin() + 15));
    REQUIRE(vn[14] == 8);  // ... and SCID our DCID (RFC 9000 §17.2.1)
    CHECK(std::equal(vn.begin() + 15, vn.begin() + 23, long_header(0x1a2a3a4a, 1200).begin() + 6));
    bool offers_v1 = false;
    for (size_t i = 23; i + 4 <= vn.size(); i += 4)
      offers_v1 |= vn[i] == 0 && vn[i + 1] == 0 && vn[i + 2] == 0 && vn[i + 3] == 1;
    CHECK(offers_v1);
    // Too small to start a connection: answering could amplify a spoofed source, so nothing.
    auto none = co_await probe(l.local(), long_header(0x1a2a3a4a, 200), 300ms);
    CHECK(none.empty());
    co_await l.stop();
  }());
  f.finish();
}

TEST_CASE("stateless reset: unknown short-header CIDs get a reset whose token survives a restart",
          "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto a = QuicListener::create(server_cfg(), loopback());
    auto b = QuicListener::create(server_cfg(), loopback());  // "the same server after a restart"
    REQUIRE(a);
    REQUIRE(b);
    auto ra = co_await probe(a.value()->local(), short_header(0x77, 100));
    auto rb = co_await probe(b.value()->local(), short_header(0x77, 100));
    REQUIRE(ra.size() >= 21);
    CHECK(ra.size() < 100);  // smaller than what it answers: two endpoints cannot loop
    CHECK((ra[0] & 0x80) == 0);
    CHECK((ra[0] & 0x40) != 0);  // looks like any short-header packet
    REQUIRE(rb.size() >= 21);
    // The token (last 16 bytes) depends only on the key and the CID.
    CHECK(std::equal(ra.end() - 16, ra.end(), rb.end() - 16));
    auto other_cid = co_await probe(a.value()->local(), short_header(0x78, 100));
    REQUIRE(other_cid.size() >= 21);
    CHECK_FALSE(std::equal(ra.end() - 16, ra.end(), other_cid.end() - 16));
    // A datagram too small to hide a token behind gets nothing (it could itself be a reset).
    auto tiny = co_await probe(a.value()->local(), short_header(0x77, 30), 300ms);
    CHECK(tiny.empty());
    co_await a.value()->stop();
    co_await b.value()->stop();
  }());
  f.finish();
}

TEST_CASE("stateless replies are rate-limited", "[quic][transport]") {
  Fixture f;
  rt::run_blocking([]() -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    const net::Endpoint to = lr.value()->local();
    rt::UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    REQUIRE(s);
    int rcv = 4 << 20;
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    for (int i = 0; i < 1000; ++i) {
      auto d = short_header(uint8_t(i), 80);
      (void)::sendto(s.get(), d.data(), d.size(), 0, to.sa(), to.len);
      if (i % 50 == 0) {
        const int r = co_await rt::sleep_for(1ms);  // let the listener read
        (void)r;
      }
    }
    int replies = 0;
    std::byte buf[256];
    for (;;) {
      const int n = co_await rt::recv(s.get(), buf).with_timeout(300ms);
      if (n <= 0) break;
      ++replies;
    }
    CHECK(replies > 0);
    CHECK(replies <= 200);  // 100 per second; the burst spans at most two seconds
    co_await lr.value()->stop();
  }());
  f.finish();
}

TEST_CASE("use_certificate: new handshakes get the new certificate, live connections go on", "[quic][transport]") {
  Fixture f;
  Certs renewed;  // another self-signed localhost certificate
  auto slurp = [](const std::string &path) {
    std::string out;
    if (FILE *fp = std::fopen(path.c_str(), "rb")) {
      char buf[4096];
      size_t n;
      while ((n = std::fread(buf, 1, sizeof buf, fp)) > 0) out.append(buf, n);
      std::fclose(fp);
    }
    return out;
  };
  const std::string chain = slurp(renewed.cert), key = slurp(renewed.key);
  rt::run_blocking([](const std::string &chain, const std::string &key, const std::string &renewed_ca) -> rt::Task<void> {
    auto lr = QuicListener::create(server_cfg(), loopback());
    REQUIRE(lr);
    auto &l = *lr.value();
    rt::Scope server;
    int accepted = 0;
    server.spawn(echo_server(l, 3, accepted));
    QuicClientConfig trusts_new = client_cfg();
    trusts_new.ca_file = renewed_ca;
    auto before = co_await connect_to(l, trusts_new);
    CHECK_FALSE(before);  // still the old certificate
    auto old_conn = co_await connect_to(l, client_cfg());
    REQUIRE(old_conn);

    CHECK_FALSE(l.use_certificate(chain, "not a key"));
    REQUIRE(l.use_certificate(chain, key));
    auto after = co_await connect_to(l, trusts_new);
    CHECK(after);
    auto stale = co_await connect_to(l, client_cfg());
    CHECK_FALSE(stale);  // the old certificate is gone for new handshakes

    // The connection made before the swap still carries data.
    ReadResult back;
    ssize_t wrote = 0;
    co_await client_echo_roundtrip(*old_conn.value(), 256 * 1024, 9, back, wrote);
    CHECK(back.bytes == 256 * 1024);
    CHECK(back.intact);
    old_conn.value()->close();
    if (after) after.value()->close();
    co_await l.stop();
    const bool j = co_await server.join();
    (void)j;
  }(chain, key, renewed.cert));
  f.finish();
}
