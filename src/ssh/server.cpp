#include "ssh/server.hpp"

#include <cerrno>

#include "ssh/certificate.hpp"
#include "ssh/client.hpp"
#include "ssh/userauth.hpp"

namespace alk::ssh {

// -- host key and bind ---------------------------------------------------------------------

rt::Result<std::shared_ptr<HostKey>> HostKey::load(const std::string &path) {
  auto key = load_private_key(path, "host key");
  if (!key) return key.error();
  std::shared_ptr<HostKey> hk(new HostKey());
  hk->key_ = std::move(key).value();
  hk->fingerprint_ = fingerprint_sha256(hk->key_.public_blob);
  return hk;
}

std::string server_banner() { return std::string("alknet_") + ALKNET_VERSION; }

rt::Result<std::unique_ptr<ServerBind>> ServerBind::create(std::shared_ptr<HostKey> key) {
  std::unique_ptr<ServerBind> sb(new ServerBind());
  sb->key_ = std::move(key);
  return sb;
}

// -- tcpip-forward -------------------------------------------------------------------------

ForwardRequest::ForwardRequest(GlobalRequest req) : req_(std::move(req)) {
  cancel_ = req_.name() == "cancel-tcpip-forward";
  if (auto f = conn::decode_forward(req_.data())) {
    valid_ = true;
    addr_ = std::move(f->host);
    port_ = f->port;
  }
}

void ForwardRequest::succeed(uint16_t bound_port) {
  std::vector<uint8_t> resp;
  if (!cancel_ && port_ == 0) wire_put_u32(resp, bound_port);
  req_.succeed(resp);
}

// -- the session ---------------------------------------------------------------------------

ServerSession::ServerSession(std::unique_ptr<stream::Stream> transport) {
  TransportConfig tc;
  tc.role = Role::Server;
  tc.version = "SSH-2.0-" + server_banner();
  core_ = std::make_unique<SessionCore>(std::move(transport), std::move(tc));
}

ServerSession::~ServerSession() = default;

rt::Task<rt::Result<void>> ServerSession::handshake(const ServerBind &bind, const ServerConfig &cfg) {
  cfg_ = cfg;
  auto &tc = core_->wire().config();
  tc.host_private = bind.host_key().key().secret;
  tc.host_key_blob = bind.host_key().key().public_blob;
  core_->start();
  int w = co_await core_->wait_established(rt::Clock::now() + cfg.handshake_timeout);
  if (w == -ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "key exchange timed out"};
  if (w == -ECANCELED) co_return rt::Error{ECANCELED, "cancelled"};
  if (w != 0) co_return rt::Error{rt::kErrProtocol, "key exchange failed: " + core_->death_reason()};
  auto r = co_await authenticate(rt::Clock::now() + cfg.auth_timeout);
  if (!r) co_return r;
  core_->on_channel_open = [this](ChannelOpen op) {
    if (op.type() == "direct-tcpip" && on_direct_tcpip) on_direct_tcpip(std::move(op));
    // anything else: refused as op goes
  };
  core_->on_global_request = [this](GlobalRequest g) {
    ForwardRequest req(std::move(g));
    if (req.valid() && on_forward) on_forward(std::move(req));
  };
  core_->set_authenticated();
  co_return rt::Result<void>{};
}

rt::Task<rt::Result<void>> ServerSession::authenticate(rt::Clock::time_point deadline) {
  bool service_ok = false;
  while (!authenticated_) {
    auto m = co_await core_->next_message(deadline);
    if (!m) {
      if (m.error().code == ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "authentication timed out"};
      if (m.error().code == ECANCELED) co_return m.error();
      co_return rt::Error{ECONNRESET, "connection closed during authentication"};
    }
    auto &p = m.value();
    if (p[0] == msg::kServiceRequest && !service_ok) {
      WireReader r(std::span<const uint8_t>(p).subspan(1));
      std::string name;
      if (!r.string(name) || name != "ssh-userauth") {
        core_->wire().disconnect(7, "service not available");  // SSH_DISCONNECT_SERVICE_NOT_AVAILABLE
        core_->kick();
        co_return rt::Error{rt::kErrProtocol, "client asked for an unknown service"};
      }
      std::vector<uint8_t> acc{msg::kServiceAccept};
      wire_put_string(acc, std::string_view("ssh-userauth"));
      core_->send(acc);
      service_ok = true;
      continue;
    }
    if (p[0] != msg::kUserauthRequest || !service_ok) {
      core_->wire().disconnect(2, "protocol error");  // SSH_DISCONNECT_PROTOCOL_ERROR
      core_->kick();
      co_return rt::Error{rt::kErrProtocol, "unexpected message " + std::to_string(p[0]) + " before authentication"};
    }
    if (handle_userauth(p)) break;
    if (cfg_.max_auth_attempts && failed_ >= cfg_.max_auth_attempts) {
      core_->wire().disconnect(14, "too many authentication failures");  // NO_MORE_AUTH_METHODS_AVAILABLE
      core_->kick();
      co_return rt::Error{kErrTooManyAuthAttempts, "too many authentication attempts"};
    }
  }
  co_return rt::Result<void>{};
}

bool ServerSession::handle_userauth(std::span<const uint8_t> payload) {
  auto q = parse_userauth_request(payload);
  if (!q || q->service != "ssh-connection" || q->method != "publickey") {
    // "none" (how clients ask which methods exist) and other methods: not an attempt.
    core_->send(userauth_failure());
    if (!q || q->service != "ssh-connection") ++failed_;
    return false;
  }
  auto fail = [&] {
    core_->send(userauth_failure());
    ++failed_;
    return false;
  };
  auto key = public_key_from_blob(q->key_blob);
  if (!key || key->type != q->algorithm) return fail();
  AuthAttempt a;
  a.user = q->user;
  a.key = *key;
  a.probe = !q->has_signature;
  if (a.probe) {
    if (on_auth && on_auth(a)) {
      core_->send(userauth_pk_ok(q->algorithm, q->key_blob));
      return false;
    }
    return fail();
  }
  // The signature first (with a certificate, by the key inside it); the policy only for a
  // proven key. Only Ed25519 signatures are verified: other key types cannot get in.
  std::vector<uint8_t> plain;
  if (is_certificate_type(key->type)) {
    std::string err;
    auto cert = parse_certificate(key->blob, &err);
    if (!cert) return fail();
    plain = plain_public_key_blob(*cert);
  } else {
    plain = key->blob;
  }
  auto signed_data = userauth_signed_data(core_->wire().session_id(), q->user, q->algorithm, q->key_blob);
  if (!ed25519_verify_blob(q->signature, signed_data, plain)) return fail();
  if (!on_auth || !on_auth(a)) return fail();
  user_ = a.user;
  authenticated_ = true;
  core_->send(std::vector<uint8_t>{msg::kUserauthSuccess});
  return true;
}

rt::Task<rt::Result<std::unique_ptr<Channel>>> ServerSession::open_forwarded(const std::string &bound_addr,
                                                                            uint16_t bound_port,
                                                                            const std::string &orig_addr,
                                                                            uint16_t orig_port, rt::Duration timeout) {
  const std::vector<uint8_t> extra = conn::encode_tcpip({bound_addr, bound_port, orig_addr, orig_port});
  auto r = co_await core_->open_channel("forwarded-tcpip", extra, rt::Clock::now() + timeout, nullptr);
  if (!r) {
    const int code = r.error().code;
    if (code == ECONNRESET || code == ETIMEDOUT || code == ECANCELED) co_return r.error();
    co_return rt::Error{ECONNREFUSED, "client refused the forwarded channel"};
  }
  co_return std::move(r).value();
}

}  // namespace alk::ssh
