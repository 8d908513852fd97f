// Our own SSH layers (ssh/packet, kex, packet_transport, userauth) against a stock OpenSSH sshd:
// version exchange, curve25519-sha256 with strict kex, every cipher we offer, sshd-initiated
// re-keys (RekeyLimit) and our own, Ed25519 publickey auth, and a direct-tcpip channel carrying
// 4 MiB to an echo server and back byte-exact with flow control both ways.
// Needs root and /usr/sbin/sshd; otherwise exits 77 (skipped). Drives the sans-I/O transport
// with plain non-blocking sockets and poll(): the protocol is what is under test here.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <openssl/curve25519.h>

#include "ssh/kex.hpp"
#include "ssh/keys.hpp"
#include "ssh/packet_transport.hpp"
#include "ssh/userauth.hpp"

using namespace alk::ssh;

namespace {

int failures = 0;
#define EXPECT(cond, what)                                                     \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, what);      \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int listen_loopback(uint16_t* port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 8) != 0) return -1;
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

uint16_t free_port() {
  uint16_t p = 0;
  int fd = listen_loopback(&p);
  ::close(fd);
  return p;
}

int dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// Echoes every connection it accepts until EOF, then half-closes.
struct EchoServer {
  int lfd = -1;
  uint16_t port = 0;
  std::thread th;
  EchoServer() {
    lfd = listen_loopback(&port);
    th = std::thread([this] {
      while (true) {
        int c = ::accept(lfd, nullptr, nullptr);
        if (c < 0) return;
        std::thread([c] {
          std::vector<char> buf(65536);
          while (true) {
            ssize_t n = ::recv(c, buf.data(), buf.size(), 0);
            if (n <= 0) break;
            for (ssize_t off = 0; off < n;) {
              ssize_t w = ::send(c, buf.data() + off, size_t(n - off), MSG_NOSIGNAL);
              if (w <= 0) break;
              off += w;
            }
          }
          ::shutdown(c, SHUT_WR);
          ::close(c);
        }).detach();
      }
    });
  }
  ~EchoServer() {
    ::shutdown(lfd, SHUT_RDWR);
    ::close(lfd);
    th.join();
  }
};

struct Sshd {
  std::string dir;
  uint16_t port = 0;
  pid_t pid = -1;
  std::vector<uint8_t> host_blob;
  Ed25519PrivateKey user;

