// The SSH server half on our own protocol layers: host key, key exchange and publickey auth
// with timeouts and an attempt limit, and the requests an authenticated client may make
// (direct-tcpip, tcpip-forward), answered whenever the application is ready (a channel open
// can wait for an asynchronous dial).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "runtime/result.hpp"
#include "ssh/keys.hpp"
#include "ssh/session.hpp"

namespace alk::ssh {

using namespace std::chrono_literals;

// A peer that has not finished the key exchange by then is dropped (silent scanners).
inline constexpr rt::Duration kHandshakeTimeout = 20s;
// Key exchange done, but no successful authentication by then: dropped.
inline constexpr rt::Duration kAuthTimeout = 30s;

// The host key, loaded once at start-up.
class HostKey {
 public:
  // Refuses missing, unreadable, PEM, passphrase-protected and non-Ed25519 keys clearly.
  static rt::Result<std::shared_ptr<HostKey>> load(const std::string &path);
  const Ed25519PrivateKey &key() const { return key_; }
  const std::string &fingerprint() const { return fingerprint_; }

 private:
  HostKey() = default;
  Ed25519PrivateKey key_;
  std::string fingerprint_;
};

// What every server session shares: the host key and our identification string.
class ServerBind {
 public:
  static rt::Result<std::unique_ptr<ServerBind>> create(std::shared_ptr<HostKey> key);
  const HostKey &host_key() const { return *key_; }

 private:
  ServerBind() = default;
  std::shared_ptr<HostKey> key_;
};

// The banner after "SSH-2.0-": alknet clients recognise the server by kServerBannerPrefix.
std::string server_banner();

// One publickey userauth request. probe = the client only asks whether the key would be
// accepted (no signature yet); otherwise the signature has been verified.
struct AuthAttempt {
  std::string user;
  PublicKey key;  // type + wire blob; for a certificate the whole certificate blob
  bool probe = false;
};

// tcpip-forward or cancel-tcpip-forward.
class ForwardRequest {
 public:
  explicit ForwardRequest(GlobalRequest req);
  ForwardRequest(ForwardRequest &&) = default;
  bool cancel() const { return cancel_; }
  const std::string &address() const { return addr_; }
  uint16_t port() const { return port_; }
  bool valid() const { return valid_; }
  // bound_port is sent back only when the client asked for port 0 (RFC 4254 §7.1).
  void succeed(uint16_t bound_port);
  void refuse() { req_.fail(); }

 private:
  GlobalRequest req_;
  std::string addr_;
  uint16_t port_ = 0;
  bool cancel_ = false, valid_ = false;
};

struct ServerConfig {
  rt::Duration handshake_timeout = kHandshakeTimeout;
  rt::Duration auth_timeout = kAuthTimeout;
  unsigned max_auth_attempts = 10;  // rejected publickey requests before we disconnect
};

// Error codes of handshake() beyond errno.
inline constexpr int kErrTooManyAuthAttempts = 200010;

class ServerSession {
 public:
  explicit ServerSession(std::unique_ptr<stream::Stream> transport);
  ~ServerSession();

  // Decides a publickey attempt (true = accept). Called for probes too.
  std::function<bool(const AuthAttempt &)> on_auth;
  // After authentication. Unset handlers mean "refuse".
  std::function<void(ChannelOpen)> on_direct_tcpip;
  std::function<void(ForwardRequest)> on_forward;

  // Key exchange then authentication, each bounded by its timeout. On success the session's
  // event loop runs (core().start()) and requests reach the handlers above.
  rt::Task<rt::Result<void>> handshake(const ServerBind &bind, const ServerConfig &cfg);
  // Opens a forwarded-tcpip channel to the client (RFC 4254 §7.2).
  rt::Task<rt::Result<std::unique_ptr<Channel>>> open_forwarded(const std::string &bound_addr, uint16_t bound_port,
                                                                const std::string &orig_addr, uint16_t orig_port,
                                                                rt::Duration timeout);
  SessionCore &core() { return *core_; }
  const std::string &user() const { return user_; }
  bool authenticated() const { return authenticated_; }
  unsigned failed_attempts() const { return failed_; }
  rt::Task<void> disconnect(const char *why) { return core_->shutdown(why); }

 private:
  rt::Task<rt::Result<void>> authenticate(rt::Clock::time_point deadline);
  // One USERAUTH_REQUEST: true once the client is in.
  bool handle_userauth(std::span<const uint8_t> payload);

  std::unique_ptr<SessionCore> core_;
  ServerConfig cfg_;
  std::string user_;
  bool authenticated_ = false;
  unsigned failed_ = 0;
};

}  // namespace alk::ssh
