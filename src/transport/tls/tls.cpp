#include "transport/tls/tls.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

#include "runtime/event.hpp"
#include "stream/bytes.hpp"
#include "transport/tls/record.hpp"

namespace alk::transport {

namespace detail {
void SslCtxFree::operator()(ssl_ctx_st *ctx) const { SSL_CTX_free(ctx); }
}  // namespace detail

namespace {

using Deadline = std::optional<rt::Clock::time_point>;

constexpr const char *kSystemCaBundle = "/etc/ssl/certs/ca-certificates.crt";
// Room for a few full TLS records per recv, so one syscall usually feeds several SSL_reads.
// A connection starts with the small buffer (handshakes, scanners, idle sessions); one whose
// recv fills it is moving bulk and gets the big one: 4x fewer recvs, measured 0.63-0.76 ->
// 0.79-0.87 of tcp's throughput for 8 parallel uploads.
constexpr size_t kRecvBuffer = 64 * 1024 + 512, kRecvBufferBulk = 256 * 1024 + 512;
// Plaintext per SSL_write: its records go out together in one send.
constexpr size_t kWriteChunk = 256 * 1024;
// How long and how much a refused stealth client may still send after its 404.
constexpr auto kLinger = std::chrono::seconds(1);
constexpr size_t kLingerBytes = 64 * 1024;

// Text of the oldest queued BoringSSL error, or fallback when the queue is empty.
std::string ssl_error_text(const char *fallback) {
  uint32_t e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return fallback;
  if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) return "no PEM data found";
  const char *reason = ERR_reason_error_string(e);
  if (reason) {
    std::string r = reason;
    std::transform(r.begin(), r.end(), r.begin(), [](char c) { return c == '_' ? ' ' : char(std::tolower(c)); });
    return r;
  }
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// Checks the file can be opened, so "No such file" is reported as such, not as a PEM error.
std::optional<rt::Error> unreadable(const std::string &what, const std::string &path) {
  if (path.empty()) return rt::Error{EINVAL, "tls: no " + what + " file given"};
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return rt::errno_error(errno, "tls: cannot read " + what + " " + path);
  ::close(fd);
  return std::nullopt;
}

bool is_ip_literal(const std::string &s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::string selected_alpn(const SSL *ssl) {
  const uint8_t *p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl, &p, &len);
  return p ? std::string(reinterpret_cast<const char *>(p), len) : std::string();
}

// One TLS connection. BoringSSL talks to a BIO whose bytes live in in_/out_; the socket is
// read and written only here, on the reactor. Two coroutines may use the stream at once (a
// reader and a writer): whoever needs ciphertext from the socket becomes the one receiver,
// whoever has ciphertext to flush becomes the one sender, and the others wait for that to
// finish, so records never interleave and no recv or send is ever issued twice at once.
//
// Once the handshake is done, a TLS 1.3 connection on an AES-GCM suite takes its records over
// from BoringSSL (see record.hpp): at the first read or write where BoringSSL holds no
// plaintext and no part of a record (after the handshake the BIO hands it whole records
// only), both directions switch at once, with BoringSSL's secrets and sequence numbers.
class TlsConn final : public stream::Stream {
 public:
  TlsConn(SSL_CTX *ctx, rt::UniqueFd fd) : fd_(std::move(fd)), in_(kRecvBuffer), ssl_(SSL_new(ctx)) {
    if (!ssl_) return;
    BIO *bio = BIO_new(bio_method());
    if (!bio) {
      ssl_.reset();
      return;
    }
    BIO_set_data(bio, this);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl_.get(), bio, bio);  // one reference, owned by the SSL
  }
  ~TlsConn() override { close(); }

  SSL *ssl() const { return ssl_.get(); }
  bool valid() const { return bool(ssl_); }

  rt::Task<ssize_t> read(std::span<std::byte> buf) override { return read_until(buf, std::nullopt); }

  rt::Task<ssize_t> write(std::span<const std::byte> buf) override {
    if (!ssl_) co_return -EBADF;
    if (write_closed_) co_return -EPIPE;
    size_t done = 0;
    while (done < buf.size()) {
      const size_t chunk = std::min(buf.size() - done, kWriteChunk);
      int n = queue_plaintext({reinterpret_cast<const uint8_t *>(buf.data()) + done, chunk});
      if (n > 0) {
        done += size_t(n);
        int f = co_await flush(std::nullopt);
        if (f < 0) co_return f;
        continue;
      }
      int err = SSL_get_error(ssl_.get(), n);
      // Only while a handshake message is still owed: let the receiver bring it in.
      if (err == SSL_ERROR_WANT_READ) {
        int f = co_await flush(std::nullopt);
        if (f < 0) co_return f;
        int g = co_await ingest(std::nullopt);
        if (g < 0) co_return g;
        continue;
      }
      ERR_clear_error();
      co_return send_error_ ? -send_error_ : -EPIPE;
    }
    co_return ssize_t(done);
  }

