// The SSH client half: handshake, host-key trust, publickey auth, channels, -R requests.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "runtime/result.hpp"
#include "ssh/keys.hpp"
#include "ssh/session.hpp"

namespace alk::ssh {

// The user's key (and certificate when PATH-cert.pub exists), loaded once at start-up.
class Identity {
 public:
  // Refuses PEM keys and passphrase-protected keys with a message that says what to do.
  static rt::Result<std::shared_ptr<Identity>> load(const std::string &path);
  const Ed25519PrivateKey &key() const { return key_; }
  bool has_certificate() const { return !cert_blob_.empty(); }
  // What userauth presents: the certificate when there is one, else the plain key.
  std::string_view algorithm() const;
  std::span<const uint8_t> public_blob() const;

 private:
  Ed25519PrivateKey key_;
  std::string cert_type_;
  std::vector<uint8_t> cert_blob_;
};

struct ClientConfig {
  std::string host;  // the server as the user named it (known_hosts entry)
  uint16_t port = 22;
  std::string user = "alknet";
  std::string known_hosts_path;
  std::string pinned_fingerprint;  // "SHA256:..." or empty for trust-on-first-use
  rt::Duration handshake_timeout = std::chrono::seconds(20);
  // Start a re-key after this many bytes either way (tests use small values).
  uint64_t rekey_bytes = uint64_t{1} << 30;
};

// Codes of rt::Error from connect() beyond errno.
inline constexpr int kErrHostKeyChanged = 200001;
inline constexpr int kErrHostKeyMismatch = 200002;
inline constexpr int kErrAuthDenied = 200003;

inline constexpr const char *kServerBannerPrefix = "SSH-2.0-alknet";

class Client {
 public:
  static rt::Task<rt::Result<std::unique_ptr<Client>>> connect(std::unique_ptr<stream::Stream> transport,
                                                               const ClientConfig &cfg,
                                                               std::shared_ptr<Identity> id);
  // Opens a direct-tcpip channel. On failure the error code is errno-style: ECONNREFUSED,
  // EHOSTUNREACH, ENETUNREACH, ETIMEDOUT, rt::kErrNotAllowed, EPROTONOSUPPORT, ENOBUFS,
  // ECONNRESET (session lost) or rt::kErrDnsNotFound.
  rt::Task<rt::Result<std::unique_ptr<Channel>>> open_direct_tcpip(const std::string &host, uint16_t port,
                                                                   const std::string &orig_host, uint16_t orig_port,
                                                                   rt::Duration timeout);
  // tcpip-forward: asks the server to listen on bind_host:port (a fixed port).
  rt::Task<rt::Result<void>> listen_forward(const std::string &bind_host, uint16_t port, rt::Duration timeout);
  // Incoming forwarded-tcpip channels, with the server port they arrived on.
  std::function<void(std::unique_ptr<Channel>, int port)> on_forwarded;

  SessionCore &core() { return *core_; }
  const std::string &host_key_fingerprint() const { return fingerprint_; }
  bool peer_is_alknet() const { return peer_is_alknet_; }
  rt::Task<void> disconnect() { return core_->shutdown("disconnect"); }

 private:
  Client() = default;
  rt::Result<void> check_host_key(const ClientConfig &cfg, const PublicKey &key);
  bool accept_host_key(std::span<const uint8_t> blob);

  std::unique_ptr<SessionCore> core_;
  std::shared_ptr<Identity> id_;
  const ClientConfig *cfg_ = nullptr;  // during connect() only
  std::string fingerprint_;
  std::optional<rt::Error> host_key_error_;
  std::vector<uint8_t> host_key_blob_;  // what the first key exchange accepted
  bool peer_is_alknet_ = false;
};

// Maps an open failure (reason code and description, as OpenSSH sends them) to an
// errno-style code. Pure, for tests.
int open_failure_to_errno(int reason, std::string_view description);
// SOCKS5 REP code (as carried by alknet's exit-status) to errno-style code. Pure.
int status_to_errno(int rep);

}  // namespace alk::ssh
