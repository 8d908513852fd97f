// bench/loadgen.cpp: the latency side of bench/run.py, in C++ so the measuring client and the
// HTTP server cost microseconds and no GIL, and the connect+GET numbers are the tunnels'.
//
//   loadgen http PORT
//       HTTP/1.x responder on 127.0.0.1:PORT: reads each request to the blank line, answers with
//       kResponse, closes. One epoll loop, non-blocking sockets; runs until killed.
//   loadgen socks SOCKS_PORT HTTP_PORT N [ROUNDS]
//       ROUNDS times (default 1): opens N connections at once to the SOCKS5 proxy on
//       127.0.0.1:SOCKS_PORT; each does greeting (no auth), waits, CONNECT localhost:HTTP_PORT
//       (ATYP domain, resolved by the far side), waits for REP=0, sends a small GET, reads to EOF
//       and checks the body. Latency: from connect() to EOF. Every connection gives up after
//       10 s. Prints one JSON line {"n":N,"rounds":R,"ok":..,"failed":..,"lat_ms":[...]}
//       (lat_ms: the successful ones, in completion order); the first few failures go to stderr.
//
// Build: g++ -O2 -std=c++20 -o bench_loadgen bench/loadgen.cpp (bench/run.py does this).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// The answer to every request (the bytes the bench's Python responder used to send).
constexpr std::string_view kResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: close\r\n\r\nhello, bench\n";
constexpr std::string_view kBody = "hello, bench\n";
constexpr std::string_view kGet = "GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: bench\r\n\r\n";
constexpr std::string_view kHost = "localhost";
constexpr auto kConnTimeout = std::chrono::seconds(10);
constexpr size_t kMaxRead = 64 * 1024;  // a request or response larger than this is an error

[[noreturn]] void die(const char* what) {
    std::fprintf(stderr, "loadgen: %s: %s\n", what, std::strerror(errno));
    std::exit(2);
}

sockaddr_in loopback(int port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

void nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int parse_port(const char* s) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v <= 0 || v > 65535) {
        std::fprintf(stderr, "loadgen: bad port '%s'\n", s);
        std::exit(2);
    }
    return static_cast<int>(v);
}

long parse_count(const char* s) {
    char* end = nullptr;
    long v = std::strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v <= 0 || v > 1000000) {
        std::fprintf(stderr, "loadgen: bad count '%s'\n", s);
        std::exit(2);
    }
    return v;
}

// ───────────────────────────── http ─────────────────────────────

struct HttpConn {
    std::string in;
    size_t sent = 0;
    bool answering = false;
};

int run_http(int port) {
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr = loopback(port);
    if (bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) die("bind");
    if (listen(lfd, 4096) < 0) die("listen");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");

    std::vector<HttpConn> conns;  // indexed by fd
    auto close_conn = [&](int fd) {
        close(fd);  // also leaves the epoll set
        conns[fd] = HttpConn{};
    };
    // Sends what is left of the answer; true when the connection is done with (sent or broken).
    auto answer = [&](int fd) {
        HttpConn& c = conns[fd];
        while (c.sent < kResponse.size()) {
            ssize_t k = send(fd, kResponse.data() + c.sent, kResponse.size() - c.sent, MSG_NOSIGNAL);
            if (k > 0) {
                c.sent += static_cast<size_t>(k);
            } else if (k < 0 && errno == EINTR) {
                continue;
            } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                epoll_event w{};
                w.events = EPOLLOUT;
                w.data.fd = fd;
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &w);
                return false;
            } else {
                return true;
            }
        }
        return true;
    };

    std::vector<epoll_event> events(512);
    for (;;) {
        int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                for (;;) {
                    int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (c < 0) {
                        if (errno == EINTR || errno == ECONNABORTED) continue;
                        if (errno != EAGAIN && errno != EWOULDBLOCK)
                            std::fprintf(stderr, "loadgen http: accept: %s\n", std::strerror(errno));
                        break;
                    }
                    nodelay(c);
                    if (static_cast<size_t>(c) >= conns.size()) conns.resize(static_cast<size_t>(c) + 1);
                    conns[c] = HttpConn{};
                    epoll_event a{};
                    a.events = EPOLLIN;
                    a.data.fd = c;
                    if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &a) < 0) close_conn(c);
                }
                continue;
            }
            HttpConn& c = conns[fd];
            if (c.answering) {  // EPOLLOUT (or an error) on a half-sent answer
                if (answer(fd)) close_conn(fd);
                continue;
            }
            char buf[4096];
            ssize_t k = recv(fd, buf, sizeof buf, 0);
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
            if (k <= 0) {  // EOF or error before a whole request: nothing to answer
                close_conn(fd);
                continue;
            }
            size_t from = c.in.size() >= 3 ? c.in.size() - 3 : 0;
            c.in.append(buf, static_cast<size_t>(k));
            if (c.in.find("\r\n\r\n", from) == std::string::npos) {
                if (c.in.size() > kMaxRead) close_conn(fd);
                continue;
            }
            c.answering = true;
            if (answer(fd)) close_conn(fd);
        }
    }
}

