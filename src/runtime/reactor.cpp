#include "runtime/reactor.hpp"

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace alk::rt {

namespace {
thread_local Reactor *g_current = nullptr;
// user_data of SQEs whose completion nobody waits for (cancel requests, linked timeouts).
constexpr uint64_t kIgnored = 0;
}  // namespace

Reactor::Reactor(unsigned entries) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER;
  int r = io_uring_queue_init_params(entries, &ring_, &p);
  if (r < 0) {
    p = io_uring_params{};
    r = io_uring_queue_init_params(entries, &ring_, &p);
  }
  if (r < 0) throw std::runtime_error(std::string("io_uring_queue_init: ") + std::strerror(-r));
  prev_ = g_current;
  g_current = this;
}

Reactor::~Reactor() {
  io_uring_queue_exit(&ring_);
  g_current = prev_;
}

Reactor &Reactor::current() {
  if (!g_current) throw std::logic_error("no reactor on this thread");
  return *g_current;
}

io_uring_sqe *Reactor::sqe() {
  io_uring_sqe *s = io_uring_get_sqe(&ring_);
  while (!s) {
    io_uring_submit(&ring_);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void Reactor::cancel(Completion *target) {
  io_uring_sqe *s = sqe();
  io_uring_prep_cancel(s, target, 0);
  io_uring_sqe_set_data64(s, kIgnored);
}

void Reactor::run_once(bool block) {
  // Coroutines deferred by yield() run first, but only those queued before this turn, so a
  // coroutine that keeps yielding cannot starve the completions.
  bool ran = !ready_.empty();
  for (size_t n = ready_.size(); n > 0 && !ready_.empty(); --n) {
    auto h = ready_.front();
    ready_.pop_front();
    h.resume();
  }
  int r;
  if (block && !ran && ready_.empty() && reaped_.empty())
    r = io_uring_submit_and_wait(&ring_, 1);
  else
    r = io_uring_submit(&ring_);
  if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
    throw std::runtime_error(std::string("io_uring_submit: ") + std::strerror(-r));

  // Copy the batch out first: resuming a coroutine may submit and even reap recursively.
  io_uring_cqe *cqes[256];
  unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 256);
  for (unsigned i = 0; i < n; ++i) reaped_.push_back({cqes[i]->user_data, cqes[i]->res, cqes[i]->flags});
  io_uring_cq_advance(&ring_, n);
  // Dispatch at most what was queued when this turn began (a nested loop may take some).
  for (size_t left = reaped_.size(); left > 0 && !reaped_.empty(); --left) {
    Reaped d = reaped_.front();
    reaped_.pop_front();
    if (d.data == kIgnored) continue;
    reinterpret_cast<Completion *>(d.data)->complete(d.res, d.flags);
  }
}

void Reactor::run_until(const std::function<bool()> &pred) {
  while (!pred()) run_once(true);
}

void OpBase::finish_submit(io_uring_sqe *s) {
  io_uring_sqe_set_data(s, static_cast<Completion *>(this));
  auto &r = Reactor::current();
  ++r.inflight_;
  if (has_timeout) {
    ts.tv_sec = timeout.count() / 1'000'000'000;
    ts.tv_nsec = timeout.count() % 1'000'000'000;
    s->flags |= IOSQE_IO_LINK;
    io_uring_sqe *t = r.sqe();
    io_uring_prep_link_timeout(t, &ts, 0);
    io_uring_sqe_set_data64(t, kIgnored);
  }
  if (cs) cs->waiting_on = this;
}

void OpBase::complete(int32_t r, uint32_t f) {
  res = r;
  cqe_flags = f;
  --Reactor::current().inflight_;
  if (cs && cs->waiting_on == this) cs->waiting_on = nullptr;
  waiter.resume();
}

int32_t OpBase::result() {
  // A linked timeout cancels the op; report that as a timeout unless the task was cancelled.
  if (res == -ECANCELED && has_timeout && !(cs && cs->cancelled)) return -ETIMEDOUT;
  if (res == -EINTR && has_timeout) return -ETIMEDOUT;
  return res;
}

}  // namespace alk::rt
