// Connection-level glue: installing keys into an ngtcp2_conn, the ngtcp2 callbacks
// that need the connection, and BoringSSL's SSL_QUIC_METHOD.
#include <arpa/inet.h>

#include <openssl/x509.h>

#include <algorithm>
#include <string>

#include "transport/quic/crypto.hpp"

namespace alk::quic {
namespace {

SSL *tls_of(ngtcp2_conn *conn) { return static_cast<SSL *>(ngtcp2_conn_get_tls_native_handle(conn)); }

ngtcp2_conn *conn_of(SSL *ssl) {
  auto *ref = static_cast<ConnRef *>(SSL_get_app_data(ssl));
  if (ref == nullptr || ref->get_conn == nullptr) return nullptr;
  return ref->get_conn(ref);
}

// Peer transport parameters arrive inside the TLS handshake; ngtcp2 needs them before
// it may use the keys of the level they unlock.
int set_remote_transport_params(ngtcp2_conn *conn, SSL *ssl) {
  const uint8_t *tp = nullptr;
  size_t tp_len = 0;
  SSL_get_peer_quic_transport_params(ssl, &tp, &tp_len);
  if (int rv = ngtcp2_conn_decode_remote_transport_params(conn, tp, tp_len); rv != 0) {
    ngtcp2_conn_set_tls_error(conn, rv);
    return -1;
  }
  return 0;
}

int set_local_transport_params(ngtcp2_conn *conn, SSL *ssl) {
  uint8_t buf[512];
  const ngtcp2_ssize n = ngtcp2_conn_encode_local_transport_params(conn, buf, sizeof(buf));
  if (n < 0) return -1;
  return SSL_set_quic_transport_params(ssl, buf, static_cast<size_t>(n)) == 1 ? 0 : -1;
}

struct InitialKeys {
  ngtcp2_crypto_ctx ctx;
  AeadCtx rx_aead, tx_aead;
  HpCtx rx_hp, tx_hp;
  PacketProtectionKeys rx, tx;
};

bool build_initial_keys(InitialKeys &k, bool server, uint32_t version, const ngtcp2_cid &client_dcid) {
  if (version != NGTCP2_PROTO_VER_V1 || client_dcid.datalen > NGTCP2_MAX_CIDLEN) return false;
  initial_crypto_ctx(k.ctx);
  InitialSecrets secrets;
  if (!derive_initial_secrets(secrets, {client_dcid.data, client_dcid.datalen})) return false;
  const auto &rx_secret = server ? secrets.client : secrets.server;
  const auto &tx_secret = server ? secrets.server : secrets.client;
  return derive_packet_protection_keys(k.rx, k.ctx.aead, k.ctx.md, rx_secret) &&
         derive_packet_protection_keys(k.tx, k.ctx.aead, k.ctx.md, tx_secret) &&
         k.rx_aead.init(k.ctx.aead, k.rx.key_span()) && k.rx_hp.init(k.ctx.hp, k.rx.hp_span()) &&
         k.tx_aead.init(k.ctx.aead, k.tx.key_span()) && k.tx_hp.init(k.ctx.hp, k.tx.hp_span());
}

void release(InitialKeys &k) {
  k.rx_aead.release();
  k.tx_aead.release();
  k.rx_hp.release();
  k.tx_hp.release();
}

int derive_and_install_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, std::span<const uint8_t> secret,
                           bool rx) {
  const bool server = ngtcp2_conn_is_server(conn) != 0;
  // 0-RTT keys only flow client -> server; the other direction has nothing to install.
  if (level == NGTCP2_CRYPTO_LEVEL_EARLY && rx != server) return 0;
  SSL *ssl = tls_of(conn);
  if (ssl == nullptr) return -1;

  const ngtcp2_crypto_ctx *ctx = nullptr;
  uint32_t version = 0;
  ngtcp2_crypto_ctx fresh;
  switch (level) {
    case NGTCP2_CRYPTO_LEVEL_EARLY:
      if (!crypto_ctx_for_ssl(fresh, ssl)) return -1;
      ngtcp2_conn_set_early_crypto_ctx(conn, &fresh);
      ctx = ngtcp2_conn_get_early_crypto_ctx(conn);
      version = ngtcp2_conn_get_client_chosen_version(conn);
      break;
    case NGTCP2_CRYPTO_LEVEL_HANDSHAKE:
    case NGTCP2_CRYPTO_LEVEL_APPLICATION:
      // The server learns the negotiated version from the client's transport
      // parameters, which it must therefore decode before the first Handshake key.
      if (level == NGTCP2_CRYPTO_LEVEL_HANDSHAKE && server && ngtcp2_conn_get_negotiated_version(conn) == 0 &&
          set_remote_transport_params(conn, ssl) != 0) {
        return -1;
      }
      ctx = ngtcp2_conn_get_crypto_ctx(conn);
      if (ctx->aead.native_handle == nullptr) {
        if (!crypto_ctx_for_ssl(fresh, ssl)) return -1;
        ngtcp2_conn_set_crypto_ctx(conn, &fresh);
        ctx = ngtcp2_conn_get_crypto_ctx(conn);
      }
      version = ngtcp2_conn_get_negotiated_version(conn);
      break;
    default:
      return -1;
  }
  if (version != NGTCP2_PROTO_VER_V1 || secret.size() > kMaxSecretLen) return -1;

  PacketProtectionKeys keys;
  AeadCtx aead;
  HpCtx hp;
  if (!derive_packet_protection_keys(keys, ctx->aead, ctx->md, secret) || !aead.init(ctx->aead, keys.key_span()) ||
      !hp.init(ctx->hp, keys.hp_span())) {
    return -1;
  }

  int rv = 0;
  switch (level) {
    case NGTCP2_CRYPTO_LEVEL_EARLY:
      rv = ngtcp2_conn_install_early_key(conn, aead.get(), keys.iv.data(), keys.iv.size(), hp.get());
      break;
    case NGTCP2_CRYPTO_LEVEL_HANDSHAKE:
      rv = rx ? ngtcp2_conn_install_rx_handshake_key(conn, aead.get(), keys.iv.data(), keys.iv.size(), hp.get())
              : ngtcp2_conn_install_tx_handshake_key(conn, aead.get(), keys.iv.data(), keys.iv.size(), hp.get());
      break;
    case NGTCP2_CRYPTO_LEVEL_APPLICATION:
      // The client gets the server's parameters in EncryptedExtensions, before 1-RTT.
      if (rx && !server && set_remote_transport_params(conn, ssl) != 0) return -1;
      rv = rx ? ngtcp2_conn_install_rx_key(conn, secret.data(), secret.size(), aead.get(), keys.iv.data(),
                                           keys.iv.size(), hp.get())
              : ngtcp2_conn_install_tx_key(conn, secret.data(), secret.size(), aead.get(), keys.iv.data(),
                                           keys.iv.size(), hp.get());
      break;
    default:
      return -1;
  }
  if (rv != 0) return -1;
  // The conn owns them now, even if a later step fails.
  aead.release();
  hp.release();

  // The server's own parameters go into EncryptedExtensions, written right after the
  // Handshake write key exists (they depend on what the client sent).
  if (level == NGTCP2_CRYPTO_LEVEL_HANDSHAKE && !rx && server && set_local_transport_params(conn, ssl) != 0) {
    return -1;
  }
  return 0;
}

int set_read_secret(SSL *ssl, ssl_encryption_level_t ssl_level, const SSL_CIPHER *, const uint8_t *secret,
                    size_t secret_len) {
  ngtcp2_conn *conn = conn_of(ssl);
  const auto level = to_ngtcp2_level(ssl_level);
  if (conn == nullptr || !level) return 0;
  return derive_and_install_rx_key(conn, *level, {secret, secret_len}) == 0 ? 1 : 0;
}

int set_write_secret(SSL *ssl, ssl_encryption_level_t ssl_level, const SSL_CIPHER *, const uint8_t *secret,
                     size_t secret_len) {
  ngtcp2_conn *conn = conn_of(ssl);
  const auto level = to_ngtcp2_level(ssl_level);
  if (conn == nullptr || !level) return 0;
  return derive_and_install_tx_key(conn, *level, {secret, secret_len}) == 0 ? 1 : 0;
}

int add_handshake_data(SSL *ssl, ssl_encryption_level_t ssl_level, const uint8_t *data, size_t len) {
  ngtcp2_conn *conn = conn_of(ssl);
  const auto level = to_ngtcp2_level(ssl_level);
  if (conn == nullptr || !level) return 0;
  if (int rv = ngtcp2_conn_submit_crypto_data(conn, *level, data, len); rv != 0) {
    ngtcp2_conn_set_tls_error(conn, rv);
    return 0;
  }
  return 1;
}

// ngtcp2 packs CRYPTO frames whenever it writes; there is nothing to flush here.
int flush_flight(SSL *) { return 1; }

int send_alert(SSL *ssl, ssl_encryption_level_t, uint8_t alert) {
  ngtcp2_conn *conn = conn_of(ssl);
  if (conn == nullptr) return 0;
  ngtcp2_conn_set_tls_alert(conn, alert);
  return 1;
}

constexpr SSL_QUIC_METHOD kQuicMethod = {set_read_secret, set_write_secret, add_handshake_data, flush_flight,
                                         send_alert};

bool configure_context(SSL_CTX *ctx) {
  return SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) == 1 &&
         SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) == 1 && SSL_CTX_set_quic_method(ctx, &kQuicMethod) == 1;
}

}  // namespace

