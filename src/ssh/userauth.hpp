// SSH user authentication messages (RFC 4252), publickey method only: what a client signs and
// sends, and what a server parses and checks. Pure; the engine decides what to do with them.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace alk::ssh {

// RFC 4252 §7: the bytes a publickey signature covers.
std::vector<uint8_t> userauth_signed_data(std::span<const uint8_t> session_id, std::string_view user,
                                          std::string_view algorithm, std::span<const uint8_t> key_blob);

// A complete signed SSH_MSG_USERAUTH_REQUEST for service "ssh-connection". key_blob is the
// plain Ed25519 public key blob or an OpenSSH certificate blob (algorithm names which);
// secret is the Ed25519 key that signs either way.
std::vector<uint8_t> userauth_publickey_request(std::span<const uint8_t> session_id, std::string_view user,
                                                std::string_view algorithm, std::span<const uint8_t> key_blob,
                                                std::span<const uint8_t, 64> secret);

struct UserauthRequest {
  std::string user, service, method;
  // publickey only:
  bool has_signature = false;
  std::string algorithm;
  std::span<const uint8_t> key_blob;   // points into the parsed payload
  std::span<const uint8_t> signature;  // idem (empty without a signature)
};
// Parses SSH_MSG_USERAUTH_REQUEST. Methods other than publickey parse with just user, service and
// method filled in (the rest of their payload is not ours to read).
std::optional<UserauthRequest> parse_userauth_request(std::span<const uint8_t> payload);

// SSH_MSG_USERAUTH_FAILURE listing the methods that can continue ("publickey").
std::vector<uint8_t> userauth_failure(bool partial = false);
// SSH_MSG_USERAUTH_PK_OK for a key the server would accept (the unsigned query, RFC 4252 §7).
std::vector<uint8_t> userauth_pk_ok(std::string_view algorithm, std::span<const uint8_t> key_blob);

}  // namespace alk::ssh