// ───────────────────────────── socks ─────────────────────────────

enum class Step { Connecting, Greeting, Request, Response, Done };

struct SocksConn {
    int fd = -1;
    Step step = Step::Connecting;
    Clock::time_point start;
    std::string out;     // bytes still to send for the current step
    size_t out_off = 0;
    std::string in;      // bytes received in the current step
    bool want_out = false;  // registered for EPOLLOUT
};

struct Batch {
    int ep;
    std::vector<SocksConn> conns;
    std::vector<double> lat_ms;
    long failed = 0;
    int errors_shown = 0;
    std::string request;  // the SOCKS5 CONNECT, same for every connection
};

void finish(Batch& b, SocksConn& c, const char* err) {
    if (err == nullptr) {
        b.lat_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c.start).count());
    } else {
        ++b.failed;
        if (b.errors_shown++ < 5) std::fprintf(stderr, "loadgen socks: %s\n", err);
    }
    if (c.fd >= 0) close(c.fd);
    c.fd = -1;
    c.step = Step::Done;
}

void watch(Batch& b, SocksConn& c, bool out) {
    if (out == c.want_out) return;
    epoll_event ev{};
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0u);
    ev.data.ptr = &c;
    epoll_ctl(b.ep, EPOLL_CTL_MOD, c.fd, &ev);
    c.want_out = out;
}

// Queues bytes and sends what the socket takes now; false on a broken connection.
bool send_step(Batch& b, SocksConn& c, std::string_view bytes) {
    c.out.append(bytes);
    while (c.out_off < c.out.size()) {
        ssize_t k = send(c.fd, c.out.data() + c.out_off, c.out.size() - c.out_off, MSG_NOSIGNAL);
        if (k > 0) {
            c.out_off += static_cast<size_t>(k);
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            watch(b, c, true);
            return true;
        } else {
            return false;
        }
    }
    c.out.clear();
    c.out_off = 0;
    watch(b, c, false);
    return true;
}

// Length of the SOCKS5 reply in c.in once its address is known, else 0.
size_t socks_reply_len(const std::string& in) {
    if (in.size() < 5) return 0;
    switch (static_cast<unsigned char>(in[3])) {
        case 1: return 4 + 4 + 2;
        case 4: return 4 + 16 + 2;
        case 3: return 4 + 1 + static_cast<unsigned char>(in[4]) + 2;
        default: return 4;  // unknown ATYP: caught by the caller
    }
}

// Advances one connection after it became readable or writable.
void step(Batch& b, SocksConn& c, uint32_t events) {
    if (c.step == Step::Connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            std::string msg = std::string("connect to the SOCKS port: ") + std::strerror(err);
            return finish(b, c, msg.c_str());
        }
        if (!(events & (EPOLLOUT | EPOLLIN))) return;
        c.step = Step::Greeting;
        if (!send_step(b, c, std::string_view("\x05\x01\x00", 3))) return finish(b, c, "greeting: send failed");
        return;
    }
    if ((events & EPOLLOUT) && c.out_off < c.out.size()) {
        if (!send_step(b, c, {})) return finish(b, c, "send failed");
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;

    char buf[4096];
    for (;;) {
        ssize_t k = recv(c.fd, buf, sizeof buf, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            std::string msg = std::string("recv: ") + std::strerror(errno);
            return finish(b, c, msg.c_str());
        }
        if (k == 0) {
            if (c.step != Step::Response) return finish(b, c, "SOCKS5: connection closed early");
            bool good = c.in.size() >= kBody.size() && std::string_view(c.in).ends_with(kBody);
            return finish(b, c, good ? nullptr : "short HTTP response");
        }
        c.in.append(buf, static_cast<size_t>(k));
        if (c.in.size() > kMaxRead) return finish(b, c, "response too large");
        if (c.step == Step::Greeting && c.in.size() >= 2) {
            if (c.in[0] != 5 || c.in[1] != 0) return finish(b, c, "SOCKS5 method refused");
            if (c.in.size() > 2) return finish(b, c, "SOCKS5: unexpected bytes after the method reply");
            c.in.clear();
            c.step = Step::Request;
            if (!send_step(b, c, b.request)) return finish(b, c, "request: send failed");
        } else if (c.step == Step::Request && c.in.size() >= 4) {
            if (c.in[0] != 5) return finish(b, c, "SOCKS5: bad reply version");
            if (c.in[1] != 0) {
                std::string msg = "SOCKS5 reply " + std::to_string(static_cast<unsigned char>(c.in[1]));
                return finish(b, c, msg.c_str());
            }
            size_t need = socks_reply_len(c.in);
            if (need == 4) return finish(b, c, "SOCKS5: bad reply address type");
            if (need == 0 || c.in.size() < need) continue;
            c.in.erase(0, need);  // anything after the reply is already the HTTP response
            c.step = Step::Response;
            if (!send_step(b, c, kGet)) return finish(b, c, "GET: send failed");
        }
    }
}

