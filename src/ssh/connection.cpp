#include "ssh/connection.hpp"

#include "ssh/kex.hpp"
#include "ssh/keys.hpp"

namespace alk::ssh::conn {

namespace {

template <class... F>
struct Overload : F... {
  using F::operator()...;
};
template <class... F>
Overload(F...) -> Overload<F...>;  // (clang 14 does not deduce aggregates)

std::nullopt_t bad(std::string *error, const char *what) {
  if (error) *error = std::string("bad ") + what;
  return std::nullopt;
}

// name + want_reply + the rest, for GLOBAL_REQUEST and CHANNEL_REQUEST.
bool request_tail(WireReader &r, std::span<const uint8_t> body, std::string &name, bool &want_reply,
                  std::span<const uint8_t> &data) {
  if (!r.string(name) || r.remaining() < 1) return false;
  want_reply = body[r.offset()] != 0;
  data = body.subspan(r.offset() + 1);
  return true;
}

void put_bool(std::vector<uint8_t> &m, bool b) { m.push_back(b ? 1 : 0); }

void put_raw(std::vector<uint8_t> &m, std::span<const uint8_t> d) { m.insert(m.end(), d.begin(), d.end()); }

}  // namespace

std::optional<Message> decode(std::span<const uint8_t> payload, std::string *error) {
  if (payload.empty()) return bad(error, "empty message");
  const uint8_t type = payload[0];
  const auto body = payload.subspan(1);
  WireReader r(body);
  switch (type) {
    case msg::kGlobalRequest: {
      GlobalRequest g;
      if (!request_tail(r, body, g.name, g.want_reply, g.data)) return bad(error, "GLOBAL_REQUEST");
      return g;
    }
    case msg::kRequestSuccess:
    case msg::kRequestFailure:
      return GlobalReply{type == msg::kRequestSuccess, body};
    case msg::kChannelOpen: {
      Open o;
      if (!r.string(o.type) || !r.u32(o.sender) || !r.u32(o.window) || !r.u32(o.max_packet))
        return bad(error, "CHANNEL_OPEN");
      o.data = body.subspan(r.offset());
      return o;
    }
    default:
      break;
  }
  if (type < msg::kChannelOpenConfirmation || type > msg::kChannelFailure) return Other{type};
  uint32_t id = 0;
  if (!r.u32(id)) return bad(error, "channel message (no recipient)");
  switch (type) {
    case msg::kChannelOpenConfirmation: {
      OpenConfirmation c;
      c.recipient = id;
      if (!r.u32(c.sender) || !r.u32(c.window) || !r.u32(c.max_packet)) return bad(error, "CHANNEL_OPEN_CONFIRMATION");
      return c;
    }
    case msg::kChannelOpenFailure: {
      OpenFailure f;
      f.recipient = id;
      if (!r.u32(f.reason)) return bad(error, "CHANNEL_OPEN_FAILURE");
      (void)r.string(f.description);  // optional in practice: some peers send none
      return f;
    }
    case msg::kChannelWindowAdjust: {
      WindowAdjust w;
      w.recipient = id;
      if (!r.u32(w.bytes)) return bad(error, "CHANNEL_WINDOW_ADJUST");
      return w;
    }
    case msg::kChannelData: {
      Data d;
      d.recipient = id;
      if (!r.bytes(d.data)) return bad(error, "CHANNEL_DATA");
      return d;
    }
    case msg::kChannelExtendedData: {
      ExtendedData d;
      d.recipient = id;
      if (!r.u32(d.code) || !r.bytes(d.data)) return bad(error, "CHANNEL_EXTENDED_DATA");
      return d;
    }
    case msg::kChannelEof:
      return Eof{id};
    case msg::kChannelClose:
      return Close{id};
    case msg::kChannelRequest: {
      Request q;
      q.recipient = id;
      if (!request_tail(r, body, q.name, q.want_reply, q.data)) return bad(error, "CHANNEL_REQUEST");
      return q;
    }
    default:  // kChannelSuccess, kChannelFailure
      return RequestReply{id, type == msg::kChannelSuccess};
  }
}

std::vector<uint8_t> encode(const Message &m) {
  std::vector<uint8_t> out;
  auto head = [&out](uint8_t type, uint32_t recipient) {
    out.push_back(type);
    wire_put_u32(out, recipient);
  };
  std::visit(Overload{
                 [&](const GlobalRequest &g) {
                   out.push_back(msg::kGlobalRequest);
                   wire_put_string(out, g.name);
                   put_bool(out, g.want_reply);
                   put_raw(out, g.data);
                 },
                 [&](const GlobalReply &g) {
                   out.push_back(g.success ? msg::kRequestSuccess : msg::kRequestFailure);
                   put_raw(out, g.data);
                 },
                 [&](const Open &o) {
                   out.push_back(msg::kChannelOpen);
                   wire_put_string(out, o.type);
                   wire_put_u32(out, o.sender);
                   wire_put_u32(out, o.window);
                   wire_put_u32(out, o.max_packet);
                   put_raw(out, o.data);
                 },
                 [&](const OpenConfirmation &c) {
                   head(msg::kChannelOpenConfirmation, c.recipient);
                   wire_put_u32(out, c.sender);
                   wire_put_u32(out, c.window);
                   wire_put_u32(out, c.max_packet);
                 },
                 [&](const OpenFailure &f) {
                   head(msg::kChannelOpenFailure, f.recipient);
                   wire_put_u32(out, f.reason);
                   wire_put_string(out, f.description);
                   wire_put_string(out, std::string_view(""));  // language tag
                 },
                 [&](const WindowAdjust &w) {
                   head(msg::kChannelWindowAdjust, w.recipient);
                   wire_put_u32(out, w.bytes);
                 },
                 [&](const Data &d) {
                   head(msg::kChannelData, d.recipient);
                   wire_put_string(out, d.data);
                 },
                 [&](const ExtendedData &d) {
                   head(msg::kChannelExtendedData, d.recipient);
                   wire_put_u32(out, d.code);
                   wire_put_string(out, d.data);
                 },
                 [&](const Eof &e) { head(msg::kChannelEof, e.recipient); },
                 [&](const Close &c) { head(msg::kChannelClose, c.recipient); },
                 [&](const Request &q) {
                   head(msg::kChannelRequest, q.recipient);
                   wire_put_string(out, q.name);
                   put_bool(out, q.want_reply);
                   put_raw(out, q.data);
                 },
                 [&](const RequestReply &q) { head(q.success ? msg::kChannelSuccess : msg::kChannelFailure, q.recipient); },
                 [&](const Other &o) { out.push_back(o.type); },
             },
             m);
  return out;
}

std::optional<uint32_t> recipient(const Message &m) {
  return std::visit(Overload{
                        [](const GlobalRequest &) -> std::optional<uint32_t> { return std::nullopt; },
                        [](const GlobalReply &) -> std::optional<uint32_t> { return std::nullopt; },
                        [](const Open &) -> std::optional<uint32_t> { return std::nullopt; },
                        [](const Other &) -> std::optional<uint32_t> { return std::nullopt; },
                        [](const auto &c) -> std::optional<uint32_t> { return c.recipient; },
                    },
                    m);
}

std::optional<TcpipEndpoints> decode_tcpip(std::span<const uint8_t> data) {
  WireReader r(data);
  TcpipEndpoints e;
  uint32_t port = 0, oport = 0;
  if (!r.string(e.host) || !r.u32(port) || !r.string(e.orig_host) || !r.u32(oport)) return std::nullopt;
  if (port > 65535 || oport > 65535 || e.host.size() > kMaxHost || e.orig_host.size() > kMaxHost) return std::nullopt;
  e.port = uint16_t(port);
  e.orig_port = uint16_t(oport);
  return e;
}

std::vector<uint8_t> encode_tcpip(const TcpipEndpoints &e) {
  std::vector<uint8_t> out;
  wire_put_string(out, e.host);
  wire_put_u32(out, e.port);
  wire_put_string(out, e.orig_host);
  wire_put_u32(out, e.orig_port);
  return out;
}

std::optional<ForwardAddress> decode_forward(std::span<const uint8_t> data) {
  WireReader r(data);
  ForwardAddress f;
  uint32_t port = 0;
  if (!r.string(f.host) || !r.u32(port) || port > 65535 || f.host.size() > kMaxForwardHost) return std::nullopt;
  f.port = uint16_t(port);
  return f;
}

std::vector<uint8_t> encode_forward(const ForwardAddress &f) {
  std::vector<uint8_t> out;
  wire_put_string(out, f.host);
  wire_put_u32(out, f.port);
  return out;
}

std::optional<uint32_t> decode_exit_status(std::span<const uint8_t> data) {
  WireReader r(data);
  uint32_t status = 0;
  if (!r.u32(status)) return std::nullopt;
  return status;
}

std::vector<uint8_t> encode_exit_status(uint32_t status) {
  std::vector<uint8_t> out;
  wire_put_u32(out, status);
  return out;
}

}  // namespace alk::ssh::conn