int derive_and_install_initial_key(ngtcp2_conn *conn, uint32_t version, const ngtcp2_cid &client_dcid) {
  const bool server = ngtcp2_conn_is_server(conn) != 0;
  InitialKeys k;
  if (!build_initial_keys(k, server, version, client_dcid)) return -1;
  ngtcp2_conn_set_initial_crypto_ctx(conn, &k.ctx);

  // Only a client that has not yet accepted a Retry verifies Retry integrity tags.
  ngtcp2_crypto_aead retry;
  AeadCtx retry_ctx;
  const bool want_retry = !server && ngtcp2_conn_after_retry(conn) == 0;
  if (want_retry) {
    retry_aead(retry);
    static constexpr std::string_view kRetryKey{NGTCP2_RETRY_KEY_V1, sizeof(NGTCP2_RETRY_KEY_V1) - 1};
    if (!retry_ctx.init(retry, {reinterpret_cast<const uint8_t *>(kRetryKey.data()), kRetryKey.size()})) return -1;
  }

  if (ngtcp2_conn_install_initial_key(conn, k.rx_aead.get(), k.rx.iv.data(), k.rx_hp.get(), k.tx_aead.get(),
                                      k.tx.iv.data(), k.tx_hp.get(), kPacketIvLen) != 0) {
    return -1;
  }
  release(k);
  if (want_retry) {
    ngtcp2_conn_set_retry_aead(conn, &retry, retry_ctx.get());
    retry_ctx.release();
  }
  return 0;
}

