#include "runtime/scope.hpp"

#include <cstdio>
#include <exception>

#include "runtime/reactor.hpp"

namespace alk::rt {

struct RootAccess {
  static void link(Scope &s, Scope::Node *n) {
    n->next = s.head_;
    if (s.head_) s.head_->prev = n;
    s.head_ = n;
    ++s.count_;
    s.empty_.reset();
  }
  static void failed(Scope &s) { ++s.failures_; }
  static void unlink(Scope &s, Scope::Node *n) { s.unlink(n); }
};

namespace {

// The detached coroutine that owns one child; its frame frees itself at the end.
struct Root {
  struct promise_type : PromiseBase {
    Scope::Node node;
    Scope *scope = nullptr;
    promise_type() { cancel = &node.cs; }
    Root get_return_object() { return {std::coroutine_handle<promise_type>::from_promise(*this)}; }
    std::suspend_always initial_suspend() noexcept { return {}; }
    auto final_suspend() noexcept {
      struct Final {
        bool await_ready() noexcept { return false; }
        void await_suspend(std::coroutine_handle<promise_type> h) noexcept {
          Scope *s = h.promise().scope;
          Scope::Node *n = &h.promise().node;
          RootAccess::unlink(*s, n);
          h.destroy();
        }
        void await_resume() noexcept {}
      };
      return Final{};
    }
    void return_void() noexcept {}
    void unhandled_exception() noexcept {}
  };
  std::coroutine_handle<promise_type> h;
};

Root run_child(Task<void> t, Scope *scope) {
  try {
    co_await std::move(t);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "internal error: task failed: %s\n", e.what());
    RootAccess::failed(*scope);
  } catch (...) {
    std::fprintf(stderr, "internal error: task failed\n");
    RootAccess::failed(*scope);
  }
}

}  // namespace

void Scope::spawn(Task<void> t) {
  Root r = run_child(std::move(t), this);
  r.h.promise().scope = this;
  RootAccess::link(*this, &r.h.promise().node);
  r.h.resume();
}

void Scope::unlink(Node *n) {
  Node *next = n->next, *prev = n->prev;
  if (prev) prev->next = next;
  else head_ = next;
  if (next) next->prev = prev;
  if (--count_ == 0) empty_.set();
}

void Scope::cancel() {
  // Cancelling may resume nothing inline (ops complete later, events defer), so the list is
  // stable while we walk it.
  for (Node *n = head_; n; n = n->next) n->cs.cancel();
}

Task<bool> Scope::join() {
  while (count_ != 0) {
    bool woke = co_await empty_.wait();  // never co_await inside a condition: gcc 12 miscompiles it
    if (!woke) co_return false;
  }
  co_return true;
}

Task<void> Scope::close() {
  cancel();
  co_await join();
}

Scope::~Scope() {
  if (count_ == 0) return;
  cancel();
  Reactor::current().run_until([this] { return count_ == 0; });
}

void run_blocking(Task<void> t) {
  Scope s;
  bool done = false;
  std::exception_ptr err;
  auto wrapper = [](Task<void> inner, bool &d, std::exception_ptr &e) -> Task<void> {
    try {
      co_await std::move(inner);
    } catch (...) {
      e = std::current_exception();
    }
    d = true;
  };
  s.spawn(wrapper(std::move(t), done, err));
  Reactor::current().run_until([&] { return done; });
  if (err) std::rethrow_exception(err);
}

}  // namespace alk::rt
