#include "ssh/session.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "runtime/reactor.hpp"
#include "ssh/keys.hpp"

namespace alk::ssh {

using namespace std::chrono_literals;

SessionCore::SessionCore(std::unique_ptr<stream::Stream> transport) : transport_(std::move(transport)) {}

SessionCore::~SessionCore() {
  alive_ = false;
  for (Channel *c : std::vector<Channel *>(channels_.begin(), channels_.end())) c->orphan();
  if (!tasks_.empty()) {
    tasks_.cancel();
    rt::Reactor::current().run_until([this] { return tasks_.empty(); });
  }
  if (event_) {
    ssh_event_remove_session(event_, s_);
    ssh_event_free(event_);
  }
  if (s_) ssh_free(s_);  // also closes libssh_fd_ (0.10.6 always closes the fd it was given)
  if (transport_) transport_->close();
}

rt::Result<void> SessionCore::init(ssh_session s) {
  s_ = s;
  int native = transport_->native_fd();
  if (native >= 0) {
    libssh_fd_ = fcntl(native, F_DUPFD_CLOEXEC, 0);
    if (libssh_fd_ < 0) return rt::errno_error(errno, "dup");
    // Every channel shares this one socket, so whatever waits unsent in its send buffer delays
    // every other channel's next packet: a bulk transfer could park megabytes (autotuned
    // buffers) ahead of a small request's reply. Keep at most kNotSentLowat unsent in the kernel;
    // the rest stays in the source socket. (libssh only writes after POLLOUT, which this delays,
    // so it never sees EAGAIN.) A/B on the loaded 2-core box, 4 rounds each, iperf3 -R via -L:
    // 1.59 vs 1.36 Gbit/s median with/without; request latency during bulk was noise-bound.
    constexpr int kNotSentLowat = 128 * 1024;
    (void)setsockopt(libssh_fd_, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &kNotSentLowat, sizeof kNotSentLowat);
  } else {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
      return rt::errno_error(errno, "socketpair");
    int sz = 4 << 20;
    for (int fd : sv) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
    }
    libssh_fd_ = sv[0];
    bridge_.reset(sv[1]);
    // The bridge: transport <-> our socketpair end. When it ends, libssh sees EOF.
    tasks_.spawn([](SessionCore *self) -> rt::Task<void> {
      stream::FdStream local(std::move(self->bridge_));
      auto st = co_await stream::pump(*self->transport_, local, 256 * 1024);
      // libssh will only see EOF ("Socket error: disconnected"); keep the transport's reason.
      if (st.error != 0 && st.error != ECANCELED) self->transport_errno_ = st.error;
      local.close();
    }(this));
  }
  int w = fcntl(libssh_fd_, F_DUPFD_CLOEXEC, 0);
  if (w < 0) return rt::errno_error(errno, "dup");
  watch_.reset(w);
  return {};
}

void SessionCore::restore_nonblocking() {
  int fl = fcntl(watch_.get(), F_GETFL);
  if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(watch_.get(), F_SETFL, fl | O_NONBLOCK);
}

rt::Task<int> SessionCore::wait_io(rt::Duration timeout) {
  unsigned events = POLLIN;
  if (ssh_get_poll_flags(s_) & SSH_WRITE_PENDING) events |= POLLOUT;
  int r = co_await rt::poll(watch_.get(), events).with_timeout(timeout);
  co_return r < 0 ? r : 0;
}

void SessionCore::start() {
  if (started_) return;
  started_ = true;
  event_ = ssh_event_new();
  ssh_event_add_session(event_, s_);
  tasks_.spawn(reader());
  tasks_.spawn(flusher());
  tasks_.spawn(ticker());
  tasks_.spawn(catcher());
}

void SessionCore::kick() {
  if (alive_ && started_ && (ssh_get_status(s_) & SSH_WRITE_PENDING)) kick_.set();
}

void SessionCore::die(std::string why) {
  if (!alive_) return;
  alive_ = false;
  death_reason_ = transport_errno_ ? "transport: " + std::string(std::strerror(transport_errno_)) : std::move(why);
  for (Channel *c : std::vector<Channel *>(channels_.begin(), channels_.end())) c->orphan();
  graveyard_.clear();  // libssh frees them with the session
  progress_.set();
  flushed_.set();
  kick_.set();
  catch_up_.set();
  dead_.set();
}

void SessionCore::process_graveyard() {
  for (size_t i = 0; i < graveyard_.size();) {
    ssh_channel ch = graveyard_[i];
    if (ssh_channel_close(ch) == SSH_AGAIN) {
      ++i;
      continue;
    }
    ssh_channel_free(ch);
    graveyard_[i] = graveyard_.back();
    graveyard_.pop_back();
  }
}

void SessionCore::retire(ssh_channel ch) {
  if (!alive_ || !ch) return;
  if (ssh_channel_close(ch) == SSH_AGAIN)
    graveyard_.push_back(ch);
  else
    ssh_channel_free(ch);
  kick();
  catch_up();  // closing flushes with a poll(0) pass, which also reads
}

