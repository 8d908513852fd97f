#include "stream/stream.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

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

namespace {
// A non-waiting call's result as the Stream interface reports it.
ssize_t now(ssize_t r) { return r >= 0 ? r : (errno == EWOULDBLOCK ? -EAGAIN : -errno); }
}  // namespace

ssize_t FdStream::try_read(std::span<std::byte> buf) {
  return now(::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT));
}

ssize_t FdStream::try_write(std::span<const std::span<const std::byte>> bufs) {
  iovec iov[64];
  msghdr m{};
  m.msg_iov = iov;
  for (const auto &b : bufs.first(std::min<size_t>(bufs.size(), std::size(iov))))
    iov[m.msg_iovlen++] = {const_cast<std::byte *>(b.data()), b.size()};
  return now(::sendmsg(fd_.get(), &m, MSG_DONTWAIT | MSG_NOSIGNAL));
}

rt::Task<int> FdStream::wait_readable() {
  const int r = co_await rt::poll(fd_.get(), POLLIN);  // POLLHUP/POLLERR also end the wait
  co_return r < 0 ? r : 0;
}

rt::Task<int> FdStream::shutdown_write() {
  if (::shutdown(fd_.get(), SHUT_WR) != 0) co_return -errno;
  co_return 0;
}

namespace {

// Relay buffers, recycled on the reactor thread. Bulk directions take one back right away
// (LIFO, so it is still in cache); at most kKeep stay parked, the rest go back to malloc.
class BufferPool {
 public:
  class Lease {
   public:
    Lease() = default;
    Lease(BufferPool *pool, std::unique_ptr<std::byte[]> buf, size_t size)
        : pool_(pool), buf_(std::move(buf)), size_(size) {}
    Lease(Lease &&) = default;
    Lease &operator=(Lease &&o) {
      give_back();
      pool_ = o.pool_;
      buf_ = std::move(o.buf_);
      size_ = o.size_;
      return *this;
    }
    ~Lease() { give_back(); }
    explicit operator bool() const { return buf_ != nullptr; }
    std::span<std::byte> span() const { return {buf_.get(), size_}; }

   private:
    void give_back() {
      if (buf_) pool_->put(std::move(buf_), size_);
    }
    BufferPool *pool_ = nullptr;
    std::unique_ptr<std::byte[]> buf_;
    size_t size_ = 0;
  };

  size_t in_use() const { return in_use_; }

  Lease take(size_t size) {
    ++in_use_;
    for (size_t i = free_.size(); i-- > 0;) {
      if (free_[i].second != size) continue;
      auto buf = std::move(free_[i].first);
      free_.erase(free_.begin() + std::ptrdiff_t(i));
      return Lease(this, std::move(buf), size);
    }
    // Not zeroed: a fresh buffer costs only the pages a read actually touches.
    return Lease(this, std::make_unique_for_overwrite<std::byte[]>(size), size);
  }

