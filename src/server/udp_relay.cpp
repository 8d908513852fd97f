#include "server/udp_relay.hpp"

#include <cerrno>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "net/resolver.hpp"
#include "net/udp.hpp"
#include "runtime/event.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "socks5/udp.hpp"

namespace alk::server {

using namespace std::chrono_literals;

namespace {

// Per association: names remembered, names being looked up at once, datagrams (and their
// bytes) waiting for a lookup, and peers replies are accepted from.
constexpr size_t kMaxNames = 256;
constexpr size_t kMaxLookups = 16;
constexpr size_t kMaxWaiting = 64;
constexpr size_t kMaxWaitingBytes = 256 * 1024;
constexpr size_t kMaxPeers = 4096;
constexpr rt::Duration kNameTtl = 60s;
constexpr rt::Duration kFailedNameTtl = 5s;

struct Waiting {
  uint16_t port;
  std::vector<uint8_t> payload;
};

struct Name {
  std::optional<net::Endpoint> ep;  // nullopt: no usable address
  rt::Clock::time_point expires;
};

class Relay {
 public:
  Relay(int udp, ssh::Channel &ch, const UdpRelayConfig &cfg)
      : udp_(udp), family_(net::Endpoint::of_socket_local(udp).family()), ch_(ch), cfg_(cfg) {}

  rt::Task<void> run() {
    last_ = rt::Clock::now();
    tasks_.spawn(from_channel());
    tasks_.spawn(to_channel());
    tasks_.spawn(idle_watch());
    co_await done_.wait();
    co_await tasks_.close();
  }

 private:
  rt::Task<void> from_channel() {
    socks5::UdpFrameReader frames;
    for (;;) {
      auto f = frames.next();
      if (f.status == socks5::Status::Invalid) break;
      if (f.status == socks5::Status::Incomplete) {
        ssize_t n = co_await ch_.read(std::as_writable_bytes(frames.room()));
        if (n <= 0) break;
        frames.commit(size_t(n));
        continue;
      }
      if (!f.value.usable) continue;
      last_ = rt::Clock::now();
      const auto &dst = f.value.dst;
      if (check_destination(dst.host, dst.port, *cfg_.grant, *cfg_.permit_open) != DestVerdict::Allowed) continue;
      if (dst.type != socks5::AddrType::Domain) {
        auto ep = net::Endpoint::from_ip(dst.host, dst.port);
        if (ep) co_await send(*ep, f.value.payload);
        continue;
      }
      auto it = names_.find(dst.host);
      if (it != names_.end() && it->second.expires > rt::Clock::now()) {
        if (!it->second.ep) continue;
        auto to = with_port(*it->second.ep, dst.port);
        co_await send(to, f.value.payload);
        continue;
      }
      wait_for_name(dst.host, dst.port, f.value.payload);
    }
    done_.set();
  }

  // Parks a datagram until its name is resolved, starting the lookup if none runs for it.
  void wait_for_name(const std::string &name, uint16_t port, std::span<const uint8_t> payload) {
    auto it = waiting_.find(name);
    if (it == waiting_.end()) {
      if (waiting_.size() >= kMaxLookups) return;
      it = waiting_.emplace(name, std::vector<Waiting>{}).first;
      tasks_.spawn(lookup(name));
    }
    if (waiting_count_ >= kMaxWaiting || waiting_bytes_ + payload.size() > kMaxWaitingBytes) return;
    it->second.push_back(Waiting{port, std::vector<uint8_t>(payload.begin(), payload.end())});
    ++waiting_count_;
    waiting_bytes_ += payload.size();
  }

