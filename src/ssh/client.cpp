#include "ssh/client.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <libssh/server.h>  // the message-callback API, which clients use too

#include "ssh/keys.hpp"
#include "ssh/known_hosts.hpp"

namespace alk::ssh {

using namespace std::chrono_literals;

Identity::~Identity() {
  if (key_) ssh_key_free(key_);
}

rt::Result<std::shared_ptr<Identity>> Identity::load(const std::string &path) {
  auto key = load_private_key(path, "key");
  if (!key) return key.error();
  auto id = std::shared_ptr<Identity>(new Identity());
  id->key_ = key.value();
  std::string cert_path = path + "-cert.pub";
  std::error_code ec;
  if (std::filesystem::exists(cert_path, ec)) {
    ssh_key cert = nullptr;
    if (ssh_pki_import_cert_file(cert_path.c_str(), &cert) != SSH_OK)
      return rt::Error{EINVAL, "cannot load certificate " + cert_path};
    int rc = ssh_pki_copy_cert_to_privkey(cert, id->key_);
    ssh_key_free(cert);
    if (rc != SSH_OK) return rt::Error{EINVAL, "certificate " + cert_path + " does not fit " + path};
    id->has_cert_ = true;
  }
  return id;
}

int status_to_errno(int rep) {
  switch (rep) {
    case 0: return 0;
    case 2: return rt::kErrNotAllowed;
    case 3: return ENETUNREACH;
    case 4: return EHOSTUNREACH;
    case 5: return ECONNREFUSED;
    case 6: return ETIMEDOUT;
    case 7: return EPROTONOSUPPORT;
    case 8: return EAFNOSUPPORT;
    default: return EIO;
  }
}

int open_failure_to_errno(int reason, std::string_view d) {
  auto has = [&](std::string_view w) { return d.find(w) != std::string_view::npos; };
  switch (reason) {
    case 1: return rt::kErrNotAllowed;
    case 2:
      if (has("refused")) return ECONNREFUSED;
      if (has("Network is unreachable")) return ENETUNREACH;
      if (has("unreachable") || has("No route")) return EHOSTUNREACH;
      if (has("timed out") || has("Timeout")) return ETIMEDOUT;
      if (has("resolve") || has("Name or service") || has("not known") || has("getaddrinfo")) return rt::kErrDnsNotFound;
      return ECONNREFUSED;
    case 3: return EPROTONOSUPPORT;
    case 4: return ENOBUFS;
    default: return EIO;
  }
}

namespace {

// libssh reports an open failure only as text: "Channel opening failure: channel N error (R) DESC".
int parse_open_failure(const char *msg) {
  std::string_view m = msg ? msg : "";
  auto p = m.find("error (");
  if (p == std::string_view::npos) return ECONNRESET;
  int reason = std::atoi(std::string(m.substr(p + 7, 8)).c_str());
  auto close = m.find(')', p);
  std::string_view desc = close == std::string_view::npos ? "" : m.substr(close + 1);
  return open_failure_to_errno(reason, desc);
}

std::optional<PublicKey> server_public_key(ssh_session s, std::string &fingerprint) {
  ssh_key key = nullptr;
  if (ssh_get_server_publickey(s, &key) != SSH_OK) return std::nullopt;
  char *b64 = nullptr;
  std::optional<PublicKey> out;
  if (ssh_pki_export_pubkey_base64(key, &b64) == SSH_OK) {
    std::string line = std::string(ssh_key_type_to_char(ssh_key_type(key))) + " " + b64;
    out = parse_public_key_line(line);
    ssh_string_free_char(b64);
  }
  ssh_key_free(key);
  if (out) fingerprint = fingerprint_sha256(out->blob);
  return out;
}

}  // namespace

rt::Result<void> Client::check_host_key(const ClientConfig &cfg) {
  auto key = server_public_key(core_->session(), fingerprint_);
  if (!key) return rt::Error{rt::kErrProtocol, "server sent no usable host key"};
  if (!cfg.pinned_fingerprint.empty()) {
    if (cfg.pinned_fingerprint != fingerprint_)
      return rt::Error{kErrHostKeyMismatch, "host key mismatch: server presented " + fingerprint_ + " but --host-key pins " +
                                                cfg.pinned_fingerprint + "; refusing to connect"};
    return {};
  }
  if (cfg.known_hosts_path.empty()) return {};
  std::string err;
  auto text = read_small_file(cfg.known_hosts_path, 16 << 20, &err);
  std::string file = text ? *text : "";
  switch (check_known_host(file, cfg.host, cfg.port, *key)) {
    case HostKeyStatus::Known:
      return {};
    case HostKeyStatus::Changed:
    case HostKeyStatus::Revoked:
      return rt::Error{kErrHostKeyChanged,
                       "WARNING: HOST KEY FOR " + known_hosts_host_token(cfg.host, cfg.port) + " HAS CHANGED (now " +
                           fingerprint_ + "). Someone could be intercepting the connection, or the server was "
                           "reinstalled. Refusing to connect; if the change is expected, remove the old entry from " +
                           cfg.known_hosts_path};
    case HostKeyStatus::Unknown:
      break;
  }
  // Trust on first use: remember the key (creating the directory, owner-only).
  std::error_code ec;
  auto dir = std::filesystem::path(cfg.known_hosts_path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  std::ofstream out(cfg.known_hosts_path, std::ios::app);
  out << known_hosts_line(cfg.host, cfg.port, *key);
  if (!out) return rt::Error{EIO, "cannot write " + cfg.known_hosts_path};
  std::fprintf(stderr, "trusting new host key %s for %s (saved to %s)\n", fingerprint_.c_str(),
               known_hosts_host_token(cfg.host, cfg.port).c_str(), cfg.known_hosts_path.c_str());
  return {};
}

rt::Task<rt::Result<std::unique_ptr<Client>>> Client::connect(std::unique_ptr<stream::Stream> transport,
                                                              const ClientConfig &cfg, std::shared_ptr<Identity> id) {
  std::unique_ptr<Client> c(new Client());
  c->id_ = std::move(id);
  c->core_ = std::make_unique<SessionCore>(std::move(transport));
  ssh_session s = ssh_new();
  if (!s) co_return rt::Error{ENOMEM, "ssh_new failed"};
  auto init = c->core_->init(s);  // the core owns s from here on, even on failure
  if (!init) co_return init.error();
  int fd = c->core_->libssh_fd();
  int no = 0;
  ssh_options_set(s, SSH_OPTIONS_PROCESS_CONFIG, &no);
  ssh_options_set(s, SSH_OPTIONS_HOST, cfg.host.c_str());
  ssh_options_set(s, SSH_OPTIONS_USER, cfg.user.c_str());
  ssh_options_set(s, SSH_OPTIONS_KNOWNHOSTS, "/dev/null");
  ssh_options_set(s, SSH_OPTIONS_GLOBAL_KNOWNHOSTS, "/dev/null");
  // AES-GCM first: with AES-NI it is the cheapest AEAD libgcrypt has.
  const char *ciphers = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";
  ssh_options_set(s, SSH_OPTIONS_CIPHERS_C_S, ciphers);
  ssh_options_set(s, SSH_OPTIONS_CIPHERS_S_C, ciphers);
  ssh_options_set(s, SSH_OPTIONS_FD, &fd);
  ssh_set_blocking(s, 0);

  auto deadline = rt::Clock::now() + cfg.handshake_timeout;
  auto remaining = [&] { return std::max<rt::Duration>(deadline - rt::Clock::now(), 1ms); };
  for (;;) {
    int rc = ssh_connect(s);
    c->core_->restore_nonblocking();
    if (rc == SSH_OK) break;
    if (rc == SSH_ERROR) co_return rt::Error{ECONNRESET, std::string("SSH handshake failed: ") + ssh_get_error(s)};
    int w = co_await c->core_->wait_io(remaining());
    if (w == -ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "SSH handshake timed out"};
    if (w < 0) co_return rt::errno_error(-w, "SSH handshake");
  }
  if (const char *banner = ssh_get_serverbanner(s))
    c->peer_is_alknet_ = std::string_view(banner).starts_with(kServerBannerPrefix);
  auto hk = c->check_host_key(cfg);
  if (!hk) co_return hk.error();

  for (;;) {
    int rc = ssh_userauth_publickey(s, nullptr, c->id_->key());
    if (rc == SSH_AUTH_SUCCESS) break;
    if (rc == SSH_AUTH_DENIED || rc == SSH_AUTH_PARTIAL)
      co_return rt::Error{kErrAuthDenied, "server refused our key for user " + cfg.user};
    if (rc == SSH_AUTH_ERROR) co_return rt::Error{ECONNRESET, std::string("authentication failed: ") + ssh_get_error(s)};
    int w = co_await c->core_->wait_io(remaining());
    if (w == -ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "SSH authentication timed out"};
    if (w < 0) co_return rt::errno_error(-w, "SSH authentication");
  }
  Client *self = c.get();
  ssh_set_message_callback(s, &Client::on_message, self);
  c->core_->start();
  co_return std::move(c);
}

// forwarded-tcpip opens are taken as libssh parses them, not polled for with
// ssh_channel_accept_forward: a poll that finds nothing overwrites libssh's session error
// text (where a concurrent direct-tcpip open failure's reason is read from, so SOCKS
// clients got REP 1 instead of 5), and opens parsed in the same read as the tcpip-forward
// reply, or by a channel's own read, sat in the queue until some later packet arrived.
// Any other request (x11, agent, unknown channel requests) gets the default refusal
// instead of piling up in libssh's queue.
int Client::on_message(ssh_session, ssh_message msg, void *user) {
  auto *self = static_cast<Client *>(user);
  if (ssh_message_type(msg) != SSH_REQUEST_CHANNEL_OPEN || ssh_message_subtype(msg) != SSH_CHANNEL_FORWARDED_TCPIP ||
      !self->on_forwarded || !self->core_->alive())
    return 1;
  int port = ssh_message_channel_request_open_destination_port(msg);
  ssh_channel ch = ssh_message_channel_request_open_reply_accept(msg);
  if (ch) self->on_forwarded(std::make_unique<Channel>(*self->core_, ch), port);
  return 0;
}

rt::Task<rt::Result<std::unique_ptr<Channel>>> Client::open_direct_tcpip(const std::string &host, uint16_t port,
                                                                        const std::string &orig_host, uint16_t orig_port,
                                                                        rt::Duration timeout) {
  if (!core_->alive()) co_return rt::Error{ECONNRESET, "SSH session is down"};
  ssh_channel raw = ssh_channel_new(core_->session());
  if (!raw) co_return rt::Error{ENOBUFS, "ssh_channel_new failed"};
  auto ch = std::make_unique<Channel>(*core_, raw, false);
  const std::string origin = peer_is_alknet_ ? kStatusOriginator : orig_host;
  auto deadline = rt::Clock::now() + timeout;
  for (;;) {
    if (!ch->raw() || !core_->alive()) co_return rt::Error{ECONNRESET, "SSH session lost"};
    int rc = ssh_channel_open_forward(ch->raw(), host.c_str(), port, origin.c_str(), orig_port);
    core_->kick();
    if (rc == SSH_OK) {
      ch->mark_opened();
      break;
    }
    if (rc == SSH_ERROR) {
      if (peer_is_alknet_ && ch->exit_status() >= 0) {
        // Confirmation, status and CLOSE came in one batch: the channel was opened and is
        // already closed by the server, which libssh reports as an error. The status says why.
        ch->mark_opened();  // so our CLOSE answers the server's
        co_return rt::Error{status_to_errno(ch->exit_status()), "target unreachable"};
      }
      int code = core_->alive() ? parse_open_failure(ssh_get_error(core_->session())) : ECONNRESET;
      co_return rt::Error{code, "channel open failed"};
    }
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "channel open timed out"};
    bool woke = co_await core_->progress().wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  if (peer_is_alknet_) {
    // The server tells us how its dial went before any data.
    while (ch->exit_status() < 0) {
      if (!ch->raw() || !core_->alive()) co_return rt::Error{ECONNRESET, "SSH session lost"};
      if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "connect timed out"};
      ch->status_event().reset();
      bool woke = co_await ch->status_event().wait();
      if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
      if (ch->exit_status() < 0 && ssh_channel_is_closed(ch->raw())) co_return rt::Error{ECONNREFUSED, "closed"};
    }
    if (int e = status_to_errno(ch->exit_status()); e != 0) co_return rt::Error{e, "target unreachable"};
  }
  co_return std::move(ch);
}

rt::Task<rt::Result<void>> Client::listen_forward(const std::string &bind_host, uint16_t port, rt::Duration timeout) {
  auto deadline = rt::Clock::now() + timeout;
  // libssh tracks one global request at a time per session.
  while (global_busy_) {
    bool woke = co_await core_->progress().wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  global_busy_ = true;
  struct Release {
    bool &b;
    ~Release() { b = false; }
  } release{global_busy_};
  for (;;) {
    if (!core_->alive()) co_return rt::Error{ECONNRESET, "SSH session lost"};
    int bound = 0;
    int rc = ssh_channel_listen_forward(core_->session(), bind_host.c_str(), port, &bound);
    core_->kick();
    if (rc == SSH_OK) {
      ++forwards_;
      co_return rt::Result<void>{};
    }
    if (rc == SSH_ERROR)
      co_return rt::Error{rt::kErrNotAllowed, "server refused remote forward on " + bind_host + ":" + std::to_string(port)};
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "remote forward request timed out"};
    bool woke = co_await core_->progress().wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
}

}  // namespace alk::ssh
