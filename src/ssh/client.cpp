#include "ssh/client.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "ssh/certificate.hpp"
#include "ssh/keys.hpp"
#include "ssh/known_hosts.hpp"
#include "ssh/userauth.hpp"

namespace alk::ssh {

using namespace std::chrono_literals;

rt::Result<std::shared_ptr<Identity>> Identity::load(const std::string &path) {
  auto key = load_private_key(path, "key");
  if (!key) return key.error();
  auto id = std::make_shared<Identity>();
  id->key_ = std::move(key).value();
  std::string cert_path = path + "-cert.pub";
  std::error_code ec;
  if (std::filesystem::exists(cert_path, ec)) {
    std::string err;
    auto text = read_small_file(cert_path, 64 * 1024, &err);
    auto line = text ? parse_public_key_line(text->substr(0, text->find('\n'))) : std::nullopt;
    if (!line || line->type != "ssh-ed25519-cert-v01@openssh.com")
      return rt::Error{EINVAL, "cannot load certificate " + cert_path + " (expected an ssh-ed25519-cert-v01@openssh.com line)"};
    auto cert = parse_certificate(line->blob, &err);
    if (!cert || plain_public_key_blob(*cert) != id->key_.public_blob)
      return rt::Error{EINVAL, "certificate " + cert_path + " does not fit " + path};
    id->cert_type_ = line->type;
    id->cert_blob_ = std::move(line->blob);
  }
  return id;
}

std::string_view Identity::algorithm() const { return has_certificate() ? std::string_view(cert_type_) : "ssh-ed25519"; }

std::span<const uint8_t> Identity::public_blob() const {
  return has_certificate() ? std::span<const uint8_t>(cert_blob_) : std::span<const uint8_t>(key_.public_blob);
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

rt::Result<void> Client::check_host_key(const ClientConfig &cfg, const PublicKey &key) {
  fingerprint_ = fingerprint_sha256(key.blob);
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
  switch (check_known_host(file, cfg.host, cfg.port, key)) {
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
  out << known_hosts_line(cfg.host, cfg.port, key);
  if (!out) return rt::Error{EIO, "cannot write " + cfg.known_hosts_path};
  std::fprintf(stderr, "trusting new host key %s for %s (saved to %s)\n", fingerprint_.c_str(),
               known_hosts_host_token(cfg.host, cfg.port).c_str(), cfg.known_hosts_path.c_str());
  return {};
}

// Runs inside the key exchange, after the server proved it holds the key: a refusal fails
// the exchange, and connect() reports host_key_error_.
bool Client::accept_host_key(std::span<const uint8_t> blob) {
  // A re-key must present the key we already checked: no trust decision mid-session.
  if (!host_key_blob_.empty()) return std::equal(blob.begin(), blob.end(), host_key_blob_.begin(), host_key_blob_.end());
  host_key_blob_.assign(blob.begin(), blob.end());
  auto key = public_key_from_blob(blob);
  if (!key) {
    host_key_error_ = rt::Error{rt::kErrProtocol, "server sent no usable host key"};
    return false;
  }
  auto r = check_host_key(*cfg_, *key);
  if (!r) host_key_error_ = r.error();
  return bool(r);
}

rt::Task<rt::Result<std::unique_ptr<Client>>> Client::connect(std::unique_ptr<stream::Stream> transport,
                                                              const ClientConfig &cfg, std::shared_ptr<Identity> id) {
  std::unique_ptr<Client> c(new Client());
  c->id_ = std::move(id);
  c->cfg_ = &cfg;
  Client *self = c.get();
  TransportConfig tc;
  tc.role = Role::Client;
  tc.version = std::string("SSH-2.0-alknet_") + ALKNET_VERSION;
  tc.rekey_bytes = cfg.rekey_bytes;
  tc.accept_host_key = [self](std::span<const uint8_t> blob) { return self->accept_host_key(blob); };
  c->core_ = std::make_unique<SessionCore>(std::move(transport), std::move(tc));
  c->core_->start();

  const auto deadline = rt::Clock::now() + cfg.handshake_timeout;
  int w = co_await c->core_->wait_established(deadline);
  if (w != 0) {
    if (c->host_key_error_) co_return *c->host_key_error_;
    if (w == -ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "SSH handshake timed out"};
    co_return rt::Error{ECONNRESET, "SSH handshake failed: " + c->core_->death_reason()};
  }
  c->peer_is_alknet_ = c->core_->wire().peer_version().starts_with(kServerBannerPrefix);

  std::vector<uint8_t> req{msg::kServiceRequest};
  wire_put_string(req, std::string_view("ssh-userauth"));
  c->core_->send(req);
  auto sig = userauth_publickey_request(c->core_->wire().session_id(), cfg.user, c->id_->algorithm(),
                                        c->id_->public_blob(), c->id_->key().secret);
  bool sent_auth = false;
  while (true) {
    auto m = co_await c->core_->next_message(deadline);
    if (!m) {
      if (m.error().code == ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "SSH authentication timed out"};
      co_return rt::Error{ECONNRESET, "authentication failed: " + m.error().what};
    }
    const uint8_t type = m.value()[0];
    if (type == msg::kServiceAccept && !sent_auth) {
      // Straight to a signed request: the server checks the key and the signature in one step.
      c->core_->send(sig);
      sent_auth = true;
    } else if (type == msg::kUserauthSuccess && sent_auth) {
      break;
    } else if (type == msg::kUserauthFailure && sent_auth) {
      co_return rt::Error{kErrAuthDenied, "server refused our key for user " + cfg.user};
    } else if (type == msg::kUserauthBanner) {
      continue;
    } else {
      co_return rt::Error{rt::kErrProtocol, "unexpected message " + std::to_string(type) + " during authentication"};
    }
  }
  c->cfg_ = nullptr;
  c->core_->on_channel_open = [self](ChannelOpen op) {
    if (op.type() != "forwarded-tcpip" || !self->on_forwarded) return;  // refused as op goes
    const int port = op.port();
    if (auto ch = op.accept()) self->on_forwarded(std::move(ch), port);
  };
  c->core_->set_authenticated();
  co_return std::move(c);
}

rt::Task<rt::Result<std::unique_ptr<Channel>>> Client::open_direct_tcpip(const std::string &host, uint16_t port,
                                                                        const std::string &orig_host, uint16_t orig_port,
                                                                        rt::Duration timeout) {
  if (!core_->alive()) co_return rt::Error{ECONNRESET, "SSH session is down"};
  const std::string origin = peer_is_alknet_ ? kStatusOriginator : orig_host;
  const std::vector<uint8_t> extra = conn::encode_tcpip({host, port, origin, orig_port});
  const auto deadline = rt::Clock::now() + timeout;
  SessionCore::OpenRefused refused;
  auto r = co_await core_->open_channel("direct-tcpip", extra, deadline, &refused);
  if (!r) {
    const int code = r.error().code;
    if (code == ECONNRESET || code == ETIMEDOUT || code == ECANCELED) co_return r.error();
    co_return rt::Error{open_failure_to_errno(int(refused.reason), refused.description), "channel open failed"};
  }
  auto ch = std::move(r).value();
  if (peer_is_alknet_) {
    // The server tells us how its dial went before any data.
    while (ch->exit_status() < 0) {
      if (!core_->alive()) co_return rt::Error{ECONNRESET, "SSH session lost"};
      if (ch->remote_closed()) co_return rt::Error{ECONNREFUSED, "closed"};
      if (rt::Clock::now() >= deadline) co_return rt::Error{ETIMEDOUT, "connect timed out"};
      ch->status_event().reset();
      bool woke = co_await core_->progress().wait();
      if (!woke) co_return rt::Error{ECANCELED, "cancelled"};
    }
    if (int e = status_to_errno(ch->exit_status()); e != 0) co_return rt::Error{e, "target unreachable"};
  }
  co_return std::move(ch);
}

rt::Task<rt::Result<void>> Client::listen_forward(const std::string &bind_host, uint16_t port, rt::Duration timeout) {
  const std::vector<uint8_t> extra = conn::encode_forward({bind_host, port});
  auto r = co_await core_->global_request("tcpip-forward", extra, rt::Clock::now() + timeout);
  if (!r) {
    if (r.error().code == ETIMEDOUT) co_return rt::Error{ETIMEDOUT, "remote forward request timed out"};
    co_return r.error();
  }
  if (!r.value())
    co_return rt::Error{rt::kErrNotAllowed, "server refused remote forward on " + bind_host + ":" + std::to_string(port)};
  co_return rt::Result<void>{};
}

}  // namespace alk::ssh