  rt::Task<void> lookup(std::string name) {
    auto r = co_await net::resolve(name, 0);
    if (!r && r.error().code == ECANCELED) co_return;
    std::optional<net::Endpoint> pick;
    if (r) {
      for (const auto &ep : r.value()) {
        // The same rule as for TCP targets: a name must not lead to link-local (metadata).
        if (net::is_link_local(ep.ip()) || (family_ == AF_INET && ep.family() == AF_INET6)) continue;
        pick = ep;
        break;
      }
    }
    if (names_.size() >= kMaxNames) names_.clear();
    names_[name] = Name{pick, rt::Clock::now() + (pick ? kNameTtl : kFailedNameTtl)};
    auto parked = std::move(waiting_[name]);
    waiting_.erase(name);
    for (auto &w : parked) {
      --waiting_count_;
      waiting_bytes_ -= w.payload.size();
    }
    if (!pick) co_return;
    for (auto &w : parked) {
      auto to = with_port(*pick, w.port);
      co_await send(to, w.payload);
    }
  }

  static net::Endpoint with_port(const net::Endpoint &ep, uint16_t port) {
    return net::Endpoint::from_ip(ep.ip(), port).value_or(ep);
  }

  // A failed send (unreachable network, wrong family) loses that datagram only, as UDP does.
  rt::Task<void> send(const net::Endpoint &to, std::span<const uint8_t> payload) {
    if (peers_.size() >= kMaxPeers) peers_.clear();
    peers_.insert(to.ip());
    auto mapped = net::map_for_family(to, family_);
    co_await net::send_to(udp_, std::as_bytes(payload), mapped);
  }

  rt::Task<void> to_channel() {
    std::vector<std::byte> buf(socks5::kUdpMaxFrameBody + 1);
    std::vector<uint8_t> frame;
    for (;;) {
      net::Endpoint from;
      ssize_t n = co_await net::recv_from(udp_, buf, from);
      if (n == -ECANCELED || n == -EBADF) break;
      if (n < 0) continue;  // a truncated datagram or an ICMP report: that datagram only
      from = net::unmap_v4(from);
      if (!peers_.count(from.ip())) continue;
      last_ = rt::Clock::now();
      socks5::Address src{from.family() == AF_INET6 ? socks5::AddrType::IPv6 : socks5::AddrType::IPv4, from.ip(),
                          from.port()};
      frame.clear();
      auto payload = std::span(reinterpret_cast<const uint8_t *>(buf.data()), size_t(n));
      if (!socks5::append_udp_frame(frame, src, payload)) continue;  // too big for one frame
      // Waits for the channel window: meanwhile the kernel's socket buffer is the queue.
      ssize_t w = co_await ch_.write(std::as_bytes(std::span(frame)));
      if (w < 0) break;
    }
    done_.set();
  }

  rt::Task<void> idle_watch() {
    for (;;) {
      auto left = last_ + cfg_.idle_timeout - rt::Clock::now();
      if (left <= rt::Duration::zero()) break;
      int r = co_await rt::sleep_for(left);
      if (r < 0) co_return;
    }
    done_.set();
  }

  int udp_;
  int family_;
  ssh::Channel &ch_;
  const UdpRelayConfig &cfg_;
  rt::Clock::time_point last_;
  std::map<std::string, Name> names_;
  std::map<std::string, std::vector<Waiting>> waiting_;
  size_t waiting_count_ = 0, waiting_bytes_ = 0;
  std::set<std::string> peers_;
  rt::Event done_;
  rt::Scope tasks_;  // declared last: its tasks use everything above
};

}  // namespace

rt::Task<void> serve_udp_association(ssh::ChannelOpen op, UdpRelayConfig cfg) {
  int rep = 0;
  rt::UniqueFd sock;
  if (cfg.refuse || !cfg.grant->port_forwarding) {
    rep = 2;
  } else {
    auto s = net::bind_udp_any();
    if (s) sock = std::move(s).value();
    else rep = 1;
  }
  auto ch = op.answer(rep);
  if (!ch) co_return;
  {
    Relay relay(sock.get(), *ch, cfg);
    co_await relay.run();
  }
  ch->close();
}

}  // namespace alk::server