  // close_notify, then a TCP FIN: TLS 1.3 lets the other direction go on.
  rt::Task<int> shutdown_write() override {
    if (!ssl_) co_return -EBADF;
    if (write_closed_) co_return 0;
    write_closed_ = true;
    close_notify();
    int f = co_await flush(std::nullopt);
    if (f < 0) co_return f;
    if (::shutdown(fd_.get(), SHUT_WR) != 0) co_return -errno;
    co_return 0;
  }

  void close() override {
    ssl_.reset();  // before the buffers its BIO points into
    fd_.reset();
  }

  std::optional<stream::ChannelBinding> channel_binding() const override { return tls_channel_binding(ssl_.get()); }

  // read() with an optional deadline (the stealth peek uses one).
  rt::Task<ssize_t> read_until(std::span<std::byte> buf, Deadline dl) {
    if (replay_pos_ < replay_.size()) {
      size_t n = std::min(buf.size(), replay_.size() - replay_pos_);
      std::memcpy(buf.data(), replay_.data() + replay_pos_, n);
      replay_pos_ += n;
      if (replay_pos_ == replay_.size()) {
        replay_.clear();
        replay_.shrink_to_fit();
        replay_pos_ = 0;
      }
      co_return ssize_t(n);
    }
    if (!ssl_) co_return -EBADF;
    if (buf.empty()) co_return 0;
    for (;;) {
      if (read_closed_) co_return 0;
      if (offload()) co_return co_await read_records({reinterpret_cast<uint8_t *>(buf.data()), buf.size()}, dl);
      ERR_clear_error();
      int n = SSL_read(ssl_.get(), buf.data(), int(std::min<size_t>(buf.size(), INT_MAX)));
      // Post-handshake messages may have queued a reply (KeyUpdate). If a send is under way
      // its owner picks the reply up; otherwise send it now.
      if (n > 0) {
        // One SSL_read yields at most one record (16 KiB); fill the caller's buffer from
        // records already received so the layer above moves big chunks. An error or EOF
        // after some data is seen again by the next call.
        size_t got = size_t(n);
        while (got < buf.size()) {
          int m = SSL_read(ssl_.get(), buf.data() + got, int(std::min<size_t>(buf.size() - got, INT_MAX)));
          if (m <= 0) break;
          got += size_t(m);
        }
        ERR_clear_error();
        if (!out_.empty() && !send_busy_) co_await flush(dl);
        co_return ssize_t(got);
      }
      if (!out_.empty() && !send_busy_) co_await flush(dl);
      int err = SSL_get_error(ssl_.get(), n);
      if (err == SSL_ERROR_ZERO_RETURN) {
        read_closed_ = true;
        co_return 0;
      }
      if (err == SSL_ERROR_WANT_READ) {
        int g = co_await ingest(dl);
        if (g < 0) co_return g;
        continue;
      }
      ERR_clear_error();
      if (in_eof_ && in_begin_ == in_end_) {
        // TCP EOF without close_notify: report end of stream. Whoever cut the connection could
        // as well have reset it: SSH above sees the session end, or a packet cut short, never
        // bytes that were not sent (records are authenticated whatever the SSH cipher).
        read_closed_ = true;
        co_return 0;
      }
      co_return recv_error_ ? -recv_error_ : -EPROTO;
    }
  }

