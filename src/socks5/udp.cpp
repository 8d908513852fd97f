#include "socks5/udp.hpp"

#include <algorithm>

namespace alk::socks5 {

Parsed<UdpFrame> parse_udp_frame(std::span<const uint8_t> in) {
  Parsed<UdpFrame> p{Status::Incomplete};
  if (in.size() < kUdpFrameLenSize) return p;
  const size_t len = size_t(in[0]) << 8 | in[1];
  if (len == 0) {
    p.status = Status::Invalid;
    return p;
  }
  if (in.size() - kUdpFrameLenSize < len) return p;
  p.status = Status::Ok;
  p.consumed = kUdpFrameLenSize + len;
  p.value.body = in.subspan(kUdpFrameLenSize, len);
  auto h = parse_udp_datagram(p.value.body);
  if (h.status == Status::Ok && h.value.frag == 0) {
    p.value.usable = true;
    p.value.dst = std::move(h.value.dst);
    p.value.payload = p.value.body.subspan(h.value.header_len);
  }
  return p;
}

namespace {
void put_len(std::vector<uint8_t> &out, size_t at, size_t len) {
  out[at] = uint8_t(len >> 8);
  out[at + 1] = uint8_t(len);
}
}  // namespace

bool append_frame_for_datagram(std::vector<uint8_t> &out, std::span<const uint8_t> datagram) {
  if (datagram.size() > kUdpMaxFrameBody) return false;
  auto h = parse_udp_datagram(datagram);
  if (h.status != Status::Ok || h.value.frag != 0) return false;
  const size_t at = out.size();
  out.resize(at + kUdpFrameLenSize);
  put_len(out, at, datagram.size());
  out.insert(out.end(), datagram.begin(), datagram.end());
  return true;
}

bool append_udp_frame(std::vector<uint8_t> &out, const Address &dst, std::span<const uint8_t> payload) {
  const size_t at = out.size();
  out.insert(out.end(), {0, 0, 0, 0, 0});  // LEN, RSV, FRAG
  if (!append_address(out, dst) || out.size() - at - kUdpFrameLenSize + payload.size() > kUdpMaxFrameBody) {
    out.resize(at);
    return false;
  }
  put_len(out, at, out.size() - at - kUdpFrameLenSize + payload.size());
  out.insert(out.end(), payload.begin(), payload.end());
  return true;
}

UdpFrameReader::UdpFrameReader(size_t read_chunk) : buf_(kUdpFrameLenSize + kUdpMaxFrameBody + std::max<size_t>(read_chunk, 1)) {}

std::span<uint8_t> UdpFrameReader::room() {
  if (head_ > 0) {
    std::copy(buf_.begin() + ptrdiff_t(head_), buf_.begin() + ptrdiff_t(tail_), buf_.begin());
    tail_ -= head_;
    head_ = 0;
  }
  // At most one incomplete frame is left, so at least read_chunk bytes are free.
  return std::span(buf_).subspan(tail_);
}

void UdpFrameReader::commit(size_t n) { tail_ = std::min(tail_ + n, buf_.size()); }

Parsed<UdpFrame> UdpFrameReader::next() {
  auto f = parse_udp_frame(std::span<const uint8_t>(buf_).subspan(head_, tail_ - head_));
  if (f.status == Status::Ok) head_ += f.consumed;
  return f;
}

}  // namespace alk::socks5
