// The SSH server half: host key, ssh_bind, key exchange and publickey auth driven by the
// reactor, and the requests an authenticated client may make (direct-tcpip, tcpip-forward).
//
// libssh runs in queue mode: every request becomes an ssh_message we pull with
// ssh_message_get after each packet batch. Server callbacks are not used, because libssh
// 0.10 answers every message a callback does not handle with the default denial instead of
// queueing it (messages.c:ssh_message_queue) - and a channel open must be able to wait for
// an asynchronous dial before it is answered.
#pragma once

#include <libssh/server.h>

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
// Key exchange done, but no successful authentication by then: dropped. Also what ends a
// client that sent a bad signature (libssh sends no reply to it).
inline constexpr rt::Duration kAuthTimeout = 30s;

// The host key, loaded once at start-up.
class HostKey {
 public:
  // Refuses missing, unreadable, PEM and passphrase-protected keys with a clear message.
  static rt::Result<std::shared_ptr<HostKey>> load(const std::string &path);
  ~HostKey();
  ssh_key key() const { return key_; }
  const std::string &fingerprint() const { return fingerprint_; }

 private:
  HostKey() = default;
  ssh_key key_ = nullptr;
  std::string fingerprint_;
};

// ssh_bind configured for alknet: imported host key, no config files, our banner, AES-GCM first.
class ServerBind {
 public:
  static rt::Result<std::unique_ptr<ServerBind>> create(std::shared_ptr<HostKey> key);
  ~ServerBind();
  ssh_bind raw() const { return b_; }

 private:
  ServerBind() = default;
  ssh_bind b_ = nullptr;
  std::shared_ptr<HostKey> key_;
};

// The banner after "SSH-2.0-": alknet clients recognise the server by kServerBannerPrefix.
std::string server_banner();

// One publickey userauth request. probe = the client only asks whether the key would be
// accepted (no signature yet); otherwise libssh has verified the signature.
struct AuthAttempt {
  std::string user;
  PublicKey key;  // type + wire blob; for a certificate the whole certificate blob
  bool probe = false;
};

// Owns an ssh_message until it is answered (default answer if dropped unanswered).
class Message {
 public:
  Message() = default;
  explicit Message(ssh_message m) : m_(m) {}
  Message(Message &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  Message &operator=(Message &&o) noexcept;
  ~Message();
  ssh_message raw() const { return m_; }
  explicit operator bool() const { return m_ != nullptr; }
  // Sends libssh's default answer (refusal) and frees the message.
  void refuse();
  void reset();

 private:
  ssh_message m_ = nullptr;
};

// A direct-tcpip channel open waiting for its answer.
class ChannelOpen {
 public:
  ChannelOpen(SessionCore &core, Message msg);
  ChannelOpen(ChannelOpen &&) = default;
  // Unanswered: refused if the session still lives, else just freed.
  ~ChannelOpen() { refuse(); }
  const std::string &destination() const { return dest_; }
  uint16_t port() const { return port_; }
  const std::string &originator() const { return orig_; }
  uint16_t originator_port() const { return orig_port_; }
  // Confirms the open; nullptr if the session is gone.
  std::unique_ptr<Channel> accept();
  // OPEN_FAILURE "administratively prohibited" (all libssh 0.10 can send).
  void refuse();
  // Answers with the outcome of the dial (or internal service) behind the open, as a SOCKS5
  // REP code: for the alknet-status originator, confirms and sends the status (the channel
  // then closes again when rep != 0); for others, confirms on 0 and refuses anything else.
  // The channel only when rep == 0 and the session still lives.
  std::unique_ptr<Channel> answer(int rep);

 private:
  SessionCore *core_;
  Message msg_;
  std::string dest_, orig_;
  uint16_t port_ = 0, orig_port_ = 0;
};

// tcpip-forward or cancel-tcpip-forward.
class ForwardRequest {
 public:
  ForwardRequest(SessionCore &core, Message msg);
  ForwardRequest(ForwardRequest &&) = default;
  ~ForwardRequest() { refuse(); }
  bool cancel() const { return cancel_; }
  const std::string &address() const { return addr_; }
  uint16_t port() const { return port_; }
  // bound_port is sent back only when the client asked for port 0 (RFC 4254 §7.1).
  void succeed(uint16_t bound_port);
  void refuse();

 private:
  SessionCore *core_;
  Message msg_;
  std::string addr_;
  uint16_t port_ = 0;
  bool cancel_ = false;
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
  void drain_messages();
  void handle_auth(Message msg);
  void handle_after_auth(Message msg);

  std::unique_ptr<SessionCore> core_;
  ServerConfig cfg_;
  std::string user_;
  bool authenticated_ = false;
  bool give_up_ = false;  // too many failed attempts
  unsigned failed_ = 0;
  rt::Event auth_done_;
};

}  // namespace alk::ssh
