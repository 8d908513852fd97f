// Keeps a server's ACME certificate: the on-disk cache (account key and certificates, 0600
// in a 0700 directory), the challenge answers the TLS listener serves while the CA validates,
// and the renewal loop (two thirds into the lifetime, jittered retries with backoff). A
// failure never takes a still-valid certificate away from the server.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "acme/client.hpp"
#include "acme/crypto.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::acme {

struct ManagerConfig {
  std::vector<std::string> domains;  // the first one names the cache files
  std::string directory;
  std::string email;
  std::string cache_dir;
  std::string ca_file;  // trust for the directory's HTTPS (a private or test CA)
  bool http01 = false;
};

class Manager final : ChallengeSink {
 public:
  using Install = std::function<void(const CertPem &)>;

  // Creates the cache directory, loads or creates the account key and loads a cached
  // certificate if it is usable for these domains. Errors name the path.
  static rt::Result<std::unique_ptr<Manager>> open(ManagerConfig cfg);

  // The certificate to serve now (cached or issued), if any.
  const std::optional<CertPem> &current() const { return current_; }
  const std::vector<std::string> &domains() const { return cfg_.domains; }
  // Called with every newly issued certificate (after it is in the cache).
  void on_certificate(Install f) { install_ = std::move(f); }

  // tls-alpn-01: the self-signed answer for server_name while its challenge is pending.
  std::optional<CertPem> challenge_cert(std::string_view server_name) const;
  // http-01: the key authorization for a token while its challenge is pending.
  std::optional<std::string> http01_answer(std::string_view token) const;

  // Issues when there is no usable certificate, then renews when due, forever (until
  // cancelled), or only until a certificate is there when until_certificate. Failures are
  // retried with backoff. Logs `acme: ...` lines.
  rt::Task<void> run(bool until_certificate = false);
  // One issuance attempt now: on success the certificate is cached, current and installed.
  rt::Task<rt::Result<void>> obtain();

  std::string cert_path() const;
  std::string key_path() const;

 private:
  explicit Manager(ManagerConfig cfg) : cfg_(std::move(cfg)) {}
  void add_tls_alpn(const std::string &domain, std::string key_authorization) override;
  void add_http01(const std::string &token, std::string key_authorization) override;
  void remove(const std::string &domain, const std::string &token) override;

  ManagerConfig cfg_;
  std::string dir_;  // cache_dir/<CA host>
  std::optional<EcKey> account_;
  std::unique_ptr<Client> client_;
  bool started_ = false;
  std::optional<CertPem> current_;
  Install install_;
  std::map<std::string, CertPem, std::less<>> alpn_;
  std::map<std::string, std::string, std::less<>> http01_;
};

// Atomically replaces path with data, mode 0600 (temporary file, fsync, rename).
rt::Result<void> write_private_file(const std::string &path, std::string_view data);

}  // namespace alk::acme