  explicit Sshd(const std::string& d) : dir(d) {
    if (std::system(("ssh-keygen -q -t ed25519 -N '' -f " + dir + "/host && ssh-keygen -q -t ed25519 -N '' -f " +
                     dir + "/user && cp " + dir + "/user.pub " + dir + "/authorized_keys")
                        .c_str()) != 0)
      throw std::runtime_error("ssh-keygen failed");
    host_blob = parse_public_key_line(slurp(dir + "/host.pub"))->blob;
    std::string err;
    user = *parse_openssh_ed25519_private(slurp(dir + "/user"), &err);
    port = free_port();
    std::ofstream(dir + "/sshd_config") << "Port " << port << "\nListenAddress 127.0.0.1\nHostKey " << dir
                                        << "/host\nAuthorizedKeysFile " << dir
                                        << "/authorized_keys\nPermitRootLogin prohibit-password\n"
                                           "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                                           "StrictModes no\nAllowTcpForwarding yes\nPidFile none\nLogLevel VERBOSE\n"
                                           // sshd starts a re-key every 1 MiB: several per run.
                                           "RekeyLimit 1M\n"
                                           "Ciphers aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
                                           "chacha20-poly1305@openssh.com,aes128-ctr\n";
    ::mkdir("/run/sshd", 0755);
    pid = fork();
    if (pid == 0) {
      // sshd must not outlive a test that aborts (sanitizer report), nor hold its stdout open.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      int devnull = ::open("/dev/null", O_RDWR);
      dup2(devnull, 0);
      dup2(devnull, 1);
      dup2(devnull, 2);
      execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-f", (dir + "/sshd_config").c_str(), "-E", (dir + "/sshd.log").c_str(),
            nullptr);
      _exit(127);
    }
    for (int i = 0; i < 200; ++i) {
      int fd = dial(port);
      if (fd >= 0) {
        ::close(fd);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    throw std::runtime_error("sshd did not start: " + slurp(dir + "/sshd.log"));
  }
  ~Sshd() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

// A client session over a non-blocking socket, pumped with poll().
struct Session {
  int fd = -1;
  PacketTransport t;
  std::string where;

  Session(uint16_t port, TransportConfig cfg) : t(std::move(cfg)) {
    fd = dial(port);
    if (fd < 0) throw std::runtime_error("cannot connect to sshd");
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    t.start();
  }
  ~Session() { ::close(fd); }

  // One poll round: write what we can, read what arrived. False on EOF/error/timeout.
  bool turn(int timeout_ms = 10000) {
    pollfd p{fd, short(POLLIN | (t.output().empty() ? 0 : POLLOUT)), 0};
    if (::poll(&p, 1, timeout_ms) <= 0) {
      where = "timeout";
      return false;
    }
    if (p.revents & POLLOUT) {
      auto out = t.output();
      ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
      if (n > 0) t.consume_output(size_t(n));
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      auto space = t.input_space();
      ssize_t n = ::recv(fd, space.data(), space.size(), 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        where = "connection closed";
        return false;
      }
      if (n > 0) t.commit_input(size_t(n));
    }
    return true;
  }

  // Next payload of a type we care about; GLOBAL_REQUESTs (OpenSSH's hostkeys-00) are refused.
  std::vector<uint8_t> next() {
    while (true) {
      if (auto p = t.next_payload()) {
        std::vector<uint8_t> v(p->begin(), p->end());
        if (v[0] == msg::kGlobalRequest) {
          WireReader r(std::span<const uint8_t>(v).subspan(1));
          std::string name;
          r.string(name);
          if (r.remaining() > 0 && v[1 + r.offset()] != 0) t.send(std::vector<uint8_t>{msg::kRequestFailure});
          continue;
        }
        if (v[0] == msg::kUserauthBanner) continue;
        return v;
      }
      if (t.failed()) throw std::runtime_error("transport: " + t.error());
      if (!turn()) throw std::runtime_error("sshd: " + where + "; transport: " + t.error());
    }
  }
};

void put_u32(std::vector<uint8_t>& v, uint32_t x) { wire_put_u32(v, x); }

void run(const Sshd& sshd, uint16_t echo_port, const std::string& cipher, uint64_t our_rekey_bytes) {
  std::printf("-- %s (our re-key every %llu bytes)\n", cipher.c_str(), (unsigned long long)our_rekey_bytes);
  TransportConfig cfg;
  cfg.role = Role::Client;
  cfg.version = "SSH-2.0-alknet_enginetest";
  cfg.ciphers = {cipher};
  cfg.rekey_bytes = our_rekey_bytes;
  std::vector<uint8_t> expected_host = sshd.host_blob;
  cfg.accept_host_key = [expected_host](std::span<const uint8_t> blob) {
    return std::vector<uint8_t>(blob.begin(), blob.end()) == expected_host;
  };
  Session s(sshd.port, cfg);

  std::vector<uint8_t> req{msg::kServiceRequest};
  wire_put_string(req, std::string_view("ssh-userauth"));
  s.t.send(req);
  auto a = s.next();
  EXPECT(a[0] == msg::kServiceAccept, "service accept");
  EXPECT(s.t.negotiated().strict, "strict kex with OpenSSH");
  EXPECT(s.t.negotiated().c2s == cipher_from_name(cipher), "cipher chosen");
  EXPECT(s.t.peer_version().starts_with("SSH-2.0-OpenSSH_"), "peer version");

  // A wrong key first: refused, the session goes on.
  Ed25519PrivateKey stranger;
  {
    uint8_t pub[32];
    ED25519_keypair(pub, stranger.secret.data());
    wire_put_string(stranger.public_blob, std::string_view("ssh-ed25519"));
    wire_put_string(stranger.public_blob, std::span<const uint8_t>(pub, 32));
  }
  s.t.send(userauth_publickey_request(s.t.session_id(), "root", "ssh-ed25519", stranger.public_blob, stranger.secret));
  auto f = s.next();
  EXPECT(f[0] == msg::kUserauthFailure, "unknown key refused");
  s.t.send(userauth_publickey_request(s.t.session_id(), "root", "ssh-ed25519", sshd.user.public_blob,
                                      sshd.user.secret));
  auto ok = s.next();
  EXPECT(ok[0] == msg::kUserauthSuccess, "publickey auth accepted");
  if (ok[0] != msg::kUserauthSuccess) return;

  const uint32_t our_window = 2 * 1024 * 1024, our_max = 32768;
  std::vector<uint8_t> open{msg::kChannelOpen};
  wire_put_string(open, std::string_view("direct-tcpip"));
  put_u32(open, 7);
  put_u32(open, our_window);
  put_u32(open, our_max);
  wire_put_string(open, std::string_view("127.0.0.1"));
  put_u32(open, echo_port);
  wire_put_string(open, std::string_view("127.0.0.1"));
  put_u32(open, 40000);
  s.t.send(open);
  auto conf = s.next();
  EXPECT(conf[0] == msg::kChannelOpenConfirmation, "channel open confirmed");
  if (conf[0] != msg::kChannelOpenConfirmation) return;
  WireReader cr(std::span<const uint8_t>(conf).subspan(1));
  uint32_t recipient = 0, remote_id = 0, remote_window = 0, remote_max = 0;
  cr.u32(recipient);
  cr.u32(remote_id);
  cr.u32(remote_window);
  cr.u32(remote_max);
  EXPECT(recipient == 7, "confirmation names our channel");

  const size_t total = 4 * 1024 * 1024;
  std::vector<uint8_t> data(total);
  for (size_t i = 0; i < total; ++i) data[i] = uint8_t((i * 131) ^ (i >> 9));
  std::vector<uint8_t> got;
  size_t sent = 0, unacked = 0;
  bool eof_sent = false, eof_seen = false, close_seen = false;
  auto started = std::chrono::steady_clock::now();
  while (!close_seen) {
    // Queue data while the peer's window allows and our output is not piling up.
    while (sent < total && remote_window > 0 && s.t.output().size() < 512 * 1024) {
      size_t n = std::min({total - sent, size_t(remote_window), size_t(remote_max), size_t(32768)});
      auto area = s.t.begin_payload(9 + n);
      area[0] = msg::kChannelData;
      area[1] = uint8_t(remote_id >> 24);
      area[2] = uint8_t(remote_id >> 16);
      area[3] = uint8_t(remote_id >> 8);
      area[4] = uint8_t(remote_id);
      area[5] = uint8_t(n >> 24);
      area[6] = uint8_t(n >> 16);
      area[7] = uint8_t(n >> 8);
      area[8] = uint8_t(n);
      std::memcpy(area.data() + 9, data.data() + sent, n);
      s.t.finish_payload();
      sent += n;
      remote_window -= uint32_t(n);
    }
    if (sent == total && !eof_sent) {
      std::vector<uint8_t> eof{msg::kChannelEof};
      put_u32(eof, remote_id);
      s.t.send(eof);
      eof_sent = true;
    }
    std::optional<std::span<const uint8_t>> p;
    while ((p = s.t.next_payload())) {
      const uint8_t type = (*p)[0];
      WireReader r(p->subspan(1));
      uint32_t ch = 0;
      r.u32(ch);
      if (type == msg::kChannelData) {
        std::span<const uint8_t> d;
        r.bytes(d);
        got.insert(got.end(), d.begin(), d.end());
        unacked += d.size();
        if (unacked >= our_window / 2) {
          std::vector<uint8_t> adj{msg::kChannelWindowAdjust};
          put_u32(adj, remote_id);
          put_u32(adj, uint32_t(unacked));
          s.t.send(adj);
          unacked = 0;
        }
      } else if (type == msg::kChannelWindowAdjust) {
        uint32_t add = 0;
        r.u32(add);
        remote_window += add;
      } else if (type == msg::kChannelEof) {
        eof_seen = true;
      } else if (type == msg::kChannelClose) {
        close_seen = true;
        std::vector<uint8_t> c{msg::kChannelClose};
        put_u32(c, remote_id);
        s.t.send(c);
      } else if (type == msg::kGlobalRequest) {
        std::vector<uint8_t> no{msg::kRequestFailure};
        s.t.send(no);
      }
    }
    if (s.t.failed()) {
      EXPECT(false, ("transport failed: " + s.t.error()).c_str());
      return;
    }
    if (!close_seen && !s.turn()) {
      EXPECT(false, ("socket: " + s.where).c_str());
      return;
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT(eof_seen, "EOF came back after ours (half-close)");
  EXPECT(got.size() == total, "all bytes echoed");
  EXPECT(got == data, "echo is byte-exact");
  EXPECT(s.t.key_exchanges() >= 3, "re-keys happened mid-stream");
  std::printf("   %zu bytes each way in %.2f s, %llu key exchanges, cipher %s\n", total, secs,
              (unsigned long long)s.t.key_exchanges(), std::string(cipher_name(s.t.negotiated().c2s)).c_str());
  s.t.disconnect(11, "bye");
  while (!s.t.output().empty() && s.turn(2000)) {
  }
}

}  // namespace

int main() {
  if (geteuid() != 0 || access("/usr/sbin/sshd", X_OK) != 0) {
    std::puts("skipped: needs root and /usr/sbin/sshd");
    return 77;
  }
  signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/alknet-engine-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  try {
    Sshd sshd(dir);
    EchoServer echo;
    run(sshd, echo.port, "aes128-gcm@openssh.com", uint64_t{1} << 30);
    run(sshd, echo.port, "aes256-gcm@openssh.com", uint64_t{1} << 30);
    // Our side starts re-keys too (every 700 KB), interleaved with sshd's own.
    run(sshd, echo.port, "chacha20-poly1305@openssh.com", 700 * 1000);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: %s\n", e.what());
    ++failures;
  }
  std::system(("rm -rf " + dir).c_str());
  std::printf("%s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