  rt::Task<rt::Result<void>> handshake(Deadline dl) {
    if (!ssl_) co_return rt::Error{ENOMEM, "tls: cannot create connection"};
    for (;;) {
      ERR_clear_error();
      int r = SSL_do_handshake(ssl_.get());
      int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), r);
      std::string why = err == SSL_ERROR_SSL ? ssl_error_text("handshake failed") : std::string();
      // Our flight, or the alert that tells the peer why we give up.
      if (!out_.empty()) {
        int f = co_await flush(dl);
        if (f < 0 && err != SSL_ERROR_SSL) co_return io_error(-f, "send");
      }
      if (r == 1) {
        whole_records_ = true;
        co_return rt::Result<void>{};
      }
      if (err == SSL_ERROR_WANT_READ) {
        int g = co_await ingest(dl);
        if (g < 0) co_return io_error(-g, "recv");
        continue;
      }
      if (err == SSL_ERROR_SSL) co_return rt::Error{rt::kErrProtocol, "tls handshake: " + why};
      if (in_eof_) co_return rt::Error{ECONNRESET, "tls handshake: connection closed by peer"};
      co_return rt::Error{rt::kErrProtocol, "tls handshake: " + ssl_error_text("failed")};
    }
  }

  // Sends plaintext, close_notify and closes: what a server that gives up on a client does.
  rt::Task<void> send_and_close(std::string_view text, Deadline dl) {
    if (ssl_ && !write_closed_) {
      queue_plaintext({reinterpret_cast<const uint8_t *>(text.data()), text.size()});
      close_notify();
      write_closed_ = true;
      int f = co_await flush(dl);
      if (f == 0 && ::shutdown(fd_.get(), SHUT_WR) == 0) {
        // Lingering close, as nginx does: closing with unread request bytes would make the
        // kernel answer with a RST that can destroy the 404 before the client reads it.
        auto linger_end = std::min(dl.value_or(rt::Clock::time_point::max()), rt::Clock::now() + kLinger);
        std::byte scratch[4096];
        size_t drained = 0;
        while (drained < kLingerBytes) {
          int r = co_await rt::recv(fd_.get(), scratch).with_timeout(*remaining(linger_end));
          if (r <= 0) break;
          drained += size_t(r);
        }
      }
    }
    close();
  }

  void set_replay(std::vector<std::byte> bytes) {
    replay_ = std::move(bytes);
    replay_pos_ = 0;
  }

 private:
  static rt::Error io_error(int err, const char *what) {
    if (err == ETIMEDOUT) return rt::Error{ETIMEDOUT, "tls handshake: timed out"};
    return rt::errno_error(err, std::string("tls handshake: ") + what);
  }

  static std::optional<rt::Duration> remaining(Deadline dl) {
    if (!dl) return std::nullopt;
    auto left = *dl - rt::Clock::now();
    // A zero timeout would mean "none" to the reactor; expire almost at once instead.
    return std::max<rt::Duration>(left, std::chrono::microseconds(1));
  }

  uint8_t *in_bytes() { return reinterpret_cast<uint8_t *>(in_.data()); }

  // Switches both directions to our record layer if this connection can and BoringSSL is at a
  // record boundary now. True once switched.
  bool offload() {
    if (rx_) return true;
    if (!whole_records_ || offload_refused_ || bio_record_left_ != 0 || SSL_pending(ssl_.get()) != 0) return false;
    const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl_.get());
    const uint16_t suite = cipher ? SSL_CIPHER_get_protocol_id(cipher) : 0;
    bssl::Span<const uint8_t> read_secret, write_secret;
    auto rx = std::make_unique<tls13::RecordKeys>();
    auto tx = std::make_unique<tls13::RecordKeys>();
    if (SSL_version(ssl_.get()) != TLS1_3_VERSION || !tls13::RecordKeys::supports(suite) ||
        !bssl::SSL_get_traffic_secrets(ssl_.get(), &read_secret, &write_secret) ||
        !rx->init(suite, read_secret, SSL_get_read_sequence(ssl_.get())) ||
        !tx->init(suite, write_secret, SSL_get_write_sequence(ssl_.get()))) {
      offload_refused_ = true;  // BoringSSL keeps the records
      return false;
    }
    rx_ = std::move(rx);
    tx_ = std::move(tx);
    return true;
  }

  // Seals data as records of type into out_ (straight from data: no copy first).
  void seal_records(tls13::ContentType type, std::span<const uint8_t> data) {
    do {
      const auto content = data.first(std::min(data.size(), tls13::kMaxPlaintext));
      const size_t at = out_.size();
      out_.resize(at + content.size() + tls13::kSealOverhead);
      tx_->seal(type, content, out_.data() + at);
      data = data.subspan(content.size());
    } while (!data.empty());
  }

  // Queues plaintext (at most kWriteChunk bytes) as records in out_: ours once the records
  // can be ours, else BoringSSL's. Returns the bytes taken, or SSL_write's failure (<= 0).
  int queue_plaintext(std::span<const uint8_t> data) {
    if (offload()) {
      seal_records(tls13::ContentType::application_data, data);
      return int(data.size());
    }
    ERR_clear_error();
    return SSL_write(ssl_.get(), data.data(), int(data.size()));
  }

  // Queues close_notify: ours once the records are ours, else BoringSSL's.
  void close_notify() {
    if (tx_) {
      const uint8_t alert[] = {1, 0};  // warning, close_notify
      seal_records(tls13::ContentType::alert, alert);
    } else {
      SSL_shutdown(ssl_.get());
      ERR_clear_error();
    }
  }

  // read() once the records are ours: opens whole records from in_, straight into buf while a
  // record's plaintext fits there, else in place and hands it out from in_ over later calls.
  rt::Task<ssize_t> read_records(std::span<uint8_t> buf, Deadline dl) {
    for (;;) {
      if (plain_begin_ < plain_end_) {
        const size_t n = std::min(buf.size(), plain_end_ - plain_begin_);
        std::memcpy(buf.data(), in_bytes() + plain_begin_, n);
        plain_begin_ += n;
        co_return ssize_t(n);
      }
      if (read_closed_) co_return 0;
      size_t got = 0;
      int error = 0;
      while (got < buf.size() && !read_closed_ && plain_begin_ == plain_end_) {
        const std::span<uint8_t> avail(in_bytes() + in_begin_, in_end_ - in_begin_);
        const auto header = tls13::parse_header(avail);
        if (header.status == tls13::Header::bad) {
          error = EPROTO;
          break;
        }
        if (header.status == tls13::Header::need_more || avail.size() < header.record_len) break;
        const auto record = avail.first(header.record_len);
        const size_t room = header.record_len - tls13::kHeaderLen - tls13::kTagLen;
        const bool direct = buf.size() - got >= room;
        uint8_t *out = direct ? buf.data() + got : record.data() + tls13::kHeaderLen;
        const auto opened = rx_->open(record, out);
        in_begin_ += header.record_len;
        if (opened.type == tls13::ContentType::application_data) {
          if (direct) {
            got += opened.len;
          } else {
            plain_begin_ = size_t(out - in_bytes());
            plain_end_ = plain_begin_ + opened.len;
          }
        } else if (opened.type == tls13::ContentType::handshake) {
          error = post_handshake({out, opened.len});
        } else if (opened.type == tls13::ContentType::alert && opened.len == 2 && out[1] == 0) {
          read_closed_ = true;  // close_notify
        } else {
          error = opened.type == tls13::ContentType::invalid ? EBADMSG : EPROTO;  // bad_record_mac; any other alert
        }
        if (error) break;
      }
      if (!out_.empty() && !send_busy_) co_await flush(dl);  // a KeyUpdate reply
      if (got > 0) co_return ssize_t(got);
      if (plain_begin_ < plain_end_ || read_closed_) continue;
      if (error) {
        recv_error_ = error;
        co_return -error;
      }
      if (in_eof_) {
        read_closed_ = true;  // as under BoringSSL: EOF without close_notify ends the stream,
        if (in_begin_ == in_end_) co_return 0;
        co_return -EPROTO;  // but a record cut short is an error
      }
      int g = co_await ingest(dl);
      if (g < 0) co_return g;
    }
  }

  // A handshake message after the handshake: tickets are dropped (we never resume), a
  // KeyUpdate moves the read keys on and, when asked, ours too after telling the peer.
  int post_handshake(std::span<const uint8_t> bytes) {
    handshake_in_.insert(handshake_in_.end(), bytes.begin(), bytes.end());
    size_t used = 0;
    int error = 0;
    for (;;) {
      const auto msg = tls13::parse_post_handshake({handshake_in_.data() + used, handshake_in_.size() - used});
      if (msg.kind == tls13::PostHandshake::need_more) break;
      if (msg.kind == tls13::PostHandshake::bad) {
        error = EPROTO;
        break;
      }
      used += msg.len;
      if (msg.kind == tls13::PostHandshake::key_update || msg.kind == tls13::PostHandshake::key_update_requested) {
        if (!rx_->update()) error = EPROTO;
        if (msg.kind == tls13::PostHandshake::key_update_requested && !write_closed_) {
          const uint8_t reply[] = {24, 0, 0, 1, 0};  // KeyUpdate(update_not_requested)
          seal_records(tls13::ContentType::handshake, reply);
          if (!tx_->update()) error = EPROTO;
        }
        if (error) break;
      }
    }
    handshake_in_.erase(handshake_in_.begin(), handshake_in_.begin() + long(used));
    return error;
  }

  // Brings more ciphertext into in_: one recv if nobody else is receiving, else waits for the
  // receiver's result. 0 on progress (data or EOF), -errno otherwise.
  rt::Task<int> ingest(Deadline dl) {
    if (recv_error_) co_return -recv_error_;
    if (in_eof_) co_return -ECONNRESET;
    if (recv_busy_) {
      bool ok = co_await recv_done_.wait();
      co_return ok ? 0 : -ECANCELED;
    }
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
    if (in_filled_ && in_.size() < kRecvBufferBulk) in_.resize(kRecvBufferBulk);  // no recv in flight
    if (in_end_ == in_.size() && in_begin_ > 0) {
      std::memmove(in_.data(), in_.data() + in_begin_, in_end_ - in_begin_);
      in_end_ -= in_begin_;
      in_begin_ = 0;
    }
    if (in_end_ == in_.size()) co_return -ENOBUFS;  // BoringSSL always drains whole records
    recv_busy_ = true;
    std::span<std::byte> tail(in_.data() + in_end_, in_.size() - in_end_);
    int r;
    auto left = remaining(dl);
    if (left)
      r = co_await rt::recv(fd_.get(), tail).with_timeout(*left);
    else
      r = co_await rt::recv(fd_.get(), tail);
    recv_busy_ = false;
    if (r > 0) {
      in_end_ += size_t(r);
      in_filled_ = in_filled_ || size_t(r) == tail.size();
    } else if (r == 0)
      in_eof_ = true;
    else if (r != -ETIMEDOUT && r != -ECANCELED && r != -EINTR && r != -EAGAIN)
      recv_error_ = -r;
    recv_done_.set();
    recv_done_.reset();
    co_return r < 0 ? r : 0;
  }

  // Sends everything in out_, including what others append while the send is in flight.
  rt::Task<int> flush(Deadline dl) {
    for (;;) {
      if (send_error_) co_return -send_error_;
      if (send_busy_) {
        bool ok = co_await send_done_.wait();
        if (!ok) co_return -ECANCELED;
        continue;
      }
      if (out_.empty()) co_return 0;
      send_busy_ = true;
      int err = 0;
      while (!out_.empty() && err == 0) {
        sending_.swap(out_);  // BoringSSL may append to out_ while this send is in flight
        size_t off = 0;
        while (off < sending_.size()) {
          const auto rest = std::as_bytes(std::span(sending_)).subspan(off);
          int r;
          auto left = remaining(dl);
          if (left)
            r = co_await rt::send(fd_.get(), rest).with_timeout(*left);
          else
            r = co_await rt::send(fd_.get(), rest);
          if (r <= 0) {
            err = r == 0 ? EPIPE : -r;
            break;
          }
          off += size_t(r);
        }
        sending_.clear();
      }
      send_busy_ = false;
      // A half-sent record cannot be resumed: any failure, even a timeout, ends the stream.
      if (err) send_error_ = err;
      send_done_.set();
      send_done_.reset();
      co_return err ? -err : 0;
    }
  }

  static int bio_write(BIO *b, const char *data, int len) {
    auto *c = static_cast<TlsConn *>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (len <= 0) return 0;
    auto *p = reinterpret_cast<const uint8_t *>(data);
    c->out_.insert(c->out_.end(), p, p + len);
    return len;
  }

  static int bio_read(BIO *b, char *out, int len) {
    auto *c = static_cast<TlsConn *>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    size_t avail = c->in_end_ - c->in_begin_;
    if (avail == 0) {
      if (c->in_eof_ || c->recv_error_) return 0;
      BIO_set_retry_read(b);
      return -1;
    }
    if (c->whole_records_ && c->bio_record_left_ == 0 && !c->in_eof_ && !c->recv_error_) {
      // A record's first byte: hand it over only once all of it is here, so that BoringSSL
      // never holds part of one and the records can be taken over between any two.
      if (avail < tls13::kHeaderLen) {
        BIO_set_retry_read(b);
        return -1;
      }
      const uint8_t *h = c->in_bytes() + c->in_begin_;
      const size_t record = tls13::kHeaderLen + (size_t(h[3]) << 8 | h[4]);
      if (record > tls13::kHeaderLen + tls13::kMaxCiphertext) {
        c->whole_records_ = false;  // BoringSSL will refuse it; no record is whole from here
      } else if (avail < record) {
        BIO_set_retry_read(b);
        return -1;
      } else {
        c->bio_record_left_ = record;
      }
    }
    size_t n = std::min(avail, size_t(std::max(len, 0)));
    if (c->bio_record_left_) {
      n = std::min(n, c->bio_record_left_);
      c->bio_record_left_ -= n;
    }
    std::memcpy(out, c->in_.data() + c->in_begin_, n);
    c->in_begin_ += n;
    return int(n);
  }

  static long bio_ctrl(BIO *, int cmd, long, void *) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

  static BIO_METHOD *bio_method() {
    static BIO_METHOD *m = [] {
      BIO_METHOD *mm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "alknet-reactor");
      BIO_meth_set_write(mm, bio_write);
      BIO_meth_set_read(mm, bio_read);
      BIO_meth_set_ctrl(mm, bio_ctrl);
      return mm;
    }();
    return m;
  }

  rt::UniqueFd fd_;
  std::vector<std::byte> in_;
  size_t in_begin_ = 0, in_end_ = 0;
  bool in_filled_ = false;  // a recv filled the buffer: grow it to kRecvBufferBulk
  bool in_eof_ = false;
  int recv_error_ = 0;
  bool recv_busy_ = false;
  rt::Event recv_done_;
  stream::Bytes out_, sending_;
  int send_error_ = 0;
  bool send_busy_ = false;
  rt::Event send_done_;
  bool read_closed_ = false, write_closed_ = false;
  std::vector<std::byte> replay_;
  size_t replay_pos_ = 0;
  // Record takeover: BoringSSL's BIO serves whole records once the handshake is done.
  bool whole_records_ = false, offload_refused_ = false;
  size_t bio_record_left_ = 0;  // bytes of the record BoringSSL is reading still to hand it
  std::unique_ptr<tls13::RecordKeys> rx_, tx_;  // set together, once the records are ours
  size_t plain_begin_ = 0, plain_end_ = 0;  // opened content in in_ not yet read
  std::vector<uint8_t> handshake_in_;       // a post-handshake message arriving in pieces
  bssl::UniquePtr<SSL> ssl_;  // last: freed first, while the buffers its BIO uses still exist
};

