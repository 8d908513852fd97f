#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "runtime/event.hpp"
#include "runtime/fd.hpp"
#include "runtime/reactor.hpp"
#include "runtime/scope.hpp"
#include "runtime/task.hpp"
#include "runtime_test_helpers.hpp"

using namespace alk::rt;
using namespace std::chrono_literals;

namespace {
Task<int> answer() { co_return 42; }
Task<int> add_one(int x) { co_return x + 1 + co_await answer() - 42; }
Task<void> thrower() {
  co_await yield();
  throw std::runtime_error("boom");
}
Task<int> deep(int n) {
  if (n == 0) co_return 0;
  co_return 1 + co_await deep(n - 1);
}
std::pair<UniqueFd, UniqueFd> make_pair() {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}
}  // namespace

TEST_CASE("task returns values and chains") {
  Reactor r;
  CHECK(run_blocking_value(add_one(1)) == 2);
}

TEST_CASE("task propagates exceptions to the awaiter") {
  Reactor r;
  bool caught = false;
  run_blocking([](bool &c) -> Task<void> {
    try {
      co_await thrower();
    } catch (const std::runtime_error &e) {
      c = std::strcmp(e.what(), "boom") == 0;
    }
  }(caught));
  CHECK(caught);
}

TEST_CASE("run_blocking rethrows an exception escaping the task") {
  Reactor r;
  CHECK_THROWS_AS(run_blocking(thrower()), std::runtime_error);
}

TEST_CASE("symmetric transfer: a deep synchronous chain does not overflow the stack") {
  Reactor r;
  CHECK(run_blocking_value(deep(100000)) == 100000);
}

TEST_CASE("sleep waits at least the asked time") {
  Reactor r;
  auto t0 = Clock::now();
  int res = run_blocking_value([]() -> Task<int> { co_return co_await sleep_for(30ms); }());
  CHECK(res == 0);
  CHECK(Clock::now() - t0 >= 30ms);
}

TEST_CASE("deadline on an op: recv with no data times out with -ETIMEDOUT") {
  Reactor r;
  auto [a, b] = make_pair();
  std::byte buf[16];
  auto t0 = Clock::now();
  int res = run_blocking_value([](int fd, std::span<std::byte> bb) -> Task<int> {
    co_return co_await recv(fd, bb).with_timeout(50ms);
  }(a.get(), buf));
  CHECK(res == -ETIMEDOUT);
  CHECK(Clock::now() - t0 >= 45ms);
  CHECK(Clock::now() - t0 < 2s);
}

TEST_CASE("deadline does not fire when the op completes in time") {
  Reactor r;
  auto [a, b] = make_pair();
  REQUIRE(::write(b.get(), "hi", 2) == 2);
  std::byte buf[16];
  int res = run_blocking_value([](int fd, std::span<std::byte> bb) -> Task<int> {
    co_return co_await recv(fd, bb).with_timeout(1s);
  }(a.get(), buf));
  CHECK(res == 2);
}

TEST_CASE("send and recv move bytes through a socketpair") {
  Reactor r;
  auto [a, b] = make_pair();
  std::string got;
  run_blocking([](int x, int y, std::string &out) -> Task<void> {
    const char msg[] = "hello";
    int n = co_await send(x, std::as_bytes(std::span(msg, 5)));
    REQUIRE(n == 5);
    char buf[16];
    int m = co_await recv(y, std::as_writable_bytes(std::span(buf)));
    out.assign(buf, m > 0 ? m : 0);
  }(a.get(), b.get(), got));
  CHECK(got == "hello");
}

TEST_CASE("cancelling a scope interrupts a pending recv and frees every frame") {
  Reactor r;
  auto before = alk::test::open_fd_count();
  int results[3] = {1, 1, 1};
  {
    auto [a, b] = make_pair();
    Scope s;
    for (int i = 0; i < 3; ++i)
      s.spawn([](int fd, int &out) -> Task<void> {
        std::byte buf[8];
        out = co_await recv(fd, buf);
      }(a.get(), results[i]));
    CHECK(s.size() == 3);
    run_blocking([](Scope &sc) -> Task<void> { co_await sc.close(); }(s));
    CHECK(s.empty());
  }
  for (int v : results) CHECK(v == -ECANCELED);
  CHECK(alk::test::open_fd_count() == before);
  CHECK(r.inflight() == 0);
}

