// RFC 8555 client on the reactor: every HTTPS request is our TLS stream over net::dial plus
// the pure HTTP/1.1 parser, bounded in time; nothing here blocks the thread.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "acme/crypto.hpp"
#include "acme/http.hpp"
#include "runtime/reactor.hpp"
#include "runtime/result.hpp"
#include "runtime/task.hpp"

namespace alk::acme {

using namespace std::chrono_literals;

struct HttpConfig {
  std::string ca_file;  // trust anchors for https; empty = system store
  rt::Duration timeout = 30s;
};

// One request on its own connection (Connection: close), the whole exchange bounded by
// cfg.timeout. Transport failures and unparseable responses are errors; any HTTP status is a
// response.
rt::Task<rt::Result<HttpResponse>> http_fetch(const HttpConfig &cfg, std::string method, std::string url,
                                              std::string body = {}, std::string accept = "application/json");

// Where the client puts challenge answers while the CA validates them.
class ChallengeSink {
 public:
  virtual void add_tls_alpn(const std::string &domain, std::string key_authorization) = 0;
  virtual void add_http01(const std::string &token, std::string key_authorization) = 0;
  virtual void remove(const std::string &domain, const std::string &token) = 0;

 protected:
  ~ChallengeSink() = default;
};

struct ClientConfig {
  std::string directory;
  std::string email;  // optional
  HttpConfig http;
  bool http01 = false;  // prefer http-01 over tls-alpn-01
  rt::Duration poll_interval = 1s;
  unsigned max_polls = 90;
};

// Error texts start with the step that failed ("directory", "account", "order",
// "challenge for NAME", "finalize", "download") and carry the CA's problem type and detail.
// A rate-limited answer has code kErrRateLimited and retry_after set in the text's place.
inline constexpr int kErrRateLimited = 100100;

class Client {
 public:
  Client(ClientConfig cfg, const EcKey &account_key);
  // Fetches the directory and registers (or finds) the account.
  rt::Task<rt::Result<void>> start();
  // A new order for names, validated through sink, finalized with a fresh key's CSR.
  rt::Task<rt::Result<CertPem>> issue(const std::vector<std::string> &names, ChallengeSink &sink);
  const std::string &account_url() const { return kid_; }

 private:
  rt::Task<rt::Result<HttpResponse>> post(const std::string &url, std::string payload, std::string step,
                                          std::string accept = "application/json");
  rt::Task<rt::Result<void>> refresh_nonce();
  rt::Task<rt::Result<void>> authorize(const std::string &authz_url, ChallengeSink &sink);
  rt::Task<rt::Result<std::string>> poll(const std::string &url, std::string step, const char *until);

  ClientConfig cfg_;
  const EcKey &key_;
  std::string new_nonce_url_, new_account_url_, new_order_url_;
  std::string nonce_, kid_;
};

}  // namespace alk::acme