// SSL ex_data: set (to the context) on connections answering a tls-alpn-01 challenge.
int acme_ex_index() {
  static int idx = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}
// SSL_CTX ex_data: the TlsServerContext that owns the SSL_CTX.
int owner_ex_index() {
  static int idx = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return idx;
}

bool offers_alpn(const SSL_CLIENT_HELLO *hello, std::string_view want) {
  const uint8_t *data = nullptr;
  size_t len = 0;
  if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_application_layer_protocol_negotiation, &data, &len) ||
      len < 2)
    return false;
  size_t list = size_t(data[0]) << 8 | data[1];
  if (list != len - 2) return false;
  for (size_t i = 2; i < len;) {
    size_t l = data[i];
    if (l == 0 || i + 1 + l > len) return false;
    if (std::string_view(reinterpret_cast<const char *>(data + i + 1), l) == want) return true;
    i += 1 + l;
  }
  return false;
}


// Early ClientHello hook: an ACME validator (ALPN acme-tls/1) asking for a name with a
// pending challenge gets the challenge certificate instead of the server's.
ssl_select_cert_result_t select_certificate(const SSL_CLIENT_HELLO *hello) {
  SSL *ssl = hello->ssl;
  auto *owner = static_cast<TlsServerContext *>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), owner_ex_index()));
  if (!owner || !owner->acme_challenges() || !offers_alpn(hello, kAlpnAcme)) return ssl_select_cert_success;
  const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!sni) return ssl_select_cert_success;
  auto answer = owner->acme_challenges()(sni);
  if (!answer) return ssl_select_cert_success;
  bssl::UniquePtr<BIO> cb(BIO_new_mem_buf(answer->first.data(), int(answer->first.size())));
  bssl::UniquePtr<X509> cert(cb ? PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr) : nullptr);
  bssl::UniquePtr<BIO> kb(BIO_new_mem_buf(answer->second.data(), int(answer->second.size())));
  bssl::UniquePtr<EVP_PKEY> key(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!cert || !key || SSL_use_certificate(ssl, cert.get()) != 1 || SSL_use_PrivateKey(ssl, key.get()) != 1) {
    ERR_clear_error();
    return ssl_select_cert_error;
  }
  SSL_set_ex_data(ssl, acme_ex_index(), owner);
  return ssl_select_cert_success;
}

