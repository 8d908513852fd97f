// Value-or-error for layers above raw ops (raw ops return -errno ints). The error keeps an
// errno-style code, so protocol layers can map it (SOCKS REP, SSH reason), and a human text.
#pragma once

#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace alk::rt {

struct Error {
  int code = 0;  // positive errno value, or one of the codes below
  std::string what;
};

// Codes beyond errno for conditions errno has no name for.
inline constexpr int kErrDnsNotFound = 100000;   // name does not exist
inline constexpr int kErrDnsFailure = 100001;    // resolver failure (server down, timeout)
inline constexpr int kErrProtocol = 100002;      // peer spoke the protocol wrong
inline constexpr int kErrNotAllowed = 100003;    // refused by policy

inline Error errno_error(int err, std::string context) {
  return Error{err, std::move(context) + ": " + std::strerror(err)};
}

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T v) : v_(std::in_place_index<0>, std::move(v)) {}
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T &value() & { return std::get<0>(v_); }
  T &&value() && { return std::get<0>(std::move(v_)); }
  T *operator->() { return &std::get<0>(v_); }
  T &operator*() { return std::get<0>(v_); }
  const Error &error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : err_(std::move(e)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error &error() const { return err_; }

 private:
  Error err_;
  bool ok_ = true;
};

}  // namespace alk::rt
