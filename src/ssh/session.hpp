// The libssh bridge: one ssh_session driven by the reactor.
//
// libssh only does I/O inside its own poll() (notes/libssh-0.10-event-loop.md), so we watch
// its socket with io_uring and, when it is readable (or writable while output is pending),
// let libssh run one non-blocking pass. libssh never gets the transport itself: it gets
// either a dup of the TCP socket (tcp transport) or one end of a socketpair that a pump
// bridges to the transport stream (tls, quic). So the SSH layer never knows the transport.
#pragma once

#include <libssh/callbacks.h>
#include <libssh/libssh.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "runtime/event.hpp"
#include "runtime/fd.hpp"
#include "runtime/result.hpp"
#include "runtime/scope.hpp"
#include "stream/stream.hpp"

namespace alk::ssh {

class Channel;

// Owns the session, its socket plumbing and the tasks that drive it.
class SessionCore {
 public:
  // transport: the connected duplex stream the session runs over.
  explicit SessionCore(std::unique_ptr<stream::Stream> transport);
  ~SessionCore();
  SessionCore(const SessionCore &) = delete;
  SessionCore &operator=(const SessionCore &) = delete;

  // Prepares the fd libssh will own and starts the transport bridge if one is needed.
  rt::Result<void> init(ssh_session s);
  int libssh_fd() const { return libssh_fd_; }
  ssh_session session() const { return s_; }

  // Before the event loop runs (handshake, auth): waits until libssh's socket is ready for
  // what libssh wants next. Returns 0, or -ETIMEDOUT / -ECANCELED / -errno.
  rt::Task<int> wait_io(rt::Duration timeout);
  // libssh forces the client fd to blocking during connect; call after each connect step.
  void restore_nonblocking();

  // Starts the reader/flusher tasks after the handshake. From then on every libssh call
  // that queues output must be followed by kick().
  void start();
  void kick();
  // After a channel call that may have run libssh's packet loop itself (channel reads and
  // polls do, outside reader()): what it parsed - a channel open, a global request, a
  // confirmation - is handled on the next turn instead of when the peer next sends a byte
  // (a peer waiting for our reply may never send one).
  void catch_up() {
    if (alive_ && started_) catch_up_.set();
  }
  // Pulsed after every batch of packets libssh handled (and once a second), so waiters for
  // a window, a channel open or a global reply re-check their condition.
  rt::Event &progress() { return progress_; }
  rt::Event &flushed() { return flushed_; }
  bool alive() const { return alive_; }
  const std::string &death_reason() const { return death_reason_; }
  // Ends the session: sends SSH disconnect if still alive, stops the tasks, closes channels.
  rt::Task<void> shutdown(const char *why);
  // Resolves when the session dies (transport EOF, protocol error, shutdown).
  rt::Event &dead_event() { return dead_; }
  // Called after each batch of packets with the session still alive (server/client hooks).
  std::function<void()> on_packets;

  // Channel bookkeeping (Channel registers itself).
  void add(Channel *c) { channels_.insert(c); }
  void remove(Channel *c) { channels_.erase(c); }
  // Takes over an ssh_channel whose owner is done: closes it (retrying while libssh's
  // output is pending) and frees it.
  void retire(ssh_channel ch);
  size_t channel_count() const { return channels_.size(); }
  rt::Scope &tasks() { return tasks_; }

 private:
  rt::Task<void> reader();
  rt::Task<void> flusher();
  rt::Task<void> ticker();
  rt::Task<void> catcher();
  void die(std::string why);
  void process_graveyard();
  void pulse(rt::Event &e) {
    e.set();
    e.reset();
  }

  std::unique_ptr<stream::Stream> transport_;
  ssh_session s_ = nullptr;
  ssh_event event_ = nullptr;
  int libssh_fd_ = -1;    // owned by libssh once handed over (it may close it)
  rt::UniqueFd watch_;    // our dup of libssh's fd: polled, never read
  rt::UniqueFd bridge_;   // our end of the socketpair (non-native transports)
  rt::Scope tasks_;
  rt::Event progress_, flushed_, kick_, dead_, catch_up_;
  bool alive_ = true, started_ = false;
  std::string death_reason_;
  int transport_errno_ = 0;  // why the bridged transport stream failed, if it did
  std::set<Channel *> channels_;
  std::vector<ssh_channel> graveyard_;
};

// One SSH channel as a Stream. Reads pull from libssh's channel buffer (which is what
// grows the window, so the peer can never send more than we have taken); writes stay
// within the peer's window and stop while the socket's output is still pending.
class Channel final : public stream::Stream {
 public:
  // opened=false for a channel whose open is still pending (it is freed, never closed, if
  // the open fails: closing it would name a channel the peer never created).
  Channel(SessionCore &core, ssh_channel ch, bool opened = true);
  void mark_opened() { opened_ = true; }
  ~Channel() override;
  rt::Task<ssize_t> read(std::span<std::byte> buf) override;
  rt::Task<ssize_t> write(std::span<const std::byte> buf) override;
  rt::Task<int> shutdown_write() override;
  rt::Task<int> wait_readable() override;
  void close() override;
  ssh_channel raw() const { return ch_; }
  // Session died: forget the ssh_channel (libssh frees it with the session).
  void orphan();
  // Set by an exit-status request from the peer (alknet's open-status signal).
  int exit_status() const { return exit_status_; }
  rt::Event &status_event() { return status_; }

 private:
  static int on_data(ssh_session, ssh_channel, void *, uint32_t, int, void *);
  static void on_eof(ssh_session, ssh_channel, void *);
  static void on_close(ssh_session, ssh_channel, void *);
  static void on_exit_status(ssh_session, ssh_channel, int, void *);

  SessionCore *core_;
  ssh_channel ch_;
  ssh_channel_callbacks_struct cb_{};
  rt::Event rx_, status_;
  int exit_status_ = -1;
  bool eof_sent_ = false, remote_closed_ = false, opened_ = true;
};

// Loads an OpenSSH-format private key file into libssh. Refuses missing, unreadable, PEM and
// passphrase-protected keys with a message that says what to do; `role` names the key in it
// ("key", "host key"). The caller frees the key with ssh_key_free.
rt::Result<ssh_key> load_private_key(const std::string &path, const std::string &role);

// SSH_MSG_CHANNEL_OPEN_FAILURE reason codes (RFC 4254 §5.1).
enum class OpenFailure : int { None = 0, Prohibited = 1, ConnectFailed = 2, UnknownType = 3, ResourceShortage = 4 };

}  // namespace alk::ssh
