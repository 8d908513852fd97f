// Task<T>: a lazy, move-only coroutine that starts when awaited and resumes its awaiter by
// symmetric transfer, so chains of synchronous completions never grow the stack.
// Cancellation is cooperative and per task tree: every frame in a chain points at the
// CancelState of the detached root that owns it (see scope.hpp), and whatever the chain is
// suspended on registers itself there so cancel() can interrupt it.
#pragma once

#include <coroutine>
#include <exception>
#include <utility>
#include <variant>

namespace alk::rt {

// Something a task is suspended on that can be interrupted: an io_uring op, an Event wait.
struct Cancelable {
  virtual void request_cancel() = 0;

 protected:
  ~Cancelable() = default;
};

struct CancelState {
  bool cancelled = false;
  Cancelable *waiting_on = nullptr;

  void cancel() {
    if (cancelled) return;
    cancelled = true;
    if (waiting_on) waiting_on->request_cancel();
  }
};

struct PromiseBase {
  CancelState *cancel = nullptr;
  std::coroutine_handle<> continuation;
};

// Any awaiter that wants the task's CancelState takes the awaiting handle this way.
template <class P>
CancelState *cancel_state_of(std::coroutine_handle<P> h) {
  if constexpr (std::is_base_of_v<PromiseBase, P>)
    return h.promise().cancel;
  else
    return nullptr;
}

template <class T = void>
class Task;

namespace detail {

struct FinalAwaiter {
  bool await_ready() noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
    auto next = h.promise().continuation;
    return next ? next : std::noop_coroutine();
  }
  void await_resume() noexcept {}
};

template <class T>
struct Promise : PromiseBase {
  std::variant<std::monostate, T, std::exception_ptr> result;

  Task<T> get_return_object() noexcept;
  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  template <class U>
  void return_value(U &&v) {
    result.template emplace<1>(std::forward<U>(v));
  }
  void unhandled_exception() noexcept { result.template emplace<2>(std::current_exception()); }
  T take() {
    if (result.index() == 2) std::rethrow_exception(std::get<2>(result));
    return std::move(std::get<1>(result));
  }
};

template <>
struct Promise<void> : PromiseBase {
  std::exception_ptr error;

  Task<void> get_return_object() noexcept;
  std::suspend_always initial_suspend() noexcept { return {}; }
  FinalAwaiter final_suspend() noexcept { return {}; }
  void return_void() noexcept {}
  void unhandled_exception() noexcept { error = std::current_exception(); }
  void take() {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace detail

template <class T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::Promise<T>;
  using Handle = std::coroutine_handle<promise_type>;

  Task() = default;
  explicit Task(Handle h) : h_(h) {}
  Task(Task &&o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task &operator=(Task &&o) noexcept {
    if (this != &o) {
      reset();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task &) = delete;
  Task &operator=(const Task &) = delete;
  ~Task() { reset(); }

  explicit operator bool() const { return bool(h_); }
  bool done() const { return h_ && h_.done(); }

  struct Awaiter {
    Handle h;
    bool await_ready() noexcept { return !h || h.done(); }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> caller) noexcept {
      h.promise().continuation = caller;
      h.promise().cancel = cancel_state_of(caller);
      return h;
    }
    T await_resume() { return h.promise().take(); }
  };
  Awaiter operator co_await() && noexcept { return Awaiter{h_}; }

  // For the scope machinery: start/inspect a task that is not awaited by a coroutine.
  Handle handle() const { return h_; }

 private:
  void reset() {
    if (h_) h_.destroy();
    h_ = {};
  }
  Handle h_;
};

namespace detail {
template <class T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}
}  // namespace detail

// Awaitable that returns the current task's CancelState (or null outside a task tree).
struct CurrentCancelState {
  CancelState *cs = nullptr;
  bool await_ready() noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) noexcept {
    cs = cancel_state_of(h);
    return false;
  }
  CancelState *await_resume() noexcept { return cs; }
};

}  // namespace alk::rt
