// SSH key exchange pieces (RFC 4253 §7-8, RFC 8731, OpenSSH PROTOCOL): the KEXINIT message,
// algorithm negotiation, curve25519-sha256 and the key derivation that feeds packet.hpp.
// Pure functions over bytes; the protocol engine strings them together.
//
// What we speak: kex curve25519-sha256 (and its @libssh.org alias), host key ssh-ed25519,
// ciphers aes128-gcm@openssh.com, aes256-gcm@openssh.com, chacha20-poly1305@openssh.com (all
// AEAD, so no MAC is negotiated), no compression. Stock OpenSSH offers all of them. The initial
// exchange also carries the strict-kex markers (Terrapin, CVE-2023-48795) and ext-info-c.
//
// Over tls and quic every byte would be sealed twice: by the TLS/QUIC channel and by the SSH
// cipher. So an alknet peer on such a channel puts one more cipher first in both lists,
// "tls-bound-<binding in hex>@alknet.invalid", where the binding is that channel's TLS 1.3
// exporter (stream.hpp). Negotiation picks a name only if both lists carry it, i.e. only if both
// ends see the same TLS session; a relay that terminates TLS has different sessions on its two
// legs, so the names differ and the usual AEAD is chosen. The KEXINITs are part of the exchange
// hash that the server's host key signs, so nobody in between can rewrite the names without the
// key exchange failing. Under the bound cipher the SSH host-key check therefore also
// authenticates the TLS channel (whatever its certificate), and that channel's AEAD protects
// the packets. OpenSSH never lists the name, so it never meets this.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ssh/packet.hpp"

namespace alk::ssh {

// Message numbers (RFC 4250 §4.1).
namespace msg {
inline constexpr uint8_t kDisconnect = 1, kIgnore = 2, kUnimplemented = 3, kDebug = 4, kServiceRequest = 5,
                         kServiceAccept = 6, kExtInfo = 7, kKexInit = 20, kNewKeys = 21, kKexEcdhInit = 30,
                         kKexEcdhReply = 31, kUserauthRequest = 50, kUserauthFailure = 51, kUserauthSuccess = 52,
                         kUserauthBanner = 53, kUserauthPkOk = 60, kGlobalRequest = 80, kRequestSuccess = 81,
                         kRequestFailure = 82, kChannelOpen = 90, kChannelOpenConfirmation = 91,
                         kChannelOpenFailure = 92, kChannelWindowAdjust = 93, kChannelData = 94,
                         kChannelExtendedData = 95, kChannelEof = 96, kChannelClose = 97, kChannelRequest = 98,
                         kChannelSuccess = 99, kChannelFailure = 100;
}

enum class Role { Client, Server };

// The ten name-lists of SSH_MSG_KEXINIT, in wire order.
enum KexList { kKexAlgs, kHostKeyAlgs, kEncC2S, kEncS2C, kMacC2S, kMacS2C, kCompC2S, kCompS2C, kLangC2S, kLangS2C };

struct KexInit {
  std::array<uint8_t, 16> cookie{};
  std::array<std::vector<std::string>, 10> lists;
  bool first_kex_follows = false;
};

// Parses a whole KEXINIT payload (starting with the message byte 20). Refuses trailing garbage
// other than the reserved uint32, names that are empty or over 64 bytes, lists over 4 KiB.
std::optional<KexInit> parse_kexinit(std::span<const uint8_t> payload);
std::vector<uint8_t> encode_kexinit(const KexInit& k);

// Our offer. Cipher preference puts AES-GCM first when the CPU has AES instructions, else
// ChaCha20-Poly1305; with a channel binding, the bound cipher comes before both. `initial`
// adds the strict-kex and ext-info markers (first exchange only). `ciphers` (names, in
// preference order) replaces the default list, bound cipher included, when not empty.
using Binding = std::array<uint8_t, 16>;
KexInit our_kexinit(Role role, bool initial, const std::array<uint8_t, 16>& cookie,
                    const std::vector<std::string>& ciphers = {}, const std::optional<Binding>& binding = {});
// "tls-bound-" + 32 lower-case hex digits + "@alknet.invalid" (57 bytes: names stop at 64).
std::string tls_bound_cipher_name(const Binding& binding);

struct Negotiated {
  std::string kex;      // "curve25519-sha256" or the @libssh.org alias
  std::string hostkey;  // "ssh-ed25519"
  Cipher c2s = Cipher::None;
  Cipher s2c = Cipher::None;
  bool strict = false;           // both sides sent their strict-kex marker (initial exchange)
  bool peer_wants_ext_info = false;  // server side: the client sent ext-info-c
  // A side that set first_kex_packet_follows and guessed the algorithms wrong: its next kex
  // packet must be ignored (RFC 4253 §7).
  bool client_guessed_wrong = false;
  bool server_guessed_wrong = false;
};

// RFC 4253 §7.1: for each list the first client algorithm the server also has. err says which
// list had nothing in common, e.g. "no common cipher (client to server)".
std::optional<Negotiated> negotiate(const KexInit& client, const KexInit& server, bool initial, std::string* err);

struct X25519Key {
  std::array<uint8_t, 32> priv{};
  std::array<uint8_t, 32> pub{};
  static X25519Key generate();
};

// The shared secret, or nullopt for a peer value that is not 32 bytes or yields all zeros (a
// low-order point: RFC 8731 §3 says abort).
std::optional<std::array<uint8_t, 32>> x25519_shared(const X25519Key& ours, std::span<const uint8_t> peer_pub);

// Appends the unsigned big-endian number as an SSH mpint (RFC 4251 §5: minimal, with a 0x00 in
// front when the top bit is set).
void wire_put_mpint(std::vector<uint8_t>& out, std::span<const uint8_t> unsigned_be);

struct KexHashInput {
  std::string_view client_version, server_version;  // identification strings without CR LF
  std::span<const uint8_t> client_kexinit, server_kexinit;  // whole payloads
  std::span<const uint8_t> host_key_blob;
  std::span<const uint8_t> client_pub, server_pub;
  std::span<const uint8_t> shared_secret;  // the raw 32 X25519 bytes (RFC 8731: read as a big-endian number)
};
// H = SHA-256 over the fields of RFC 4253 §8 / RFC 5656 §4 in that order.
std::array<uint8_t, 32> exchange_hash(const KexHashInput& in);

struct SessionKeys {
  DirectionKeys c2s, s2c;
};
// RFC 4253 §7.2 with SHA-256: letter A/B IVs, C/D keys, extended by re-hashing as needed.
SessionKeys derive_keys(std::span<const uint8_t> shared_secret, std::span<const uint8_t> exchange_hash,
                        std::span<const uint8_t> session_id, Cipher c2s, Cipher s2c);

// The blob a server signs for the host-key proof and a client checks: "ssh-ed25519" signature
// over H (RFC 8709). Verification refuses anything but string("ssh-ed25519") + 64 bytes.
std::vector<uint8_t> ed25519_signature_blob(std::span<const uint8_t> message, std::span<const uint8_t, 64> private_key);
bool ed25519_verify_blob(std::span<const uint8_t> signature_blob, std::span<const uint8_t> message,
                         std::span<const uint8_t> public_key_blob);

}  // namespace alk::ssh
