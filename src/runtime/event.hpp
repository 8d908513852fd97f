// A level-triggered, single-thread async event: coroutines wait until it is set.
// set() never resumes a waiter inline: waiters go to the reactor's ready queue, so it is
// safe to call from inside library callbacks (BoringSSL, ngtcp2) deep in another stack.
#pragma once

#include <coroutine>

#include "runtime/reactor.hpp"
#include "runtime/task.hpp"

namespace alk::rt {

class Event {
 public:
  Event() = default;
  Event(const Event &) = delete;
  Event &operator=(const Event &) = delete;
  ~Event() {
    // Waiters can only outlive the event by a bug in their owner; resume them as cancelled.
    while (head_) wake(head_, false);
  }

  bool is_set() const { return set_; }
  void reset() { set_ = false; }
  void set() {
    set_ = true;
    while (head_) wake(head_, true);
  }

  struct Waiter : Cancelable {
    Event *ev;
    std::coroutine_handle<> h;
    CancelState *cs = nullptr;
    Waiter *next = nullptr, *prev = nullptr;
    bool fired = false;

    explicit Waiter(Event *e) : ev(e) {}
    bool await_ready() noexcept { return ev->set_; }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> caller) {
      cs = cancel_state_of(caller);
      if (cs && cs->cancelled) return false;
      h = caller;
      ev->link(this);
      if (cs) cs->waiting_on = this;
      return true;
    }
    // True when the event was set, false when the wait was cancelled.
    bool await_resume() noexcept {
      if (cs && cs->waiting_on == this) cs->waiting_on = nullptr;
      return ev ? ev->set_ : fired;
    }
    void request_cancel() override {
      if (ev) ev->wake(this, false);
    }
  };

  // Resumes with true once set, false if the waiting task is cancelled first.
  Waiter wait() { return Waiter(this); }

 private:
  void link(Waiter *w) {
    w->next = head_;
    if (head_) head_->prev = w;
    head_ = w;
  }
  void wake(Waiter *w, bool fired) {
    if (w->prev) w->prev->next = w->next;
    else head_ = w->next;
    if (w->next) w->next->prev = w->prev;
    w->next = w->prev = nullptr;
    w->fired = fired;
    w->ev = nullptr;  // the event may be gone by the time the waiter runs
    if (w->cs && w->cs->waiting_on == w) w->cs->waiting_on = nullptr;
    Reactor::current().defer(w->h);
  }
  bool set_ = false;
  Waiter *head_ = nullptr;
};

}  // namespace alk::rt
