#include "ssh/userauth.hpp"

#include "ssh/kex.hpp"
#include "ssh/keys.hpp"

namespace alk::ssh {

namespace {

void put_header(std::vector<uint8_t>& out, std::string_view user, std::string_view algorithm,
                std::span<const uint8_t> key_blob) {
  out.push_back(msg::kUserauthRequest);
  wire_put_string(out, user);
  wire_put_string(out, std::string_view("ssh-connection"));
  wire_put_string(out, std::string_view("publickey"));
  out.push_back(1);  // has a signature
  wire_put_string(out, algorithm);
  wire_put_string(out, key_blob);
}

}  // namespace

std::vector<uint8_t> userauth_signed_data(std::span<const uint8_t> session_id, std::string_view user,
                                          std::string_view algorithm, std::span<const uint8_t> key_blob) {
  std::vector<uint8_t> out;
  wire_put_string(out, session_id);
  put_header(out, user, algorithm, key_blob);
  return out;
}

std::vector<uint8_t> userauth_publickey_request(std::span<const uint8_t> session_id, std::string_view user,
                                                std::string_view algorithm, std::span<const uint8_t> key_blob,
                                                std::span<const uint8_t, 64> secret) {
  auto sig = ed25519_signature_blob(userauth_signed_data(session_id, user, algorithm, key_blob), secret);
  std::vector<uint8_t> out;
  put_header(out, user, algorithm, key_blob);
  wire_put_string(out, sig);
  return out;
}

std::optional<UserauthRequest> parse_userauth_request(std::span<const uint8_t> payload) {
  if (payload.empty() || payload[0] != msg::kUserauthRequest) return std::nullopt;
  WireReader r(payload.subspan(1));
  UserauthRequest q;
  if (!r.string(q.user) || !r.string(q.service) || !r.string(q.method)) return std::nullopt;
  if (q.user.size() > 256 || q.service.size() > 64 || q.method.size() > 64) return std::nullopt;
  if (q.method != "publickey") return q;
  if (r.remaining() < 1) return std::nullopt;
  q.has_signature = payload[1 + r.offset()] != 0;
  WireReader rest(payload.subspan(2 + r.offset()));
  if (!rest.string(q.algorithm) || !rest.bytes(q.key_blob)) return std::nullopt;
  if (q.has_signature && !rest.bytes(q.signature)) return std::nullopt;
  if (rest.remaining() != 0) return std::nullopt;
  return q;
}

std::vector<uint8_t> userauth_failure(bool partial) {
  std::vector<uint8_t> out{msg::kUserauthFailure};
  wire_put_string(out, std::string_view("publickey"));
  out.push_back(partial ? 1 : 0);
  return out;
}

std::vector<uint8_t> userauth_pk_ok(std::string_view algorithm, std::span<const uint8_t> key_blob) {
  std::vector<uint8_t> out{msg::kUserauthPkOk};
  wire_put_string(out, algorithm);
  wire_put_string(out, key_blob);
  return out;
}

}  // namespace alk::ssh