int derive_and_install_rx_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, std::span<const uint8_t> secret) {
  return derive_and_install_key(conn, level, secret, true);
}

int derive_and_install_tx_key(ngtcp2_conn *conn, ngtcp2_crypto_level level, std::span<const uint8_t> secret) {
  return derive_and_install_key(conn, level, secret, false);
}

int read_write_crypto_data(ngtcp2_conn *conn, SSL *ssl, ngtcp2_crypto_level level, const uint8_t *data,
                           size_t len) {
  const auto ssl_level = to_ssl_level(level);
  if (ssl == nullptr || !ssl_level) return -1;
  if (SSL_provide_quic_data(ssl, *ssl_level, data, len) != 1) return -1;

  if (ngtcp2_conn_get_handshake_completed(conn) == 0) {
    // At most one early-data rejection can happen per handshake; bound the retry.
    for (int attempt = 0;; ++attempt) {
      const int rv = SSL_do_handshake(ssl);
      if (rv > 0) break;
      switch (SSL_get_error(ssl, rv)) {
        case SSL_ERROR_WANT_READ:
        case SSL_ERROR_WANT_WRITE:
          return 0;
        case SSL_ERROR_EARLY_DATA_REJECTED:
          if (ngtcp2_conn_is_server(conn) != 0 || attempt > 0) return -1;
          SSL_reset_early_data_reject(ssl);
          if (ngtcp2_conn_early_data_rejected(conn) != 0) return -1;
          continue;
        default:
          return -1;
      }
    }
    if (SSL_in_early_data(ssl)) return 0;
    ngtcp2_conn_handshake_completed(conn);
  }

  // Session tickets and other post-handshake messages; BoringSSL takes them all at once.
  if (const int rv = SSL_process_quic_post_handshake(ssl); rv != 1) {
    switch (SSL_get_error(ssl, rv)) {
      case SSL_ERROR_WANT_READ:
      case SSL_ERROR_WANT_WRITE:
        return 0;
      default:
        return -1;
    }
  }
  return 0;
}

