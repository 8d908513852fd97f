#include "socks5/credentials_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "runtime/fd.hpp"

namespace alk::socks5 {

namespace {
// USER (255) ':' PASS (255) CR LF, with room to spare: nothing longer can be valid.
constexpr size_t kMaxRead = 1024;
}  // namespace

rt::Result<net::UserPass> parse_credentials_file(std::string_view text, unsigned mode, const std::string &path) {
  if (mode & (S_IROTH | S_IWOTH | S_IXOTH)) {
    char m[8];
    std::snprintf(m, sizeof m, "%04o", mode & 07777);
    return rt::Error{EACCES, path + " is accessible by other users (mode " + m + "); run: chmod o= " + path};
  }
  auto line = text.substr(0, text.find('\n'));
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  if (line.empty()) return rt::Error{EINVAL, "no USER:PASS on the first line of " + path};
  std::string err;
  auto up = net::parse_user_pass(line, &err);
  if (!up) return rt::Error{EINVAL, err + " in " + path};
  return *up;
}

rt::Result<net::UserPass> load_credentials_file(const std::string &path) {
  rt::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return rt::Error{errno, "cannot read --socks5-auth-file " + path + ": " + std::strerror(errno)};
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
    return rt::Error{EINVAL, "--socks5-auth-file " + path + " is not a regular file"};
  std::string text(kMaxRead, '\0');
  ssize_t n = ::read(fd.get(), text.data(), text.size());
  if (n < 0) return rt::Error{errno, "cannot read --socks5-auth-file " + path + ": " + std::strerror(errno)};
  text.resize(size_t(n));
  return parse_credentials_file(text, st.st_mode, path);
}

}  // namespace alk::socks5
