// SIGINT/SIGTERM arrive as reads on a signalfd, so shutdown is an ordinary awaited event.
#pragma once

#include "runtime/fd.hpp"
#include "runtime/task.hpp"

namespace alk::rt {

class SignalWatch {
 public:
  // Blocks SIGINT and SIGTERM for the thread (so they queue on the fd) and ignores SIGPIPE.
  SignalWatch();
  // Resumes with the signal number, or -errno (e.g. -ECANCELED).
  Task<int> next();

 private:
  UniqueFd fd_;
};

}  // namespace alk::rt