rt::Task<void> SessionCore::reader() {
  while (alive_) {
    int r = co_await rt::poll(watch_.get(), POLLIN);
    if (r < 0) {
      if (r != -ECANCELED) die("poll failed");
      co_return;
    }
    // libssh reads at most 4 KiB per pass: run passes until it has nothing, within a budget.
    for (int i = 0; i < 256 && alive_; ++i) {
      int rc = ssh_event_dopoll(event_, 0);
      if (rc == SSH_ERROR || !ssh_is_connected(s_)) {
        const char *err = ssh_get_error(s_);
        die(err && *err ? err : "connection closed");
        break;
      }
      if (rc == SSH_AGAIN) break;
    }
    if (!alive_) break;
    if (ssh_get_status(s_) & (SSH_CLOSED | SSH_CLOSED_ERROR)) {
      die("connection closed by peer");
      break;
    }
    process_graveyard();
    if (on_packets) on_packets();
    pulse(progress_);
    kick();
  }
}

rt::Task<void> SessionCore::flusher() {
  while (alive_) {
    bool woke = co_await kick_.wait();
    if (!woke) co_return;
    kick_.reset();
    while (alive_ && (ssh_get_status(s_) & SSH_WRITE_PENDING)) {
      int r = co_await rt::poll(watch_.get(), POLLOUT);
      if (r < 0) {
        if (r != -ECANCELED) die("poll failed");
        co_return;
      }
      int rc = ssh_event_dopoll(event_, 0);
      if (rc == SSH_ERROR || !ssh_is_connected(s_)) {
        const char *err = ssh_get_error(s_);
        die(err && *err ? err : "connection closed");
        break;
      }
      process_graveyard();
      pulse(progress_);
      catch_up();  // dopoll also read what had arrived
    }
    pulse(flushed_);
  }
}

rt::Task<void> SessionCore::catcher() {
  while (alive_) {
    bool woke = co_await catch_up_.wait();
    if (!woke || !alive_) co_return;
    catch_up_.reset();
    // One pass for however many channel calls set the event since the last turn.
    process_graveyard();
    if (on_packets) on_packets();
    pulse(progress_);
    kick();
  }
}

rt::Task<void> SessionCore::ticker() {
  while (alive_) {
    int r = co_await rt::sleep_for(1s);
    if (r < 0) co_return;
    pulse(progress_);
  }
}

rt::Task<void> SessionCore::shutdown(const char *why) {
  // ssh_disconnect frees every ssh_channel in libssh 0.10: detach our Channels first.
  for (Channel *c : std::vector<Channel *>(channels_.begin(), channels_.end())) c->orphan();
  graveyard_.clear();
  if (alive_ && s_) {
    ssh_disconnect(s_);  // queues SSH_MSG_DISCONNECT, flushes what it can, closes libssh's fd
  }
  die(why);
  // Let a bridge pump deliver the last bytes (the DISCONNECT) before cancelling it.
  auto deadline = rt::Clock::now() + 1s;
  while (!tasks_.empty() && rt::Clock::now() < deadline && transport_ && transport_->native_fd() < 0) {
    co_await rt::sleep_for(10ms);
    if (tasks_.size() <= 1) break;
  }
  co_await tasks_.close();
}

rt::Result<ssh_key> load_private_key(const std::string &path, const std::string &role) {
  std::string err;
  auto text = read_small_file(path, 64 * 1024, &err);
  if (!text) return rt::Error{ENOENT, err};  // "cannot read PATH: reason"
  switch (sniff_private_key(*text)) {
    case PrivateKeyFormat::OpenSSH:
      break;
    case PrivateKeyFormat::Pem:
      return rt::Error{EINVAL, path + " is a PEM private key; alknet needs an OpenSSH-format " + role +
                                   " (convert a copy with: ssh-keygen -p -f " + path + ")"};
    default:
      return rt::Error{EINVAL, path + " is not an OpenSSH private key (expected -----BEGIN OPENSSH PRIVATE KEY-----)"};
  }
  ssh_key key = nullptr;
  if (ssh_pki_import_privkey_base64(text->c_str(), nullptr, nullptr, nullptr, &key) != SSH_OK)
    return rt::Error{EINVAL, "cannot load " + role + " " + path + " (passphrase-protected keys are not supported)"};
  return key;
}

// -- Channel ------------------------------------------------------------------------------

Channel::Channel(SessionCore &core, ssh_channel ch, bool opened) : core_(&core), ch_(ch), opened_(opened) {
  ssh_callbacks_init(&cb_);
  cb_.userdata = this;
  cb_.channel_data_function = &Channel::on_data;
  cb_.channel_eof_function = &Channel::on_eof;
  cb_.channel_close_function = &Channel::on_close;
  cb_.channel_exit_status_function = &Channel::on_exit_status;
  ssh_add_channel_callbacks(ch_, &cb_);
  core_->add(this);
}

