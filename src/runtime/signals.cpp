#include "runtime/signals.hpp"

#include <sys/signalfd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/reactor.hpp"

namespace alk::rt {

SignalWatch::SignalWatch() {
  std::signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &set, nullptr) != 0) throw std::runtime_error("sigprocmask failed");
  fd_.reset(signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!fd_) throw std::runtime_error(std::string("signalfd: ") + std::strerror(errno));
}

Task<int> SignalWatch::next() {
  signalfd_siginfo info{};
  int r = co_await read(fd_.get(), std::as_writable_bytes(std::span(&info, 1)));
  if (r < 0) co_return r;
  if (r != sizeof info) co_return -EIO;
  co_return int(info.ssi_signo);
}

}  // namespace alk::rt
