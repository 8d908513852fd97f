// The duplex byte stream every transport and every tunnelled connection implements, and the
// one relay between two of them.
#pragma once

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <sys/types.h>

#include "runtime/fd.hpp"
#include "runtime/task.hpp"
#include "stream/bytes.hpp"

namespace alk::stream {

using ChannelBinding = std::array<std::uint8_t, 16>;

class Stream {
 public:
  virtual ~Stream() = default;
  // Reads up to buf.size() bytes: >0 bytes, 0 at end of stream, -errno on error.
  virtual rt::Task<ssize_t> read(std::span<std::byte> buf) = 0;
  // Writes all of buf (the stream may keep at most a bounded amount queued): buf.size()
  // or -errno.
  virtual rt::Task<ssize_t> write(std::span<const std::byte> buf) = 0;
  // Half-close: the peer reads end of stream; reading from it goes on.
  virtual rt::Task<int> shutdown_write() = 0;
  // Waits until read() has something to report (data, end of stream or an error) without
  // taking a buffer: 0, or -errno. The relay waits here so that an idle tunnel holds no
  // buffer. The default returns at once (read() then does the waiting).
  virtual rt::Task<int> wait_readable() { co_return 0; }
  // Streams that keep received data in buffers of their own may lend it instead of copying
  // it out: the bytes read() would return next (empty when none are waiting). The span stays
  // valid until consume() or read(); consume(n) takes its first n bytes as read.
  virtual std::span<const std::byte> peek() { return {}; }
  virtual void consume(size_t) {}
  // Writes all of buf, as write() does. A stream that keeps written bytes in buffers of its own
  // until the peer has them (QUIC keeps them until they are acknowledged) may take buf's
  // storage instead of copying it: buf is then left empty, maybe holding the storage of a
  // buffer given earlier and since released, so its next filling need not allocate.
  virtual rt::Task<ssize_t> write_owned(Bytes &buf) { co_return co_await write(std::as_bytes(std::span(buf))); }
  // The other way round, for sinks that build their output in buffers of their own (an SSH
  // channel's packets): room for up to max bytes, filled by the caller without waiting, then
  // commit_room(n) sends its first n as write() would (0: nothing). Empty when the sink cannot
  // take bytes right now; write() is the one that waits.
  virtual std::span<std::byte> write_room(size_t) { return {}; }
  virtual void commit_room(size_t) {}
  // For sinks that lend room: waits while room is short for a reason the data has no part in
  // (an SSH session's output is full), so the caller need not take bytes it cannot place yet.
  // 0 then (write_room() may still be empty, e.g. for want of window: write() waits for that),
  // -errno when writing cannot go on, -EOPNOTSUPP when this stream lends no room.
  virtual rt::Task<int> wait_writable() { co_return -EOPNOTSUPP; }
  // Reads what is already there without waiting: bytes, 0 at end of stream, -EAGAIN when
  // nothing is there yet (wait_readable() then waits), -errno. -EOPNOTSUPP: this stream cannot.
  virtual ssize_t try_read(std::span<std::byte>) { return -EOPNOTSUPP; }
  // Writes what the stream takes right now from bufs, in order, without waiting: bytes taken
  // (maybe fewer than all), -EAGAIN when it takes none now, -errno. -EOPNOTSUPP: it cannot.
  virtual ssize_t try_write(std::span<const std::span<const std::byte>>) { return -EOPNOTSUPP; }
  // A source whose data arrives in pieces it did not ask for (an SSH channel's packets) may
  // hand them straight to `sink` with try_write() while none of its earlier data waits to be
  // read (so the order holds), adding what the sink took to *count: those bytes skip its
  // buffer and the relay. pump() sets this while it runs (and writes to sink nothing but what
  // it took from this source); (nullptr, nullptr) ends it.
  virtual void forward_to(Stream * /*sink*/, uint64_t * /*count*/) {}
  // Releases the underlying resource; pending reads/writes must have been cancelled first.
  virtual void close() = 0;
  // The socket beneath, for socket options (e.g. TCP_NOTSENT_LOWAT); -1 when there is none.
  virtual int native_fd() const { return -1; }
  // A secure channel's binding (a TLS 1.3 exporter, RFC 8446 §7.5): the same value at both
  // ends of one TLS/QUIC connection and a different one on each leg of a relay that terminates
  // it. Nothing for streams that are not an established TLS 1.3 channel.
  virtual std::optional<ChannelBinding> channel_binding() const { return std::nullopt; }
};

// A connected stream socket (TCP or AF_UNIX).
class FdStream final : public Stream {
 public:
  explicit FdStream(rt::UniqueFd fd) : fd_(std::move(fd)) {}
  rt::Task<ssize_t> read(std::span<std::byte> buf) override;
  rt::Task<ssize_t> write(std::span<const std::byte> buf) override;
  rt::Task<int> shutdown_write() override;
  rt::Task<int> wait_readable() override;
  ssize_t try_read(std::span<std::byte> buf) override;
  ssize_t try_write(std::span<const std::span<const std::byte>> bufs) override;
  void close() override { fd_.reset(); }
  int native_fd() const override { return fd_.get(); }
  rt::UniqueFd release() { return std::move(fd_); }

 private:
  rt::UniqueFd fd_;
};

struct PumpStats {
  uint64_t a_to_b = 0, b_to_a = 0;
  int error = 0;  // first errno seen (0 = both directions ended cleanly)
};

// Copies a->b and b->a until both directions reached end of stream, or one failed.
// EOF on one side becomes shutdown_write() on the other while the other direction goes on
// (exact half-close). A direction holds one buffer of buf_size bytes while it has data to move
// (so memory is bounded no matter how slow either reader is) and none while its source is
// drained: buffers come from a small per-thread pool. An error in one direction stops both.
// Does not close the streams.
rt::Task<PumpStats> pump(Stream &a, Stream &b, size_t buf_size = 64 * 1024);

// Relay buffers currently held by pump directions on this thread (tests: idle tunnels hold none).
size_t relay_buffers_in_use();

}  // namespace alk::stream