bool alpn_allowed(const std::vector<std::string> &allowed, const std::string &got) {
  return std::find(allowed.begin(), allowed.end(), got) != allowed.end();
}

// Server preference: the first of our protocols the client offers. In stealth mode a client
// that offers none of ours is served like nginx would (http/1.1 if offered, else no ALPN),
// so the handshake alone does not give the server away.
int select_alpn(SSL *ssl, const uint8_t **out, uint8_t *outlen, const uint8_t *in, unsigned inlen, void *arg) {
  auto *cfg = static_cast<const TlsServerConfig *>(arg);
  auto find = [&](std::string_view want) -> bool {
    unsigned i = 0;
    while (i < inlen) {
      unsigned l = in[i];
      if (l == 0 || i + 1 + l > inlen) return false;
      if (std::string_view(reinterpret_cast<const char *>(in + i + 1), l) == want) {
        *out = in + i + 1;
        *outlen = uint8_t(l);
        return true;
      }
      i += 1 + l;
    }
    return false;
  };
  // Only a connection that got a challenge certificate may speak acme-tls/1.
  if (SSL_get_ex_data(ssl, acme_ex_index()) && find(kAlpnAcme)) return SSL_TLSEXT_ERR_OK;
  for (const auto &p : cfg->alpn)
    if (find(p)) return SSL_TLSEXT_ERR_OK;
  if (!cfg->stealth) return SSL_TLSEXT_ERR_ALERT_FATAL;
  if (find("http/1.1")) return SSL_TLSEXT_ERR_OK;
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

TlsClientContext::TlsClientContext(Private, TlsClientConfig cfg, detail::SslCtxPtr ctx)
    : cfg_(std::move(cfg)), ctx_(std::move(ctx)) {}

TlsServerContext::TlsServerContext(Private, TlsServerConfig cfg, detail::SslCtxPtr ctx) : cfg_(std::move(cfg)) {
  attach(std::move(ctx));
}

void TlsServerContext::attach(detail::SslCtxPtr ctx) {
  // The callbacks read the config owned by this context, which outlives every handshake
  // started from it (tls_accept holds a reference).
  SSL_CTX_set_alpn_select_cb(ctx.get(), select_alpn, const_cast<TlsServerConfig *>(&cfg_));
  SSL_CTX_set_select_certificate_cb(ctx.get(), select_certificate);
  SSL_CTX_set_ex_data(ctx.get(), owner_ex_index(), this);
  ctx_ = std::move(ctx);
}

rt::Result<std::shared_ptr<TlsClientContext>> TlsClientContext::create(const TlsClientConfig &cfg) {
  if (cfg.alpn.empty() || cfg.alpn.size() > 255) return rt::Error{EINVAL, "tls: bad ALPN protocol name"};
  if (cfg.server_name.empty() && !cfg.insecure) return rt::Error{EINVAL, "tls: no server name to verify"};
  ERR_clear_error();
  detail::SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return rt::Error{ENOMEM, "tls: " + ssl_error_text("cannot create context")};
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  if (cfg.insecure) {
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  } else {
    std::string ca = cfg.ca_file.empty() ? kSystemCaBundle : cfg.ca_file;
    if (auto e = unreadable("CA file", ca)) return *e;
    if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1)
      return rt::Error{EINVAL, "tls: CA file " + ca + ": " + ssl_error_text("no certificates found")};
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  return std::make_shared<TlsClientContext>(Private{}, cfg, std::move(ctx));
}

namespace {
rt::Result<detail::SslCtxPtr> new_server_ctx(const TlsServerConfig &cfg) {
  ERR_clear_error();
  detail::SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return rt::Error{ENOMEM, "tls: " + ssl_error_text("cannot create context")};
  // Stealth must look like a stock web server to TLS 1.2-only scanners too; our own client
  // always speaks 1.3.
  SSL_CTX_set_min_proto_version(ctx.get(), cfg.stealth ? TLS1_2_VERSION : TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
  return ctx;
}
}  // namespace

std::optional<stream::ChannelBinding> tls_channel_binding(SSL *ssl) {
  if (!ssl || SSL_in_init(ssl) || SSL_version(ssl) != TLS1_3_VERSION) return std::nullopt;
  static constexpr std::string_view kLabel = "EXPORTER-alknet-ssh-channel-binding";
  stream::ChannelBinding b{};
  if (!SSL_export_keying_material(ssl, b.data(), b.size(), kLabel.data(), kLabel.size(), nullptr, 0, 0))
    return std::nullopt;
  return b;
}

bool use_pem_certificate(ssl_ctx_st *ctx, std::string_view chain, std::string_view key, std::string *why) {
  bssl::UniquePtr<BIO> cb(BIO_new_mem_buf(chain.data(), int(chain.size())));
  bssl::UniquePtr<X509> leaf(cb ? PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!leaf || SSL_CTX_use_certificate(ctx, leaf.get()) != 1) {
    *why = "certificate: " + ssl_error_text("unusable");
    return false;
  }
  SSL_CTX_clear_chain_certs(ctx);
  for (;;) {
    bssl::UniquePtr<X509> extra(PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr));
    if (!extra) break;
    if (SSL_CTX_add1_chain_cert(ctx, extra.get()) != 1) {
      *why = "certificate chain: " + ssl_error_text("unusable");
      return false;
    }
  }
  ERR_clear_error();  // the end of the chain reads as "no start line"
  bssl::UniquePtr<BIO> kb(BIO_new_mem_buf(key.data(), int(key.size())));
  bssl::UniquePtr<EVP_PKEY> pkey(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!pkey || SSL_CTX_use_PrivateKey(ctx, pkey.get()) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    *why = "key: " + ssl_error_text("does not match the certificate");
    return false;
  }
  return true;
}

rt::Result<void> TlsServerContext::use_certificate(std::string_view chain_pem, std::string_view key_pem) {
  auto ctx = new_server_ctx(cfg_);
  if (!ctx) return ctx.error();
  std::string why;
  if (!use_pem_certificate(ctx->get(), chain_pem, key_pem, &why)) return rt::Error{EINVAL, "tls: new " + why};
  attach(std::move(ctx.value()));
  return {};
}

rt::Result<std::shared_ptr<TlsServerContext>> TlsServerContext::create(const TlsServerConfig &cfg) {
  for (const auto &p : cfg.alpn)
    if (p.empty() || p.size() > 255) return rt::Error{EINVAL, "tls: bad ALPN protocol name"};
  if (!cfg.cert_pem.empty()) {
    auto ctx = new_server_ctx(cfg);
    if (!ctx) return ctx.error();
    std::string why;
    if (!use_pem_certificate(ctx->get(), cfg.cert_pem, cfg.key_pem, &why)) return rt::Error{EINVAL, "tls: " + why};
    return std::make_shared<TlsServerContext>(Private{}, cfg, std::move(ctx.value()));
  }
  if (auto e = unreadable("certificate", cfg.cert_file)) return *e;
  if (auto e = unreadable("key", cfg.key_file)) return *e;
  auto made = new_server_ctx(cfg);
  if (!made) return made.error();
  detail::SslCtxPtr ctx = std::move(made.value());
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), cfg.cert_file.c_str()) != 1)
    return rt::Error{EINVAL, "tls: certificate " + cfg.cert_file + ": " + ssl_error_text("unusable")};
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), cfg.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    uint32_t e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_X509 &&
        (ERR_GET_REASON(e) == X509_R_KEY_TYPE_MISMATCH || ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)) {
      ERR_clear_error();
      return rt::Error{EINVAL, "tls: key " + cfg.key_file + " does not match certificate " + cfg.cert_file};
    }
    return rt::Error{EINVAL, "tls: key " + cfg.key_file + ": " + ssl_error_text("unusable")};
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return rt::Error{EINVAL, "tls: key " + cfg.key_file + " does not match certificate " + cfg.cert_file};
  return std::make_shared<TlsServerContext>(Private{}, cfg, std::move(ctx));
}

rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> tls_connect(std::shared_ptr<TlsClientContext> ctx,
                                                                  rt::UniqueFd tcp) {
  const auto &cfg = ctx->config();
  auto conn = std::make_unique<TlsConn>(ctx->native(), std::move(tcp));
  if (!conn->valid()) co_return rt::Error{ENOMEM, "tls: cannot create connection"};
  SSL *ssl = conn->ssl();
  SSL_set_connect_state(ssl);
  std::string wire;
  wire.push_back(char(cfg.alpn.size()));
  wire += cfg.alpn;
  SSL_set_alpn_protos(ssl, reinterpret_cast<const uint8_t *>(wire.data()), wire.size());
  bool ip = is_ip_literal(cfg.server_name);
  if (!cfg.server_name.empty() && !ip) SSL_set_tlsext_host_name(ssl, cfg.server_name.c_str());
  if (!cfg.insecure) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(param, cfg.server_name.c_str())
                : X509_VERIFY_PARAM_set1_host(param, cfg.server_name.data(), cfg.server_name.size());
    if (ok != 1) co_return rt::Error{EINVAL, "tls: cannot verify against name " + cfg.server_name};
  }
  auto deadline = rt::Clock::now() + cfg.handshake_timeout;
  auto hs = co_await conn->handshake(deadline);
  if (!hs) {
    long v = SSL_get_verify_result(ssl);
    if (!cfg.insecure && v != X509_V_OK)
      co_return rt::Error{rt::kErrProtocol, "tls: certificate of " + cfg.server_name +
                                                " not trusted: " + X509_verify_cert_error_string(v)};
    co_return hs.error();
  }
  std::string got = selected_alpn(ssl);
  if (got != cfg.alpn)
    co_return rt::Error{rt::kErrProtocol, "tls: server did not agree to ALPN " + cfg.alpn +
                                              (got.empty() ? std::string(" (none selected)") : " (got " + got + ")")};
  co_return std::unique_ptr<stream::Stream>(std::move(conn));
}