Channel::~Channel() {
  close();
  if (core_) core_->remove(this);
}

void Channel::orphan() {
  if (ch_) ssh_remove_channel_callbacks(ch_, &cb_);
  ch_ = nullptr;
  if (core_) core_->remove(this);
  core_ = nullptr;  // the session may be destroyed before this channel
  remote_closed_ = true;
  rx_.set();
  status_.set();
}

void Channel::close() {
  if (!ch_) return;
  ssh_remove_channel_callbacks(ch_, &cb_);
  if (opened_)
    core_->retire(std::exchange(ch_, nullptr));
  else
    ssh_channel_free(std::exchange(ch_, nullptr));
  rx_.set();
}

int Channel::on_data(ssh_session, ssh_channel, void *, uint32_t, int, void *user) {
  // Consume nothing here: read() pulls from libssh's buffer, and that pull is what opens
  // the window again. So a slow reader holds the peer back instead of growing a buffer.
  static_cast<Channel *>(user)->rx_.set();
  return 0;
}

void Channel::on_eof(ssh_session, ssh_channel, void *user) { static_cast<Channel *>(user)->rx_.set(); }

void Channel::on_close(ssh_session, ssh_channel, void *user) {
  auto *self = static_cast<Channel *>(user);
  self->remote_closed_ = true;
  self->rx_.set();
  self->status_.set();
}

void Channel::on_exit_status(ssh_session, ssh_channel, int status, void *user) {
  auto *self = static_cast<Channel *>(user);
  self->exit_status_ = status;
  self->status_.set();
}

rt::Task<ssize_t> Channel::read(std::span<std::byte> buf) {
  for (;;) {
    if (!ch_ || !core_) co_return -ECONNRESET;
    rx_.reset();
    size_t want = std::min<size_t>(buf.size(), 1u << 20);
    int n = ssh_channel_read_nonblocking(ch_, buf.data(), uint32_t(want), 0);
    if (core_) {
      core_->kick();  // the read may have queued a WINDOW_ADJUST
      core_->catch_up();  // and it polled the socket: other packets may wait for handling
    }
    if (n > 0) co_return n;
    if (n == SSH_EOF) co_return 0;
    if (n == SSH_ERROR) co_return -ECONNRESET;
    if (remote_closed_ || ssh_channel_is_eof(ch_)) {
      // EOF or CLOSE arrived and the buffer is empty.
      if (ssh_channel_poll(ch_, 0) <= 0) co_return 0;
      continue;
    }
    bool woke = co_await rx_.wait();
    if (!woke) co_return -ECANCELED;
  }
}

rt::Task<int> Channel::wait_readable() {
  for (;;) {
    if (!ch_ || !core_) co_return 0;  // read() reports it
    rx_.reset();
    // Data, EOF or an error: read() has something to say.
    if (remote_closed_ || ssh_channel_is_eof(ch_)) co_return 0;
    int avail = ssh_channel_poll(ch_, 0);
    if (core_) core_->catch_up();  // the poll may have parsed other channels' packets
    if (avail != 0) co_return 0;
    bool woke = co_await rx_.wait();
    if (!woke) co_return -ECANCELED;
  }
}

rt::Task<ssize_t> Channel::write(std::span<const std::byte> buf) {
  size_t done = 0;
  while (done < buf.size()) {
    if (!ch_ || !core_ || !core_->alive()) co_return -ECONNRESET;
    if (remote_closed_ || eof_sent_) co_return -EPIPE;
    if (ssh_get_status(core_->session()) & SSH_WRITE_PENDING) {
      // The socket has not taken the last packets yet: add nothing until it has.
      core_->kick();
      bool woke = co_await core_->flushed().wait();
      if (!woke) co_return -ECANCELED;
      continue;
    }
    uint32_t window = ssh_channel_window_size(ch_);
    if (window == 0) {
      bool woke = co_await core_->progress().wait();
      if (!woke) co_return -ECANCELED;
      continue;
    }
    size_t chunk = std::min<size_t>({buf.size() - done, size_t(window), size_t(256 * 1024)});
    int n = ssh_channel_write(ch_, buf.data() + done, uint32_t(chunk));
    if (n == SSH_ERROR) co_return -EPIPE;
    done += size_t(n);
    if (!core_) co_return -ECONNRESET;
    core_->kick();
    core_->catch_up();  // libssh's write flushes with a poll(0) pass, which also reads
    if (n == 0) {
      bool woke = co_await core_->progress().wait();
      if (!woke) co_return -ECANCELED;
    }
  }
  co_return ssize_t(done);
}

rt::Task<int> Channel::shutdown_write() {
  if (!ch_ || !core_) co_return -ENOTCONN;
  if (!eof_sent_) {
    eof_sent_ = true;
    ssh_channel_send_eof(ch_);
    core_->kick();
    core_->catch_up();
  }
  co_return 0;
}

}  // namespace alk::ssh
