#include "ssh/server.hpp"

#include <libssh/server.h>

#include <cerrno>

#include "ssh/client.hpp"

namespace alk::ssh {

// -- host key and bind ---------------------------------------------------------------------

HostKey::~HostKey() {
  if (key_) ssh_key_free(key_);
}

rt::Result<std::shared_ptr<HostKey>> HostKey::load(const std::string &path) {
  auto key = load_private_key(path, "host key");
  if (!key) return key.error();
  std::shared_ptr<HostKey> hk(new HostKey());
  hk->key_ = key.value();
  char *b64 = nullptr;
  if (ssh_pki_export_pubkey_base64(hk->key_, &b64) == SSH_OK) {
    if (auto blob = base64_decode(b64)) hk->fingerprint_ = fingerprint_sha256(*blob);
    ssh_string_free_char(b64);
  }
  return hk;
}

std::string server_banner() { return std::string("alknet_") + ALKNET_VERSION; }

ServerBind::~ServerBind() {
  if (b_) ssh_bind_free(b_);
}

rt::Result<std::unique_ptr<ServerBind>> ServerBind::create(std::shared_ptr<HostKey> key) {
  std::unique_ptr<ServerBind> sb(new ServerBind());
  sb->key_ = std::move(key);
  sb->b_ = ssh_bind_new();
  if (!sb->b_) return rt::Error{ENOMEM, "ssh_bind_new failed"};
  bool no = false;
  // Never read /etc/ssh/libssh_server_config: the command line is the whole configuration.
  if (ssh_bind_options_set(sb->b_, SSH_BIND_OPTIONS_PROCESS_CONFIG, &no) != SSH_OK)
    return rt::Error{EINVAL, "ssh_bind: cannot disable config files"};
  // IMPORT_KEY takes ownership of a key object, so hand it a copy.
  ssh_key copy = nullptr;
  char *b64 = nullptr;
  if (ssh_pki_export_privkey_base64(sb->key_->key(), nullptr, nullptr, nullptr, &b64) != SSH_OK)
    return rt::Error{EINVAL, "cannot export host key"};
  int rc = ssh_pki_import_privkey_base64(b64, nullptr, nullptr, nullptr, &copy);
  ssh_string_free_char(b64);
  if (rc != SSH_OK) return rt::Error{EINVAL, "cannot copy host key"};
  if (ssh_bind_options_set(sb->b_, SSH_BIND_OPTIONS_IMPORT_KEY, copy) != SSH_OK) {
    ssh_key_free(copy);
    return rt::Error{EINVAL, "ssh_bind: host key refused"};
  }
  std::string banner = server_banner();
  ssh_bind_options_set(sb->b_, SSH_BIND_OPTIONS_BANNER, banner.c_str());
  // AES-GCM first: with AES-NI it is the cheapest AEAD libgcrypt has (see DESIGN.md).
  const char *ciphers = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes256-ctr";
  ssh_bind_options_set(sb->b_, SSH_BIND_OPTIONS_CIPHERS_C_S, ciphers);
  ssh_bind_options_set(sb->b_, SSH_BIND_OPTIONS_CIPHERS_S_C, ciphers);
  return sb;
}

// -- messages ------------------------------------------------------------------------------

Message &Message::operator=(Message &&o) noexcept {
  if (this != &o) {
    reset();
    m_ = std::exchange(o.m_, nullptr);
  }
  return *this;
}

Message::~Message() { refuse(); }

void Message::reset() {
  if (m_) ssh_message_free(std::exchange(m_, nullptr));
}

void Message::refuse() {
  if (!m_) return;
  ssh_message_reply_default(m_);
  reset();
}

ChannelOpen::ChannelOpen(SessionCore &core, Message msg) : core_(&core), msg_(std::move(msg)) {
  const char *d = ssh_message_channel_request_open_destination(msg_.raw());
  const char *o = ssh_message_channel_request_open_originator(msg_.raw());
  dest_ = d ? d : "";
  orig_ = o ? o : "";
  port_ = uint16_t(ssh_message_channel_request_open_destination_port(msg_.raw()));
  orig_port_ = uint16_t(ssh_message_channel_request_open_originator_port(msg_.raw()));
}

std::unique_ptr<Channel> ChannelOpen::accept() {
  if (!msg_ || !core_->alive()) {
    msg_.reset();
    return nullptr;
  }
  ssh_channel ch = ssh_message_channel_request_open_reply_accept(msg_.raw());
  msg_.reset();
  core_->kick();
  if (!ch) return nullptr;
  return std::make_unique<Channel>(*core_, ch);
}

std::unique_ptr<Channel> ChannelOpen::answer(int rep) {
  const bool status_mode = orig_ == kStatusOriginator;
  if (rep != 0 && !status_mode) {
    refuse();
    return nullptr;
  }
  auto ch = accept();
  if (!ch || !status_mode) return ch;
  ssh_channel_request_send_exit_status(ch->raw(), rep);
  core_->kick();
  if (rep != 0) return nullptr;  // the channel closes as ch goes
  return ch;
}

void ChannelOpen::refuse() {
  if (msg_ && core_->alive()) {
    msg_.refuse();
    core_->kick();
  }
  msg_.reset();
}

ForwardRequest::ForwardRequest(SessionCore &core, Message msg) : core_(&core), msg_(std::move(msg)) {
  cancel_ = ssh_message_subtype(msg_.raw()) == SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD;
  const char *a = ssh_message_global_request_address(msg_.raw());
  addr_ = a ? a : "";
  port_ = uint16_t(ssh_message_global_request_port(msg_.raw()));
}

void ForwardRequest::succeed(uint16_t bound_port) {
  if (msg_ && core_->alive()) {
    ssh_message_global_request_reply_success(msg_.raw(), bound_port);
    core_->kick();
  }
  msg_.reset();
}

void ForwardRequest::refuse() {
  if (msg_ && core_->alive()) {
    msg_.refuse();
    core_->kick();
  }
  msg_.reset();
}

// -- the session ---------------------------------------------------------------------------

ServerSession::ServerSession(std::unique_ptr<stream::Stream> transport)
    : core_(std::make_unique<SessionCore>(std::move(transport))) {}

ServerSession::~ServerSession() { core_->on_packets = nullptr; }

rt::Task<rt::Result<void>> ServerSession::handshake(const ServerBind &bind, const ServerConfig &cfg) {
  cfg_ = cfg;
  ssh_session s = ssh_new();
  if (!s) co_return rt::Error{ENOMEM, "ssh_new failed"};
  auto init = core_->init(s);  // the core owns s from here on
  if (!init) co_return init.error();
  if (ssh_bind_accept_fd(bind.raw(), s, core_->libssh_fd()) != SSH_OK)
    co_return rt::Error{EIO, std::string("ssh_bind_accept_fd: ") + ssh_get_error(bind.raw())};
  ssh_set_blocking(s, 0);

  auto deadline = rt::Clock::now() + cfg.handshake_timeout;
  for (;;) {
    int rc = ssh_handle_key_exchange(s);
    if (rc == SSH_OK) break;
    if (rc == SSH_ERROR) co_return rt::Error{rt::kErrProtocol, std::string("key exchange failed: ") + ssh_get_error(s)};
    auto left = deadline - rt::Clock::now();
    if (left <= rt::Duration::zero()) co_return rt::Error{ETIMEDOUT, "key exchange timed out"};
    int w = co_await core_->wait_io(left);
    if (w == -ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "key exchange timed out"};
    if (w < 0) co_return rt::errno_error(-w, "key exchange");
  }

  // Only publickey is ever offered.
  ssh_set_auth_methods(s, SSH_AUTH_METHOD_PUBLICKEY);
  core_->on_packets = [this] { drain_messages(); };
  core_->start();
  // Packets that arrived with the last KEX message are already buffered inside libssh.
  drain_messages();
  core_->kick();

  deadline = rt::Clock::now() + cfg.auth_timeout;
  while (!authenticated_) {
    if (give_up_) {
      co_return rt::Error{kErrTooManyAuthAttempts, "too many authentication attempts"};
    }
    if (!core_->alive()) co_return rt::Error{ECONNRESET, "connection closed during authentication"};
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "authentication timed out"};
    bool woke = co_await core_->progress().wait();  // pulsed per packet batch and once a second
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  co_return rt::Result<void>{};
}

void ServerSession::drain_messages() {
  ssh_session s = core_->session();
  // ssh_message_get in non-blocking mode pops a queued message or runs one poll(0) pass.
  for (int i = 0; i < 4096 && core_->alive() && !give_up_; ++i) {
    ssh_message m = ssh_message_get(s);
    if (!m) break;
    Message msg(m);
    if (!authenticated_)
      handle_auth(std::move(msg));
    else
      handle_after_auth(std::move(msg));
  }
  core_->kick();
}

void ServerSession::handle_auth(Message msg) {
  if (ssh_message_type(msg.raw()) != SSH_REQUEST_AUTH) {
    // Service requests get their success; anything else (channels before auth) is refused.
    return;  // Message's destructor sends the default reply
  }
  if (ssh_message_subtype(msg.raw()) != SSH_AUTH_METHOD_PUBLICKEY) {
    ssh_message_auth_set_methods(msg.raw(), SSH_AUTH_METHOD_PUBLICKEY);
    return;
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  ssh_key key = ssh_message_auth_pubkey(msg.raw());
  enum ssh_publickey_state_e state = ssh_message_auth_publickey_state(msg.raw());
#pragma GCC diagnostic pop
  AuthAttempt a;
  const char *u = ssh_message_auth_user(msg.raw());
  a.user = u ? u : "";
  a.probe = state == SSH_PUBLICKEY_STATE_NONE;
  bool ok = false;
  if (key && (state == SSH_PUBLICKEY_STATE_NONE || state == SSH_PUBLICKEY_STATE_VALID)) {
    char *b64 = nullptr;
    // For a certificate this is the whole certificate blob.
    if (ssh_pki_export_pubkey_base64(key, &b64) == SSH_OK) {
      auto blob = base64_decode(b64);
      ssh_string_free_char(b64);
      if (blob) {
        if (auto pk = public_key_from_blob(*blob)) {
          a.key = std::move(*pk);
          ok = on_auth && on_auth(a);
        }
      }
    }
  }
  if (ok && a.probe) {
    ssh_message_auth_reply_pk_ok_simple(msg.raw());
    msg.reset();
    return;
  }
  if (ok) {
    user_ = a.user;
    ssh_message_auth_reply_success(msg.raw(), 0);
    msg.reset();
    authenticated_ = true;
    return;
  }
  ssh_message_auth_set_methods(msg.raw(), SSH_AUTH_METHOD_PUBLICKEY);
  msg.refuse();
  ++failed_;
  if (cfg_.max_auth_attempts && failed_ >= cfg_.max_auth_attempts) give_up_ = true;
}

void ServerSession::handle_after_auth(Message msg) {
  int type = ssh_message_type(msg.raw());
  int sub = ssh_message_subtype(msg.raw());
  if (type == SSH_REQUEST_CHANNEL_OPEN && sub == SSH_CHANNEL_DIRECT_TCPIP && on_direct_tcpip) {
    on_direct_tcpip(ChannelOpen(*core_, std::move(msg)));
    return;
  }
  if (type == SSH_REQUEST_GLOBAL &&
      (sub == SSH_GLOBAL_REQUEST_TCPIP_FORWARD || sub == SSH_GLOBAL_REQUEST_CANCEL_TCPIP_FORWARD) && on_forward) {
    on_forward(ForwardRequest(*core_, std::move(msg)));
    return;
  }
  // session / x11 / auth-agent channels, shell, exec, pty, subsystem, env ...: the default
  // refusal (sent by Message's destructor); the session itself goes on.
}

rt::Task<rt::Result<std::unique_ptr<Channel>>> ServerSession::open_forwarded(const std::string &bound_addr,
                                                                            uint16_t bound_port,
                                                                            const std::string &orig_addr,
                                                                            uint16_t orig_port, rt::Duration timeout) {
  if (!core_->alive()) co_return rt::Error{ECONNRESET, "SSH session is down"};
  ssh_channel raw = ssh_channel_new(core_->session());
  if (!raw) co_return rt::Error{ENOBUFS, "ssh_channel_new failed"};
  auto ch = std::make_unique<Channel>(*core_, raw);
  auto deadline = rt::Clock::now() + timeout;
  for (;;) {
    if (!ch->raw() || !core_->alive()) co_return rt::Error{ECONNRESET, "SSH session lost"};
    int rc = ssh_channel_open_reverse_forward(ch->raw(), bound_addr.c_str(), bound_port, orig_addr.c_str(), orig_port);
    core_->kick();
    if (rc == SSH_OK) break;
    if (rc == SSH_ERROR) co_return rt::Error{ECONNREFUSED, "client refused the forwarded channel"};
    if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "forwarded channel open timed out"};
    bool woke = co_await core_->progress().wait();
    if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
  }
  co_return std::move(ch);
}

}  // namespace alk::ssh