rt::Task<rt::Result<std::unique_ptr<stream::Stream>>> tls_accept(std::shared_ptr<TlsServerContext> ctx,
                                                                 rt::UniqueFd tcp) {
  const auto &cfg = ctx->config();
  auto conn = std::make_unique<TlsConn>(ctx->native(), std::move(tcp));
  if (!conn->valid()) co_return rt::Error{ENOMEM, "tls: cannot create connection"};
  SSL_set_accept_state(conn->ssl());
  auto hs = co_await conn->handshake(rt::Clock::now() + cfg.handshake_timeout);
  if (!hs) co_return hs.error();
  // RFC 8737 §3: the validator only looks at the certificate; nothing more is said.
  if (SSL_get_ex_data(conn->ssl(), acme_ex_index()) && selected_alpn(conn->ssl()) == kAlpnAcme) {
    conn->close();
    co_return rt::Error{rt::kErrNotAllowed, "tls: acme-tls/1 challenge answered"};
  }
  bool ours = alpn_allowed(cfg.alpn, selected_alpn(conn->ssl()));
  if (!cfg.stealth) {
    if (!ours) co_return rt::Error{rt::kErrProtocol, "tls: client did not offer ALPN " + cfg.alpn.front()};
    co_return std::unique_ptr<stream::Stream>(std::move(conn));
  }
  rt::Error refused{rt::kErrNotAllowed, "stealth: not an SSH client"};
  // The 404 is bounded like the handshake, so a client that never reads cannot hold it open.
  if (!ours) {
    co_await conn->send_and_close(kStealthNotFound, rt::Clock::now() + cfg.handshake_timeout);
    co_return refused;
  }
  std::vector<std::byte> peeked;
  auto peek_deadline = rt::Clock::now() + cfg.peek_timeout;
  std::byte buf[4096];
  PeekVerdict verdict = PeekVerdict::NeedMore;
  while (verdict == PeekVerdict::NeedMore) {
    ssize_t n = co_await conn->read_until(buf, peek_deadline);
    if (n <= 0) {
      verdict = PeekVerdict::NotSsh;  // silence, EOF or garbage
      break;
    }
    peeked.insert(peeked.end(), buf, buf + n);
    verdict = classify_first_bytes(peeked);
  }
  if (verdict != PeekVerdict::Ssh) {
    co_await conn->send_and_close(kStealthNotFound, rt::Clock::now() + cfg.handshake_timeout);
    co_return refused;
  }
  conn->set_replay(std::move(peeked));
  co_return std::unique_ptr<stream::Stream>(std::move(conn));
}

}  // namespace alk::transport