// One batch: n connections started back to back, run until each succeeded, failed or timed out.
void run_batch(Batch& b, long n, const sockaddr_in& proxy) {
    b.conns.assign(static_cast<size_t>(n), SocksConn{});
    long live = 0;
    for (SocksConn& c : b.conns) {
        c.start = Clock::now();
        c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            std::string msg = std::string("socket: ") + std::strerror(errno);
            finish(b, c, msg.c_str());
            continue;
        }
        nodelay(c.fd);
        int r = connect(c.fd, reinterpret_cast<const sockaddr*>(&proxy), sizeof proxy);
        if (r < 0 && errno != EINPROGRESS) {
            std::string msg = std::string("connect to the SOCKS port: ") + std::strerror(errno);
            finish(b, c, msg.c_str());
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT;  // writable = connected (or failed: SO_ERROR says which)
        ev.data.ptr = &c;
        if (epoll_ctl(b.ep, EPOLL_CTL_ADD, c.fd, &ev) < 0) {
            finish(b, c, "epoll_ctl failed");
            continue;
        }
        c.want_out = true;
        ++live;
    }
    std::vector<epoll_event> events(static_cast<size_t>(n));
    for (;;) {
        // The earliest deadline bounds the wait; expired connections fail.
        auto now = Clock::now();
        auto next = Clock::time_point::max();
        live = 0;
        for (SocksConn& c : b.conns) {
            if (c.step == Step::Done) continue;
            auto deadline = c.start + kConnTimeout;
            if (deadline <= now) {
                finish(b, c, "timed out after 10 s");
                continue;
            }
            ++live;
            next = std::min(next, deadline);
        }
        if (live == 0) return;
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
        int k = epoll_wait(b.ep, events.data(), static_cast<int>(events.size()), static_cast<int>(wait));
        if (k < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < k; ++i) {
            auto* c = static_cast<SocksConn*>(events[i].data.ptr);
            if (c->step != Step::Done) step(b, *c, events[i].events);
        }
    }
}

int run_socks(int socks_port, int http_port, long n, long rounds) {
    Batch b;
    b.ep = epoll_create1(EPOLL_CLOEXEC);
    if (b.ep < 0) die("epoll_create1");
    b.request = std::string("\x05\x01\x00\x03", 4);
    b.request += static_cast<char>(kHost.size());
    b.request += kHost;
    b.request += static_cast<char>(http_port >> 8);
    b.request += static_cast<char>(http_port & 0xff);
    sockaddr_in proxy = loopback(socks_port);
    b.lat_ms.reserve(static_cast<size_t>(n * rounds));
    for (long r = 0; r < rounds; ++r) run_batch(b, n, proxy);

    std::string out = "{\"n\":" + std::to_string(n) + ",\"rounds\":" + std::to_string(rounds) +
                      ",\"ok\":" + std::to_string(b.lat_ms.size()) + ",\"failed\":" + std::to_string(b.failed) +
                      ",\"lat_ms\":[";
    char num[32];
    for (size_t i = 0; i < b.lat_ms.size(); ++i) {
        std::snprintf(num, sizeof num, "%s%.4f", i ? "," : "", b.lat_ms[i]);
        out += num;
    }
    out += "]}\n";
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

int usage() {
    std::fprintf(stderr,
                 "usage: loadgen http PORT\n"
                 "       loadgen socks SOCKS_PORT HTTP_PORT N [ROUNDS]\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (argc < 2) return usage();
    std::string_view mode = argv[1];
    if (mode == "http" && argc == 3) return run_http(parse_port(argv[2]));
    if (mode == "socks" && (argc == 5 || argc == 6))
        return run_socks(parse_port(argv[2]), parse_port(argv[3]), parse_count(argv[4]),
                         argc == 6 ? parse_count(argv[5]) : 1);
    return usage();
}
