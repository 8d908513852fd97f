#pragma once
#include <dirent.h>

#include <cstddef>

namespace alk::test {
// Number of open fds of this process, for leak checks.
inline size_t open_fd_count() {
  size_t n = 0;
  if (DIR *d = opendir("/proc/self/fd")) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n;
}
}  // namespace alk::test
