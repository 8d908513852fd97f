#include "stream/stream.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <memory>

#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"

namespace alk::stream {

rt::Task<ssize_t> FdStream::read(std::span<std::byte> buf) {
  int r = co_await rt::recv(fd_.get(), buf);
  co_return r;
}

rt::Task<ssize_t> FdStream::write(std::span<const std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    int r = co_await rt::send(fd_.get(), buf.subspan(done));
    if (r < 0) co_return r;
    if (r == 0) co_return -EPIPE;
    done += size_t(r);
  }
  co_return ssize_t(done);
}

rt::Task<int> FdStream::shutdown_write() {
  if (::shutdown(fd_.get(), SHUT_WR) != 0) co_return -errno;
  co_return 0;
}

namespace {

// One direction. Every 16 full buffers it yields, so a relay that always has data cannot
// starve the other connections on the reactor.
rt::Task<void> copy(Stream &from, Stream &to, size_t buf_size, uint64_t &count, int &error, rt::Scope &both) {
  // Not zeroed: an idle tunnel then costs only the pages a recv has actually touched.
  auto buf = std::make_unique_for_overwrite<std::byte[]>(buf_size);
  unsigned budget = 16;
  ssize_t failure = 0;
  for (;;) {
    ssize_t n = co_await from.read(std::span(buf.get(), buf_size));
    if (n == 0) {
      int r = co_await to.shutdown_write();
      if (r < 0 && r != -ENOTCONN && error == 0) error = -r;
      co_return;
    }
    if (n < 0) {
      failure = n;
      break;
    }
    ssize_t w = co_await to.write(std::span<const std::byte>(buf.get(), size_t(n)));
    if (w < 0) {
      failure = w;
      break;
    }
    count += uint64_t(n);
    if (--budget == 0) {
      budget = 16;
      co_await rt::yield();
    }
    continue;
  }
  // Failure (or cancellation): record the first error and stop the other direction too.
  if (error == 0) error = int(-failure);
  both.cancel();
}

// Awaits t without handing it the awaiting task's CancelState (a type-erased caller handle
// has none), so a cancelled task can still wait for children it has cancelled itself.
struct Shielded {
  rt::Task<bool> &t;  // a reference: gcc 12 destroys a temporary Task inside co_await twice
  bool await_ready() noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) noexcept {
    return rt::Task<bool>::Awaiter{t.handle()}.await_suspend(caller);
  }
  bool await_resume() { return t.handle().promise().take(); }
};

}  // namespace

rt::Task<PumpStats> pump(Stream &a, Stream &b, size_t buf_size) {
  PumpStats st;
  rt::Scope both;
  both.spawn(copy(a, b, buf_size, st.a_to_b, st.error, both));
  both.spawn(copy(b, a, buf_size, st.b_to_a, st.error, both));
  bool joined = co_await both.join();
  if (!joined) {
    // We were cancelled. Scope::close() would return at once (its join sees our cancelled
    // state), reporting half-updated stats with error 0 and leaving the reaping to ~Scope.
    // Cancel both directions and wait, shielded, until they have really ended.
    both.cancel();
    rt::Task<bool> rest = both.join();
    co_await Shielded{rest};
  }
  co_return st;
}

}  // namespace alk::stream
