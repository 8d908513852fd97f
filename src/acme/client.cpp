#include "acme/client.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <memory>

#include "net/dial.hpp"
#include "runtime/event.hpp"
#include "runtime/scope.hpp"
#include "stream/stream.hpp"
#include "transport/tls/tls.hpp"

namespace alk::acme {

namespace {

using json = nlohmann::json;

// nlohmann's accessors throw on a wrong type; a CA's JSON is input, so look, never assume.
std::string str(const json &j, const char *key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json parse_json(const std::string &body) { return json::parse(body, nullptr, false); }

// "type: detail" from an RFC 7807 problem document, or the status when there is none.
std::string problem_text(const HttpResponse &r) {
  json j = parse_json(r.body);
  std::string type = str(j, "type"), detail = str(j, "detail");
  const std::string prefix = "urn:ietf:params:acme:error:";
  if (type.starts_with(prefix)) type = type.substr(prefix.size());
  if (type.empty() && detail.empty()) return "HTTP " + std::to_string(r.status);
  if (detail.empty()) return type;
  return (type.empty() ? "" : type + ": ") + detail;
}

bool is_problem(const HttpResponse &r, std::string_view type) {
  return str(parse_json(r.body), "type") == "urn:ietf:params:acme:error:" + std::string(type);
}

rt::Error step_error(const std::string &step, const HttpResponse &r) {
  int code = is_problem(r, "rateLimited") ? kErrRateLimited : rt::kErrProtocol;
  std::string text = step + ": " + problem_text(r);
  if (std::string ra = r.header("retry-after"); !ra.empty()) text += " (retry after " + ra + ")";
  return rt::Error{code, text};
}

// JSON bodies are built outside the coroutines: GCC 12 miscompiles brace-initialized JSON
// (string literal arrays) inside a coroutine frame.
std::string account_payload(const std::string &email) {
  json acct = {{"termsOfServiceAgreed", true}};
  if (!email.empty()) acct["contact"] = json::array({"mailto:" + email});
  return acct.dump();
}

std::string order_payload(const std::vector<std::string> &names) {
  json ids = json::array();
  for (const auto &n : names) ids.push_back({{"type", "dns"}, {"value", n}});
  return json{{"identifiers", ids}}.dump();
}

std::string finalize_payload(const std::vector<uint8_t> &csr) { return json{{"csr", base64url(csr)}}.dump(); }

struct Exchange {
  rt::Result<HttpResponse> out = rt::Error{ETIMEDOUT, "timed out"};
  rt::Event done;
};

rt::Task<void> run_exchange(const HttpConfig &cfg, std::string method, Url url, std::string request,
                            Exchange &ex) {
  auto fail = [&](rt::Error e) {
    ex.out = std::move(e);
    ex.done.set();
  };
  auto tcp = co_await net::dial(url.host, url.port, cfg.timeout);
  if (!tcp) co_return fail(tcp.error());
  std::unique_ptr<stream::Stream> s;
  if (url.https) {
    transport::TlsClientConfig tc;
    tc.server_name = url.host;
    tc.ca_file = cfg.ca_file;
    tc.alpn = "http/1.1";
    tc.handshake_timeout = cfg.timeout;
    auto ctx = transport::TlsClientContext::create(tc);
    if (!ctx) co_return fail(ctx.error());
    auto tls = co_await transport::tls_connect(ctx.value(), std::move(tcp.value()));
    if (!tls) co_return fail(tls.error());
    s = std::move(tls.value());
  } else {
    s = std::make_unique<stream::FdStream>(std::move(tcp.value()));
  }
  ssize_t w = co_await s->write(std::as_bytes(std::span(request)));
  if (w < 0) co_return fail(rt::errno_error(int(-w), "send"));
  std::string got;
  std::byte buf[16384];
  for (;;) {
    ssize_t n = co_await s->read(buf);
    if (n < 0) co_return fail(rt::errno_error(int(-n), "receive"));
    got.append(reinterpret_cast<const char *>(buf), size_t(n));
    auto p = parse_response(got, n == 0, method == "HEAD");
    if (p.state == ParseState::Bad) co_return fail(rt::Error{rt::kErrProtocol, "bad HTTP response: " + p.error});
    if (p.state == ParseState::Done) {
      ex.out = std::move(p.response);
      break;
    }
  }
  s->close();
  ex.done.set();
}

rt::Task<void> expire(rt::Duration d, Exchange &ex) {
  int r = co_await rt::sleep_for(d);
  if (r == 0) ex.done.set();
}

}  // namespace

rt::Task<rt::Result<HttpResponse>> http_fetch(const HttpConfig &cfg, std::string method, std::string url_text,
                                              std::string body, std::string accept) {
  auto url = parse_url(url_text);
  if (!url) co_return rt::Error{EINVAL, "bad URL " + url_text};
  std::string request = build_request(method, *url, body, accept);
  // The exchange and a timer race; whichever ends first cancels the other, so a CA that
  // accepts and then says nothing costs a bounded wait.
  Exchange ex;
  rt::Scope work, timer;
  work.spawn(run_exchange(cfg, method, *url, std::move(request), ex));
  timer.spawn(expire(cfg.timeout, ex));
  bool ok = co_await ex.done.wait();
  co_await work.close();
  co_await timer.close();
  if (!ok) co_return rt::Error{ECANCELED, "cancelled"};
  if (!ex.out) co_return rt::Error{ex.out.error().code, url->host + ":" + std::to_string(url->port) + ": " + ex.out.error().what};
  co_return std::move(ex.out);
}

Client::Client(ClientConfig cfg, const EcKey &account_key) : cfg_(std::move(cfg)), key_(account_key) {}

rt::Task<rt::Result<void>> Client::start() {
  auto r = co_await http_fetch(cfg_.http, "GET", cfg_.directory);
  if (!r) co_return rt::Error{r.error().code, "directory " + cfg_.directory + ": " + r.error().what};
  if (r->status != 200) co_return step_error("directory " + cfg_.directory, r.value());
  json dir = parse_json(r->body);
  new_nonce_url_ = str(dir, "newNonce");
  new_account_url_ = str(dir, "newAccount");
  new_order_url_ = str(dir, "newOrder");
  if (new_nonce_url_.empty() || new_account_url_.empty() || new_order_url_.empty())
    co_return rt::Error{rt::kErrProtocol, "directory " + cfg_.directory + ": not an ACME directory"};
  kid_.clear();
  auto a = co_await post(new_account_url_, account_payload(cfg_.email), "account");
  if (!a) co_return a.error();
  if (a->status != 200 && a->status != 201) co_return step_error("account", a.value());
  kid_ = a->header("location");
  if (kid_.empty()) co_return rt::Error{rt::kErrProtocol, "account: no account URL in the answer"};
  co_return rt::Result<void>{};
}

rt::Task<rt::Result<void>> Client::refresh_nonce() {
  auto r = co_await http_fetch(cfg_.http, "HEAD", new_nonce_url_);
  if (!r) co_return rt::Error{r.error().code, "nonce: " + r.error().what};
  nonce_ = r->header("replay-nonce");
  if (nonce_.empty()) co_return rt::Error{rt::kErrProtocol, "nonce: no Replay-Nonce from the CA"};
  co_return rt::Result<void>{};
}

rt::Task<rt::Result<HttpResponse>> Client::post(const std::string &url, std::string payload, std::string step,
                                                std::string accept) {
  // A CA may reject any nonce (RFC 8555 §6.5); the error carries a fresh one to retry with.
  for (int attempt = 0;; ++attempt) {
    if (nonce_.empty()) {
      auto n = co_await refresh_nonce();
      if (!n) co_return rt::Error{n.error().code, step + ": " + n.error().what};
    }
    auto jws = jws_sign(key_, kid_, nonce_, url, payload);
    nonce_.clear();
    if (!jws) co_return rt::Error{EINVAL, step + ": cannot sign the request"};
    auto r = co_await http_fetch(cfg_.http, "POST", url, *jws, accept);
    if (!r) co_return rt::Error{r.error().code, step + ": " + r.error().what};
    nonce_ = r->header("replay-nonce");
    if (r->status == 400 && is_problem(r.value(), "badNonce") && attempt < 4) continue;
    co_return r;
  }
}

rt::Task<rt::Result<std::string>> Client::poll(const std::string &url, std::string step, const char *until) {
  for (unsigned i = 0; i < cfg_.max_polls; ++i) {
    auto r = co_await post(url, "", step);
    if (!r) co_return r.error();
    if (r->status != 200) co_return step_error(step, r.value());
    json j = parse_json(r->body);
    std::string status = str(j, "status");
    if (status == until) co_return std::move(r->body);
    if (status == "invalid" || status == "revoked" || status == "deactivated" || status == "expired") {
      // The reason sits in the failed challenge's error (authz) or the order's error.
      std::string why;
      if (j.is_object() && j.contains("challenges") && j["challenges"].is_array())
        for (const auto &c : j["challenges"])
          if (c.is_object() && c.contains("error")) why = str(c["error"], "detail");
      if (why.empty() && j.is_object() && j.contains("error")) why = str(j["error"], "detail");
      co_return rt::Error{rt::kErrProtocol, step + ": " + status + (why.empty() ? "" : ": " + why)};
    }
    int s = co_await rt::sleep_for(cfg_.poll_interval);
    if (s == -ECANCELED) co_return rt::Error{ECANCELED, step + ": cancelled"};
  }
  co_return rt::Error{ETIMEDOUT, step + ": still not " + std::string(until) + " after " +
                                     std::to_string(cfg_.max_polls) + " polls"};
}

rt::Task<rt::Result<void>> Client::authorize(const std::string &authz_url, ChallengeSink &sink) {
  auto r = co_await post(authz_url, "", "authorization");
  if (!r) co_return r.error();
  if (r->status != 200) co_return step_error("authorization", r.value());
  json authz = parse_json(r->body);
  std::string domain = authz.is_object() && authz.contains("identifier") ? str(authz["identifier"], "value") : "";
  std::string step = "challenge for " + (domain.empty() ? std::string("?") : domain);
  if (str(authz, "status") == "valid") co_return rt::Result<void>{};  // reused authorization
  const char *want = cfg_.http01 ? "http-01" : "tls-alpn-01";
  std::string chall_url, token;
  if (authz.is_object() && authz.contains("challenges") && authz["challenges"].is_array())
    for (const auto &c : authz["challenges"])
      if (str(c, "type") == want) {
        chall_url = str(c, "url");
        token = str(c, "token");
      }
  if (chall_url.empty() || token.empty() || base64url_decode(token) == std::nullopt)
    co_return rt::Error{rt::kErrProtocol, step + ": the CA offers no usable " + std::string(want) + " challenge"};
  std::string key_auth = token + "." + key_.thumbprint();
  if (cfg_.http01)
    sink.add_http01(token, key_auth);
  else
    sink.add_tls_alpn(domain, key_auth);
  // Tell the CA we are ready, then wait for its verdict; the answer stays up until then.
  auto go = co_await post(chall_url, "{}", step);
  rt::Result<void> out;
  if (!go) {
    out = go.error();
  } else if (go->status != 200) {
    out = step_error(step, go.value());
  } else {
    auto done = co_await poll(authz_url, step, "valid");
    if (!done) out = done.error();
  }
  sink.remove(domain, token);
  co_return out;
}

rt::Task<rt::Result<CertPem>> Client::issue(const std::vector<std::string> &names, ChallengeSink &sink) {
  auto r = co_await post(new_order_url_, order_payload(names), "order");
  if (!r) co_return r.error();
  if (r->status != 201 && r->status != 200) co_return step_error("order", r.value());
  std::string order_url = r->header("location");
  json order = parse_json(r->body);
  std::string finalize = str(order, "finalize");
  if (order_url.empty() || finalize.empty() || !order.contains("authorizations") ||
      !order["authorizations"].is_array())
    co_return rt::Error{rt::kErrProtocol, "order: malformed answer from the CA"};
  for (const auto &a : order["authorizations"]) {
    if (!a.is_string()) co_return rt::Error{rt::kErrProtocol, "order: malformed authorization URL"};
    auto ok = co_await authorize(a.get<std::string>(), sink);
    if (!ok) co_return ok.error();
  }
  auto ready = co_await poll(order_url, "order", "ready");
  if (!ready) co_return ready.error();
  auto cert_key = EcKey::generate();
  if (!cert_key) co_return cert_key.error();
  auto csr = make_csr(cert_key.value(), names);
  if (!csr) co_return rt::Error{EINVAL, "finalize: cannot build the CSR"};
  auto fin = co_await post(finalize, finalize_payload(*csr), "finalize");
  if (!fin) co_return fin.error();
  if (fin->status != 200) co_return step_error("finalize", fin.value());
  auto valid = co_await poll(order_url, "finalize", "valid");
  if (!valid) co_return valid.error();
  std::string cert_url = str(parse_json(valid.value()), "certificate");
  if (cert_url.empty()) co_return rt::Error{rt::kErrProtocol, "finalize: no certificate URL in the order"};
  auto dl = co_await post(cert_url, "", "download", "application/pem-certificate-chain");
  if (!dl) co_return dl.error();
  if (dl->status != 200) co_return step_error("download", dl.value());
  CertPem out{dl->body, cert_key->to_pem()};
  if (!cert_usable(out, names, int64_t(std::time(nullptr))))
    co_return rt::Error{rt::kErrProtocol, "download: the CA's certificate does not match the order or the key"};
  co_return out;
}

}  // namespace alk::acme
