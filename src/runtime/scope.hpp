// Scope: owner of detached tasks. Every task spawned into a scope has its own CancelState;
// cancel() interrupts whatever each child waits on, and join() waits until all have returned,
// so no coroutine frame outlives its scope and no SQE points into freed memory.
#pragma once

#include <cstddef>
#include <string>

#include "runtime/event.hpp"
#include "runtime/task.hpp"

namespace alk::rt {

class Scope {
 public:
  Scope() = default;
  Scope(const Scope &) = delete;
  Scope &operator=(const Scope &) = delete;
  // Cancels what is left and, if a child still runs, turns the reactor until it has ended.
  // Coroutine code should prefer `co_await scope.close()`.
  ~Scope();

  // Starts t at once (it runs until its first suspension before spawn returns).
  void spawn(Task<void> t);
  void cancel();
  // Waits until every child has finished. Returns false if the waiter itself was cancelled.
  Task<bool> join();
  // cancel() then join().
  Task<void> close();
  size_t size() const { return count_; }
  bool empty() const { return count_ == 0; }
  // Children that ended by throwing; their what() went to stderr.
  size_t failures() const { return failures_; }

  struct Node {
    CancelState cs;
    Node *next = nullptr, *prev = nullptr;
  };

 private:
  friend struct RootAccess;
  void unlink(Node *n);
  Node *head_ = nullptr;
  size_t count_ = 0;
  size_t failures_ = 0;
  Event empty_;
};

// Runs t to completion on a fresh reactor turn loop: for main() and tests.
void run_blocking(Task<void> t);
template <class T>
T run_blocking_value(Task<T> t) {
  T out{};
  run_blocking([](Task<T> inner, T &o) -> Task<void> { o = co_await std::move(inner); }(std::move(t), out));
  return out;
}

}  // namespace alk::rt