int client_initial_cb(ngtcp2_conn *conn, void *) {
  SSL *ssl = tls_of(conn);
  const ngtcp2_cid *dcid = ngtcp2_conn_get_dcid(conn);
  if (ssl == nullptr || dcid == nullptr ||
      derive_and_install_initial_key(conn, ngtcp2_conn_get_client_chosen_version(conn), *dcid) != 0 ||
      set_local_transport_params(conn, ssl) != 0 ||
      read_write_crypto_data(conn, ssl, NGTCP2_CRYPTO_LEVEL_INITIAL, nullptr, 0) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int recv_client_initial_cb(ngtcp2_conn *conn, const ngtcp2_cid *dcid, void *) {
  if (derive_and_install_initial_key(conn, ngtcp2_conn_get_client_chosen_version(conn), *dcid) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int recv_retry_cb(ngtcp2_conn *conn, const ngtcp2_pkt_hd *hd, void *) {
  // After Retry the client's Initial keys follow the server-chosen CID.
  if (derive_and_install_initial_key(conn, ngtcp2_conn_get_client_chosen_version(conn), hd->scid) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int recv_crypto_data_cb(ngtcp2_conn *conn, ngtcp2_crypto_level level, uint64_t, const uint8_t *data, size_t datalen,
                        void *) {
  if (read_write_crypto_data(conn, tls_of(conn), level, data, datalen) != 0) {
    const int err = ngtcp2_conn_get_tls_error(conn);
    return err != 0 ? err : NGTCP2_ERR_CRYPTO;
  }
  return 0;
}

int update_key_cb(ngtcp2_conn *conn, uint8_t *rx_secret, uint8_t *tx_secret, ngtcp2_crypto_aead_ctx *rx_aead_ctx,
                  uint8_t *rx_iv, ngtcp2_crypto_aead_ctx *tx_aead_ctx, uint8_t *tx_iv,
                  const uint8_t *current_rx_secret, const uint8_t *current_tx_secret, size_t secretlen, void *) {
  const ngtcp2_crypto_ctx *ctx = ngtcp2_conn_get_crypto_ctx(conn);
  if (ctx->aead.native_handle == nullptr || ngtcp2_conn_get_negotiated_version(conn) != NGTCP2_PROTO_VER_V1 ||
      secretlen > kMaxSecretLen) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  PacketProtectionKeys rx, tx;
  AeadCtx rx_aead, tx_aead;
  // Header protection keys are not rotated by a key update (RFC 9001 §6).
  if (!update_traffic_secret({rx_secret, secretlen}, ctx->md, {current_rx_secret, secretlen}) ||
      !update_traffic_secret({tx_secret, secretlen}, ctx->md, {current_tx_secret, secretlen}) ||
      !derive_packet_protection_keys(rx, ctx->aead, ctx->md, {rx_secret, secretlen}, false) ||
      !derive_packet_protection_keys(tx, ctx->aead, ctx->md, {tx_secret, secretlen}, false) ||
      !rx_aead.init(ctx->aead, rx.key_span()) || !tx_aead.init(ctx->aead, tx.key_span())) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  std::copy(rx.iv.begin(), rx.iv.end(), rx_iv);
  std::copy(tx.iv.begin(), tx.iv.end(), tx_iv);
  *rx_aead_ctx = *rx_aead.get();
  *tx_aead_ctx = *tx_aead.get();
  rx_aead.release();
  tx_aead.release();
  return 0;
}

int version_negotiation_cb(ngtcp2_conn *conn, uint32_t version, const ngtcp2_cid *client_dcid, void *) {
  InitialKeys k;
  if (!build_initial_keys(k, ngtcp2_conn_is_server(conn) != 0, version, *client_dcid)) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  if (ngtcp2_conn_install_vneg_initial_key(conn, version, k.rx_aead.get(), k.rx.iv.data(), k.rx_hp.get(),
                                           k.tx_aead.get(), k.tx.iv.data(), k.tx_hp.get(), kPacketIvLen) != 0) {
    return NGTCP2_ERR_CALLBACK_FAILURE;
  }
  release(k);
  return 0;
}

namespace {
void set_common_callbacks(ngtcp2_callbacks &cb) {
  cb.recv_crypto_data = recv_crypto_data_cb;
  cb.encrypt = encrypt_cb;
  cb.decrypt = decrypt_cb;
  cb.hp_mask = hp_mask_cb;
  cb.update_key = update_key_cb;
  cb.delete_crypto_aead_ctx = delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = delete_crypto_cipher_ctx_cb;
  cb.version_negotiation = version_negotiation_cb;
  cb.get_path_challenge_data = get_path_challenge_data_cb;
}
}  // namespace

void set_client_crypto_callbacks(ngtcp2_callbacks &cb) {
  set_common_callbacks(cb);
  cb.client_initial = client_initial_cb;
  cb.recv_retry = recv_retry_cb;
}

void set_server_crypto_callbacks(ngtcp2_callbacks &cb) {
  set_common_callbacks(cb);
  cb.recv_client_initial = recv_client_initial_cb;
}

const SSL_QUIC_METHOD &quic_method() { return kQuicMethod; }

bool configure_client_context(SSL_CTX *ctx) { return configure_context(ctx); }

bool configure_server_context(SSL_CTX *ctx) {
  if (!configure_context(ctx)) return false;
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn_cb, nullptr);
  return true;
}

bool setup_client_session(SSL *ssl, std::string_view server_name, std::string_view alpn) {
  if (alpn.empty() || alpn.size() > 255) return false;
  SSL_set_connect_state(ssl);
  SSL_set_quic_use_legacy_codepoint(ssl, 0);
  std::string wire;
  wire.push_back(static_cast<char>(alpn.size()));
  wire.append(alpn);
  // SSL_set_alpn_protos is the odd one out: 0 means success.
  if (SSL_set_alpn_protos(ssl, reinterpret_cast<const uint8_t *>(wire.data()), wire.size()) != 0) return false;
  if (server_name.empty()) return true;

  std::string name(server_name);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') name = name.substr(1, name.size() - 2);
  if (name.find('\0') != std::string::npos) return false;
  unsigned char addr[16];
  X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
  if (inet_pton(AF_INET, name.c_str(), addr) == 1 || inet_pton(AF_INET6, name.c_str(), addr) == 1) {
    // RFC 6066 forbids IP literals in SNI; check the certificate's IP SAN instead.
    return X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1;
  }
  return SSL_set_tlsext_host_name(ssl, name.c_str()) == 1 &&
         X509_VERIFY_PARAM_set1_host(param, name.data(), name.size()) == 1;
}

bool setup_server_session(SSL *ssl) {
  SSL_set_accept_state(ssl);
  SSL_set_quic_use_legacy_codepoint(ssl, 0);
  return true;
}

int select_alpn_cb(SSL *, const uint8_t **out, uint8_t *outlen, const uint8_t *in, unsigned inlen, void *) {
  unsigned i = 0;
  while (i < inlen) {
    const unsigned len = in[i];
    if (len == 0 || len > inlen - i - 1) return SSL_TLSEXT_ERR_ALERT_FATAL;
    if (len == kAlpn.size() && std::string_view(reinterpret_cast<const char *>(in + i + 1), len) == kAlpn) {
      *out = in + i + 1;
      *outlen = static_cast<uint8_t>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace alk::quic
