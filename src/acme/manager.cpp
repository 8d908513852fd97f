#include "acme/manager.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <ctime>

#include "runtime/reactor.hpp"

namespace alk::acme {

namespace {

// The cache is read at start-up and written once per issuance: a few small local files, so
// plain syscalls here cost less than the ring round trips would.

void log_line(const std::string &line) { std::fprintf(stderr, "acme: %s\n", line.c_str()); }

int64_t now_s() { return int64_t(std::time(nullptr)); }

uint64_t random64() {
  uint64_t v = 0;
  RAND_bytes(reinterpret_cast<uint8_t *>(&v), sizeof v);
  return v;
}

std::string utc(int64_t t) {
  time_t tt = time_t(t);
  struct tm tm {};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string join(const std::vector<std::string> &v) {
  std::string out;
  for (const auto &s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

rt::Result<void> make_dirs(const std::string &path) {
  for (size_t i = 1; i <= path.size(); ++i) {
    if (i < path.size() && path[i] != '/') continue;
    std::string part = path.substr(0, i);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return rt::errno_error(errno, "acme: cannot create " + part);
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return rt::Error{ENOTDIR, "acme: " + path + " is not a directory"};
  // The account key lives here: nobody else may list or enter it.
  if ((st.st_mode & 077) != 0 && ::chmod(path.c_str(), 0700) != 0)
    return rt::errno_error(errno, "acme: cannot restrict " + path + " to mode 0700");
  return {};
}

// nullopt when the file does not exist; an error when it exists but cannot be read.
rt::Result<std::optional<std::string>> read_small_file(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<std::string>();
    return rt::errno_error(errno, "acme: cannot read " + path);
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0 || out.size() > 1024 * 1024) break;
    out.append(buf, size_t(n));
  }
  ::close(fd);
  return std::optional<std::string>(std::move(out));
}

// cache_dir/<host>[_port]: certificates from staging never pass for production ones.
std::string ca_dir_name(const std::string &directory) {
  auto u = parse_url(directory);
  if (!u) return "unknown-ca";
  std::string name;
  for (char c : u->host) name += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') ? c : '_';
  if (u->port != (u->https ? 443 : 80)) name += "_" + std::to_string(u->port);
  return name;
}

}  // namespace

rt::Result<void> write_private_file(const std::string &path, std::string_view data) {
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return rt::errno_error(errno, "acme: cannot write " + tmp);
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlink(tmp.c_str());
      return rt::errno_error(e, "acme: cannot write " + tmp);
    }
    off += size_t(n);
  }
  int e = ::fsync(fd) == 0 ? 0 : errno;
  ::close(fd);
  if (e == 0 && ::rename(tmp.c_str(), path.c_str()) != 0) e = errno;
  if (e) {
    ::unlink(tmp.c_str());
    return rt::errno_error(e, "acme: cannot write " + path);
  }
  return {};
}

rt::Result<std::unique_ptr<Manager>> Manager::open(ManagerConfig cfg) {
  if (cfg.domains.empty()) return rt::Error{EINVAL, "acme: no domain"};
  std::unique_ptr<Manager> m(new Manager(std::move(cfg)));
  m->dir_ = m->cfg_.cache_dir + "/" + ca_dir_name(m->cfg_.directory);
  if (auto r = make_dirs(m->dir_); !r) return r.error();
  const std::string key_path = m->dir_ + "/account.key";
  auto key_text = read_small_file(key_path);
  if (!key_text) return key_text.error();
  if (key_text.value()) {
    auto k = EcKey::from_pem(**key_text);
    if (!k) return rt::Error{EINVAL, "acme: account key " + key_path + ": " + k.error().what};
    m->account_.emplace(std::move(k.value()));
  } else {
    auto k = EcKey::generate();
    if (!k) return k.error();
    if (auto w = write_private_file(key_path, k->to_pem()); !w) return w.error();
    m->account_.emplace(std::move(k.value()));
  }
  auto chain = read_small_file(m->cert_path());
  auto key = read_small_file(m->key_path());
  if (chain && key && chain.value() && key.value()) {
    CertPem cached{**chain, **key};
    if (cert_usable(cached, m->cfg_.domains, now_s())) {
      auto info = cert_info(cached.chain);
      log_line("using the cached certificate " + m->cert_path() + " for " + join(m->cfg_.domains) +
               " valid until " + utc(info->not_after));
      m->current_ = std::move(cached);
    } else {
      log_line("the cached certificate " + m->cert_path() + " is expired, not for " + join(m->cfg_.domains) +
               " or does not match its key: requesting a new one");
    }
  }
  ClientConfig cc;
  cc.directory = m->cfg_.directory;
  cc.email = m->cfg_.email;
  cc.http.ca_file = m->cfg_.ca_file;
  cc.http01 = m->cfg_.http01;
  m->client_ = std::make_unique<Client>(cc, *m->account_);
  return m;
}

std::string Manager::cert_path() const { return dir_ + "/" + cfg_.domains.front() + ".crt"; }
std::string Manager::key_path() const { return dir_ + "/" + cfg_.domains.front() + ".key"; }

std::optional<CertPem> Manager::challenge_cert(std::string_view server_name) const {
  auto it = alpn_.find(server_name);
  if (it == alpn_.end()) return std::nullopt;
  return it->second;
}

std::optional<std::string> Manager::http01_answer(std::string_view token) const {
  auto it = http01_.find(token);
  if (it == http01_.end()) return std::nullopt;
  return it->second;
}

void Manager::add_tls_alpn(const std::string &domain, std::string key_authorization) {
  auto c = self_signed(domain, key_authorization);
  if (c) alpn_[domain] = std::move(*c);
}

void Manager::add_http01(const std::string &token, std::string key_authorization) {
  http01_[token] = std::move(key_authorization);
}

void Manager::remove(const std::string &domain, const std::string &token) {
  alpn_.erase(domain);
  http01_.erase(token);
}

rt::Task<rt::Result<void>> Manager::obtain() {
  if (!started_) {
    auto s = co_await client_->start();
    if (!s) co_return s;
    started_ = true;
  }
  auto cert = co_await client_->issue(cfg_.domains, *this);
  if (!cert) {
    // The account or the directory may have changed under us: start over next time.
    started_ = false;
    co_return cert.error();
  }
  auto info = cert_info(cert->chain);
  // The key first: a crash between the two writes leaves a pair that fails cert_usable, not
  // a certificate served with the wrong key.
  if (auto w = write_private_file(key_path(), cert->key); !w) log_line(w.error().what);
  if (auto w = write_private_file(cert_path(), cert->chain); !w) log_line(w.error().what);
  log_line("certificate issued for " + join(cfg_.domains) + " serial=" + info->serial_hex + " valid " +
           utc(info->not_before) + " to " + utc(info->not_after));
  current_ = std::move(cert.value());
  if (install_) install_(*current_);
  co_return rt::Result<void>{};
}

rt::Task<void> Manager::run(bool until_certificate) {
  unsigned failures = 0;
  const uint64_t jitter = random64();  // one draw per process: the renewal time stays put
  for (;;) {
    int64_t now = now_s();
    if (until_certificate && current_) co_return;
    if (current_) {
      auto info = cert_info(current_->chain);
      int64_t due = info ? renewal_time(info->not_before, info->not_after, jitter) : now;
      if (now < due) {
        // Re-checked at least hourly: the wall clock may jump (suspend, NTP).
        int64_t wait = std::min<int64_t>(due - now, 3600);
        int r = co_await rt::sleep_for(std::chrono::seconds(wait));
        if (r == -ECANCELED) co_return;
        if (now_s() < due) continue;
      }
      log_line("renewing the certificate for " + join(cfg_.domains) + " (valid until " +
               utc(info ? info->not_after : now) + ")");
    } else {
      log_line("requesting a certificate for " + join(cfg_.domains) + " from " + cfg_.directory);
    }
    auto r = co_await obtain();
    if (r) {
      failures = 0;
      continue;
    }
    if (r.error().code == ECANCELED) co_return;
    // Retry sooner than the backoff would when the certificate in use runs out before it.
    int64_t left = 0;
    std::string serving = "no certificate to serve yet";
    if (current_) {
      auto info = cert_info(current_->chain);
      if (info && info->not_after > now_s()) {
        left = std::max<int64_t>((info->not_after - now_s()) / 4, 1);
        serving = "still serving the certificate valid until " + utc(info->not_after);
      } else {
        serving = "the certificate in use has expired";
      }
    }
    int64_t delay = retry_delay(failures++, random64(), left);
    if (r.error().code == kErrRateLimited) delay = std::max<int64_t>(delay, 3600);
    log_line(r.error().what + "; " + serving + "; retrying in " + std::to_string(delay) + " s");
    int s = co_await rt::sleep_for(std::chrono::seconds(delay));
    if (s == -ECANCELED) co_return;
  }
}

}  // namespace alk::acme
