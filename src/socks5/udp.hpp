// SOCKS5 UDP ASSOCIATE relay framing (RFC 1928 §7 over an SSH channel). Pure, no I/O.
//
// The client and server of alknet carry datagrams over one `direct-tcpip` channel to the
// reserved destination `alknet-udp:0`. A channel is a byte stream, so every datagram is a
// frame:
//
//     uint16 LEN (big-endian) | LEN bytes: RSV(2)=0 FRAG(1)=0 ATYP DST.ADDR DST.PORT DATA
//
// The frame body is exactly a SOCKS5 UDP datagram, so the client forwards its SOCKS client's
// datagrams with a length in front and hands the server's frames back unchanged. Towards the
// server DST is where the datagram goes; towards the client it is where the reply came from.
// LEN is at most kUdpMaxFrameBody; a datagram that would not fit is dropped, never split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "socks5/codec.hpp"

namespace alk::socks5 {

inline constexpr const char *kUdpDestination = "alknet-udp";
inline constexpr size_t kUdpFrameLenSize = 2;
inline constexpr size_t kUdpMaxFrameBody = 65535;

struct UdpFrame {
  // Header well-formed and FRAG == 0. Otherwise the frame is to be dropped (the length
  // prefix keeps the stream in step, so one bad frame never ends the association).
  bool usable = false;
  Address dst;                        // when usable
  std::span<const uint8_t> body;      // the whole frame body (header + data)
  std::span<const uint8_t> payload;   // the data after the header, when usable
};

// One frame from the front of in. Incomplete until the length prefix and the whole body are
// there; then Ok with consumed = 2 + LEN (whether or not the frame is usable). A zero LEN
// is Invalid: no sender produces it, so the stream is not ours (close the channel).
// Never reads beyond in, never allocates more than a parsed domain name.
Parsed<UdpFrame> parse_udp_frame(std::span<const uint8_t> in);

// A SOCKS5 UDP datagram (header + data, as a SOCKS client sends it) checked and turned into
// a frame appended to out. False (nothing appended) when the header is malformed, FRAG != 0,
// or the datagram is longer than kUdpMaxFrameBody.
bool append_frame_for_datagram(std::vector<uint8_t> &out, std::span<const uint8_t> datagram);

// Header for dst, then payload, as one frame appended to out. False (nothing appended) when
// dst cannot be encoded or the body would exceed kUdpMaxFrameBody.
bool append_udp_frame(std::vector<uint8_t> &out, const Address &dst, std::span<const uint8_t> payload);

// Cuts a channel's byte stream into frames, in one fixed buffer that holds a whole frame of the
// largest size plus one read chunk: memory per association is bounded whatever the peer sends.
class UdpFrameReader {
 public:
  explicit UdpFrameReader(size_t read_chunk = 16 * 1024);
  // Where the next read goes; never empty. Invalidates the spans of frames returned so far.
  std::span<uint8_t> room();
  void commit(size_t n);
  // The next whole frame (its spans stay valid until room() is called), Incomplete when more
  // bytes are needed, Invalid when the stream is broken (end the association).
  Parsed<UdpFrame> next();

 private:
  std::vector<uint8_t> buf_;
  size_t head_ = 0, tail_ = 0;
};

}  // namespace alk::socks5
