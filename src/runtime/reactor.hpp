// The one io_uring of the process and the awaitable operations on it.
//
// Every op is an awaiter living in the suspended coroutine's frame; its address is the SQE's
// user_data. Submissions are batched: SQEs queue up while coroutines run and go to the kernel
// once per loop turn. Cancelling a task submits IORING_OP_ASYNC_CANCEL for the op it waits on;
// the op still completes (with -ECANCELED) before the frame can go away, so the kernel never
// touches freed memory.
#pragma once

#include <liburing.h>
#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>

#include "runtime/task.hpp"

namespace alk::rt {

using Clock = std::chrono::steady_clock;
using Duration = std::chrono::nanoseconds;

class Reactor;

// Base of everything whose completion arrives as a CQE.
struct Completion {
  virtual void complete(int32_t res, uint32_t flags) = 0;

 protected:
  ~Completion() = default;
};

class Reactor {
 public:
  explicit Reactor(unsigned entries = 4096);
  ~Reactor();
  Reactor(const Reactor &) = delete;
  Reactor &operator=(const Reactor &) = delete;

  // The reactor of this thread (there is one per process in alknet; tests make their own).
  static Reactor &current();

  io_uring_sqe *sqe();  // never null: flushes the SQ when full
  void cancel(Completion *target);
  void defer(std::coroutine_handle<> h) { ready_.push_back(h); }

  // Run until pred() is true. Nested calls are allowed (used only by teardown paths).
  void run_until(const std::function<bool()> &pred);
  // One turn: submit, wait for at least one event (unless work is ready), dispatch a batch.
  void run_once(bool block = true);
  // Pending SQEs + in-flight ops counted by completions still owed (for tests and shutdown).
  uint64_t inflight() const { return inflight_; }
  io_uring *ring() { return &ring_; }

 private:
  friend struct OpBase;
  struct Reaped {
    uint64_t data;
    int32_t res;
    uint32_t flags;
  };
  io_uring ring_{};
  std::deque<std::coroutine_handle<>> ready_;
  // CQEs taken off the ring but not dispatched yet. A member, not a local: a completion may
  // run a nested loop (a Scope or Acceptor destructor waiting for its children), and that
  // loop must dispatch the rest of the batch, which may hold exactly the CQEs it waits for.
  std::deque<Reaped> reaped_;
  uint64_t inflight_ = 0;
  Reactor *prev_ = nullptr;
};

// One single-shot io_uring operation awaited by one coroutine.
struct OpBase : Completion, Cancelable {
  std::coroutine_handle<> waiter;
  CancelState *cs = nullptr;
  int32_t res = 0;
  uint32_t cqe_flags = 0;
  Duration timeout{0};
  __kernel_timespec ts{};
  bool has_timeout = false;

  void complete(int32_t r, uint32_t f) override;
  void request_cancel() override { Reactor::current().cancel(this); }

 protected:
  // Returns false when the op must not be submitted (task already cancelled).
  template <class P>
  bool submit(std::coroutine_handle<P> h, io_uring_sqe *s) {
    waiter = h;
    cs = cancel_state_of(h);
    finish_submit(s);
    return true;
  }
  void finish_submit(io_uring_sqe *s);
  int32_t result();
};

// Generic op: Prep is a callable that fills an SQE.
template <class Prep>
struct Op : OpBase {
  Prep prep;
  explicit Op(Prep p) : prep(std::move(p)) {}
  Op &&with_timeout(Duration d) && {
    timeout = d;
    has_timeout = d.count() > 0;
    return std::move(*this);
  }
  bool await_ready() noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (auto *c = cancel_state_of(h); c && c->cancelled) {
      res = -ECANCELED;
      return false;
    }
    auto *s = Reactor::current().sqe();
    prep(s);
    return submit(h, s);
  }
  int32_t await_resume() { return result(); }
};

template <class Prep>
Op<Prep> make_op(Prep p) {
  return Op<Prep>(std::move(p));
}

// -- the operations ---------------------------------------------------------------------
inline auto recv(int fd, std::span<std::byte> buf, int flags = 0) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_recv(s, fd, buf.data(), buf.size(), flags); });
}
inline auto send(int fd, std::span<const std::byte> buf, int flags = MSG_NOSIGNAL) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_send(s, fd, buf.data(), buf.size(), flags); });
}
inline auto read(int fd, std::span<std::byte> buf, uint64_t off = uint64_t(-1)) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_read(s, fd, buf.data(), buf.size(), off); });
}
inline auto write(int fd, std::span<const std::byte> buf, uint64_t off = uint64_t(-1)) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_write(s, fd, buf.data(), buf.size(), off); });
}
inline auto recvmsg(int fd, msghdr *msg, unsigned flags = 0) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_recvmsg(s, fd, msg, flags); });
}
inline auto sendmsg(int fd, const msghdr *msg, unsigned flags = MSG_NOSIGNAL) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_sendmsg(s, fd, msg, flags); });
}
inline auto accept(int fd, sockaddr *addr = nullptr, socklen_t *len = nullptr, int flags = SOCK_CLOEXEC | SOCK_NONBLOCK) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_accept(s, fd, addr, len, flags); });
}
inline auto connect(int fd, const sockaddr *addr, socklen_t len) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_connect(s, fd, addr, len); });
}
// Waits for poll events on fd; returns the revents mask or -errno.
inline auto poll(int fd, unsigned events) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_poll_add(s, fd, events); });
}
inline auto close(int fd) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_close(s, fd); });
}
inline auto shutdown(int fd, int how) {
  return make_op([=](io_uring_sqe *s) { io_uring_prep_shutdown(s, fd, how); });
}

// Sleeps for d; returns 0 when the time passed, -ECANCELED when cancelled.
struct SleepOp : OpBase {
  explicit SleepOp(Duration d) {
    ts.tv_sec = d.count() / 1'000'000'000;
    ts.tv_nsec = d.count() % 1'000'000'000;
  }
  bool await_ready() noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    if (auto *c = cancel_state_of(h); c && c->cancelled) {
      res = -ECANCELED;
      return false;
    }
    auto *s = Reactor::current().sqe();
    io_uring_prep_timeout(s, &ts, 0, 0);
    return submit(h, s);
  }
  int32_t await_resume() {
    int32_t r = result();
    return r == -ETIME ? 0 : r;
  }
};
inline SleepOp sleep_for(Duration d) { return SleepOp(d); }

// Lets every other ready coroutine and completion run before this one goes on: the fairness
// budget of a relay that always has data.
struct Yield {
  bool await_ready() noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) { Reactor::current().defer(h); }
  void await_resume() noexcept {}
};
inline Yield yield() { return {}; }

}  // namespace alk::rt