 private:
  static constexpr size_t kKeep = 32;
  void put(std::unique_ptr<std::byte[]> buf, size_t size) {
    --in_use_;
    if (free_.size() < kKeep) free_.emplace_back(std::move(buf), size);
  }
  std::vector<std::pair<std::unique_ptr<std::byte[]>, size_t>> free_;
  size_t in_use_ = 0;
};

BufferPool &pool() {
  thread_local BufferPool p;  // one reactor per thread; a Lease never crosses threads
  return p;
}

// One direction. Every 16 full buffers it yields, so a relay that always has data cannot
// starve the other connections on the reactor.
rt::Task<void> copy(Stream &from, Stream &to, size_t buf_size, uint64_t &count, int &error, bool &failed,
                   rt::Scope &both) {
  BufferPool::Lease buf;
  unsigned budget = 16;
  ssize_t failure = 0;
  bool direct = true;  // until the source says it cannot read without waiting
  bool waited = false;  // for room, since room was last given
  for (;;) {
    // A source with its own receive buffer (an SSH channel) lends it: written from there,
    // the bytes are copied once less.
    std::span<const std::byte> data = from.peek();
    const bool lent = !data.empty();
    if (!lent && direct) {
      // A sink that lends room (an SSH channel: the packet being built) is filled straight
      // from the source, if the source has bytes ready: one copy fewer per byte. While the
      // session's output is full, wait for it to drain rather than take the copying path below.
      // As much as the sink's next piece takes (an SSH channel: its packet size and window); the
      // room is the sink's own memory, so buf_size does not bound it.
      auto room = to.write_room(SIZE_MAX);
      if (room.empty() && !waited) {
        buf = {};
        const int r = co_await to.wait_writable();
        if (r == 0) {
          waited = true;  // once: a sink that still has none goes through write(), which knows why
          continue;
        }
        if (r != -EOPNOTSUPP) {
          failure = r;
          break;
        }
        direct = false;  // lends no room
      }
      waited = false;
      if (!room.empty()) {
        const ssize_t n = from.try_read(room);
        to.commit_room(n > 0 ? size_t(n) : 0);
        direct = n != -EOPNOTSUPP;
        if (n > 0) {
          buf = {};
          count += size_t(n);
          if (--budget == 0) {
            budget = 16;
            co_await rt::yield();
          }
          continue;
        }
        if (n == 0) {
          int r = co_await to.shutdown_write();
          if (r < 0 && r != -ENOTCONN && error == 0) error = -r;
          co_return;
        }
        if (n == -EAGAIN) {
          buf = {};  // drained: wait without holding a buffer
          const int r = co_await from.wait_readable();
          if (r < 0) {
            failure = r;
            break;
          }
          continue;
        }
        if (direct) {
          failure = n;
          break;
        }
      }
    }
    if (lent) {
      buf = {};
    } else {
      if (!buf) {
        // Drained: wait for more without holding a buffer, so an idle tunnel costs none.
        const int r = co_await from.wait_readable();
        if (r < 0) {
          failure = r;
          break;
        }
        if (!from.peek().empty()) continue;  // lent, no buffer needed
        buf = pool().take(buf_size);
      }
      ssize_t n = co_await from.read(buf.span());
      if (n == 0) {
        int r = co_await to.shutdown_write();
        if (r < 0 && r != -ENOTCONN && error == 0) error = -r;
        co_return;
      }
      if (n < 0) {
        failure = n;
        break;
      }
      data = buf.span().first(size_t(n));
    }
    ssize_t w = co_await to.write(data);
    if (w < 0) {
      failure = w;
      break;
    }
    count += data.size();
    if (lent)
      from.consume(data.size());
    else if (data.size() < buf_size)
      buf = {};  // a short read: the source had no more for now; park the buffer while we wait
    if (--budget == 0) {
      budget = 16;
      co_await rt::yield();
    }
  }
  // Failure (or cancellation): record the first error and stop the other direction too.
  if (error == 0) error = int(-failure);
  failed = true;
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

size_t relay_buffers_in_use() { return pool().in_use(); }

rt::Task<PumpStats> pump(Stream &a, Stream &b, size_t buf_size) {
  PumpStats st;
  // A source that can hands what it receives straight to the other side while we run.
  struct Forwarding {
    Stream &a, &b;
    Forwarding(Stream &a, Stream &b, PumpStats &st) : a(a), b(b) {
      a.forward_to(&b, &st.a_to_b);
      b.forward_to(&a, &st.b_to_a);
    }
    ~Forwarding() {
      a.forward_to(nullptr, nullptr);
      b.forward_to(nullptr, nullptr);
    }
  } forwarding(a, b, st);
  rt::Scope both;
  bool failed = false;
  both.spawn(copy(a, b, buf_size, st.a_to_b, st.error, failed, both));
  both.spawn(copy(b, a, buf_size, st.b_to_a, st.error, failed, both));
  // A direction can fail before its first suspension (a reset socket read without waiting),
  // i.e. before the other one was spawned, which its cancel() then missed.
  if (failed) both.cancel();
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