TEST_CASE("cancelling a scope interrupts sleeps and event waits") {
  Reactor r;
  Event ev;
  int slept = 1;
  bool waited = true;
  Scope s;
  s.spawn([](int &o) -> Task<void> { o = co_await sleep_for(10s); }(slept));
  s.spawn([](Event &e, bool &o) -> Task<void> { o = co_await e.wait(); }(ev, waited));
  auto t0 = Clock::now();
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.close(); }(s));
  CHECK(Clock::now() - t0 < 1s);
  CHECK(slept == -ECANCELED);
  CHECK_FALSE(waited);
}

TEST_CASE("a cancelled task cannot start new ops") {
  Reactor r;
  int second = 0;
  Scope s;
  s.spawn([](int &o) -> Task<void> {
    co_await sleep_for(10s);
    o = co_await sleep_for(10s);
  }(second));
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.close(); }(s));
  CHECK(second == -ECANCELED);
}

TEST_CASE("destroying a scope with running children cancels and reaps them") {
  Reactor r;
  auto [a, b] = make_pair();
  int res = 0;
  {
    Scope s;
    s.spawn([](int fd, int &o) -> Task<void> {
      std::byte buf[8];
      o = co_await recv(fd, buf);
    }(a.get(), res));
  }
  CHECK(res == -ECANCELED);
  CHECK(r.inflight() == 0);
}

TEST_CASE("nested scopes: cancelling the outer one ends the inner children") {
  Reactor r;
  int inner_res = 0;
  Scope outer;
  outer.spawn([](int &o) -> Task<void> {
    Scope inner;
    inner.spawn([](int &oo) -> Task<void> { oo = co_await sleep_for(10s); }(o));
    co_await inner.join();
    co_await inner.close();
  }(inner_res));
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.close(); }(outer));
  // The outer child was cancelled while joining; its inner scope's destructor reaped the sleeper.
  CHECK(inner_res == -ECANCELED);
  CHECK(outer.empty());
}

TEST_CASE("a throwing child is counted and does not take the scope down") {
  Reactor r;
  Scope s;
  int ok = 0;
  s.spawn(thrower());
  s.spawn([](int &o) -> Task<void> {
    co_await yield();
    o = 1;
  }(ok));
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.join(); }(s));
  CHECK(s.failures() == 1);
  CHECK(ok == 1);
}

TEST_CASE("event wakes every waiter once set; reset makes later waits block") {
  Reactor r;
  Event ev;
  int woke = 0;
  Scope s;
  for (int i = 0; i < 5; ++i)
    s.spawn([](Event &e, int &w) -> Task<void> {
      bool woke = co_await e.wait();
      if (woke) ++w;
    }(ev, woke));
  CHECK(woke == 0);
  ev.set();
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.join(); }(s));
  CHECK(woke == 5);
  ev.reset();
  CHECK_FALSE(ev.is_set());
}

TEST_CASE("yield lets other tasks run: two yielding loops interleave") {
  Reactor r;
  std::vector<int> order;
  Scope s;
  for (int id = 0; id < 2; ++id)
    s.spawn([](int me, std::vector<int> &o) -> Task<void> {
      for (int i = 0; i < 3; ++i) {
        o.push_back(me);
        co_await yield();
      }
    }(id, order));
  run_blocking([](Scope &sc) -> Task<void> { co_await sc.join(); }(s));
  CHECK(order == std::vector<int>{0, 1, 0, 1, 0, 1});
}

TEST_CASE("poll reports readiness") {
  Reactor r;
  auto [a, b] = make_pair();
  REQUIRE(::write(b.get(), "x", 1) == 1);
  int ev = run_blocking_value([](int fd) -> Task<int> { co_return co_await poll(fd, POLLIN); }(a.get()));
  CHECK((ev & POLLIN) != 0);
}
