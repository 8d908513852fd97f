#include "ssh/packet.hpp"

#include "crypto/aes_gcm.hpp"

#include <openssl/chacha.h>
#include <openssl/crypto.h>
#include <openssl/poly1305.h>

#include <cstring>
#include <memory>

namespace alk::ssh {

namespace {

constexpr size_t kTagLen = 16;

// OpenSSH's ChaCha20 uses the original 64-bit nonce and 64-bit block counter; BoringSSL's is the
// IETF layout (32-bit counter, 96-bit nonce). The two agree when the counter's high word (the
// first four nonce bytes in the IETF layout) is zero, which it is for packets under 256 GiB.
std::array<uint8_t, 12> chacha_nonce(uint32_t seq) {
  std::array<uint8_t, 12> n{};
  put_u32(n.data() + 8, seq);  // the 64-bit big-endian sequence number: high half is zero
  return n;
}

}  // namespace

class CipherState {
 public:
  explicit CipherState(Cipher c) : cipher(c) {}
  ~CipherState() {
    OPENSSL_cleanse(chacha_main.data(), chacha_main.size());
    OPENSSL_cleanse(chacha_len.data(), chacha_len.size());
  }
  CipherState(const CipherState&) = delete;
  CipherState& operator=(const CipherState&) = delete;

  bool init(const DirectionKeys& k) {
    if (k.key.size() != cipher_key_len(cipher) || k.iv.size() != cipher_iv_len(cipher)) return false;
    switch (cipher) {
      case Cipher::None:
      case Cipher::TlsBound:
        return true;
      case Cipher::Aes128Gcm:
      case Cipher::Aes256Gcm: {
        if (!gcm.init(k.key)) return false;
        std::memcpy(gcm_iv.data(), k.iv.data(), 12);
        return true;
      }
      case Cipher::ChaCha20Poly1305:
        std::memcpy(chacha_main.data(), k.key.data(), 32);
        std::memcpy(chacha_len.data(), k.key.data() + 32, 32);
        return true;
    }
    return false;
  }

  // RFC 5647 §7.1: the last 8 IV bytes are a big-endian invocation counter, +1 per packet.
  void gcm_advance() {
    for (int i = 11; i >= 4; --i)
      if (++gcm_iv[size_t(i)] != 0) break;
  }

  void chacha_tag(uint32_t seq, const uint8_t* data, size_t len, uint8_t out[kTagLen]) const {
    auto nonce = chacha_nonce(seq);
    uint8_t poly_key[64] = {};
    CRYPTO_chacha_20(poly_key, poly_key, sizeof poly_key, chacha_main.data(), nonce.data(), 0);
    poly1305_state st;
    CRYPTO_poly1305_init(&st, poly_key);
    CRYPTO_poly1305_update(&st, data, len);
    CRYPTO_poly1305_finish(&st, out);
    OPENSSL_cleanse(poly_key, sizeof poly_key);
  }

  Cipher cipher;
  crypto::AesGcm gcm;
  std::array<uint8_t, 12> gcm_iv{};
  std::array<uint8_t, 32> chacha_main{};
  std::array<uint8_t, 32> chacha_len{};
};

std::optional<Cipher> cipher_from_name(std::string_view name) {
  if (name == "aes128-gcm@openssh.com") return Cipher::Aes128Gcm;
  if (name == "aes256-gcm@openssh.com") return Cipher::Aes256Gcm;
  if (name == "chacha20-poly1305@openssh.com") return Cipher::ChaCha20Poly1305;
  if (name.starts_with(kTlsBoundPrefix) && name.ends_with(kTlsBoundSuffix)) {
    auto hex = name.substr(kTlsBoundPrefix.size(), name.size() - kTlsBoundPrefix.size() - kTlsBoundSuffix.size());
    if (hex.size() == 32 && hex.find_first_not_of("0123456789abcdef") == std::string_view::npos) return Cipher::TlsBound;
  }
  return std::nullopt;
}

std::string_view cipher_name(Cipher c) {
  switch (c) {
    case Cipher::None: return "none";
    case Cipher::Aes128Gcm: return "aes128-gcm@openssh.com";
    case Cipher::Aes256Gcm: return "aes256-gcm@openssh.com";
    case Cipher::ChaCha20Poly1305: return "chacha20-poly1305@openssh.com";
    case Cipher::TlsBound: return "tls-bound";
  }
  return "none";
}

size_t cipher_key_len(Cipher c) {
  switch (c) {
    case Cipher::None: return 0;
    case Cipher::Aes128Gcm: return 16;
    case Cipher::Aes256Gcm: return 32;
    case Cipher::ChaCha20Poly1305: return 64;
    case Cipher::TlsBound: return 0;
  }
  return 0;
}

size_t cipher_iv_len(Cipher c) { return (c == Cipher::Aes128Gcm || c == Cipher::Aes256Gcm) ? 12 : 0; }

namespace {

// Block size for padding, and whether the 4-byte length counts towards it (only without an
// AEAD, where RFC 4253 pads the whole packet; the AEAD modes leave the length out).
// Packets without a cipher of their own ("none", and TlsBound whose channel seals them).
bool clear(Cipher c) { return c == Cipher::None || c == Cipher::TlsBound; }
size_t block_of(Cipher c) { return (c == Cipher::Aes128Gcm || c == Cipher::Aes256Gcm) ? 16 : 8; }
size_t tag_of(Cipher c) { return clear(c) ? 0 : kTagLen; }
size_t padding_for(Cipher c, size_t payload_len) {
  const size_t bs = block_of(c);
  const size_t covered = (clear(c) ? 4 : 0) + 1 + payload_len;
  size_t pad = bs - covered % bs;
  if (pad < 4) pad += bs;
  return pad;
}

}  // namespace

// ---- both directions ----

PacketDirection::PacketDirection() : st_(std::make_unique<CipherState>(Cipher::None)) {}
PacketDirection::~PacketDirection() = default;
PacketDirection::PacketDirection(PacketDirection&&) noexcept = default;
PacketDirection& PacketDirection::operator=(PacketDirection&&) noexcept = default;

bool PacketDirection::set_keys(const DirectionKeys& keys) {
  auto st = std::make_unique<CipherState>(keys.cipher);
  if (!st->init(keys)) return false;
  st_ = std::move(st);
  return true;
}

// ---- sealer ----

size_t PacketSealer::sealed_size(size_t payload_len) const {
  return kPacketHeader + payload_len + padding_for(st_->cipher, payload_len) + tag_of(st_->cipher);
}

size_t PacketSealer::seal_in_place(std::span<uint8_t> buf, size_t payload_len) {
  const Cipher c = st_->cipher;
  const size_t pad = padding_for(c, payload_len);
  const size_t packet_len = 1 + payload_len + pad;
  const size_t total = 4 + packet_len + tag_of(c);
  uint8_t* p = buf.data();
  put_u32(p, uint32_t(packet_len));
  p[4] = uint8_t(pad);
  // Padding is encrypted (by the AEAD, or under TlsBound by the channel), so its value carries
  // nothing; RFC 4253 only asks that it be "arbitrary". Zeros keep the per-packet path free of a random-number call.
  std::memset(p + kPacketHeader + payload_len, 0, pad);
  switch (c) {
    case Cipher::None:
    case Cipher::TlsBound:
      break;
    case Cipher::Aes128Gcm:
    case Cipher::Aes256Gcm: {
      st_->gcm.seal(st_->gcm_iv.data(), {p, 4}, {p + 4, packet_len}, p + 4);
      st_->gcm_advance();
      break;
    }
    case Cipher::ChaCha20Poly1305: {
      auto nonce = chacha_nonce(seq_);
      CRYPTO_chacha_20(p, p, 4, st_->chacha_len.data(), nonce.data(), 0);
      CRYPTO_chacha_20(p + 4, p + 4, packet_len, st_->chacha_main.data(), nonce.data(), 1);
      st_->chacha_tag(seq_, p, 4 + packet_len, p + 4 + packet_len);
      break;
    }
  }
  ++seq_;
  return total;
}

void PacketSealer::seal(std::span<const uint8_t> payload, std::vector<uint8_t>& out) {
  const size_t start = out.size();
  out.resize(start + sealed_size(payload.size()));
  if (!payload.empty()) std::memcpy(out.data() + start + kPacketHeader, payload.data(), payload.size());
  seal_in_place(std::span<uint8_t>(out).subspan(start), payload.size());
}

// ---- opener ----

Opened PacketOpener::open(std::span<uint8_t> buf) {
  Opened r;
  if (buf.size() < 4) return r;
  const Cipher c = st_->cipher;
  uint8_t len_bytes[4];
  std::memcpy(len_bytes, buf.data(), 4);
  if (c == Cipher::ChaCha20Poly1305) {
    // Decrypted into a copy: on NeedMore the buffer must stay as it came.
    auto nonce = chacha_nonce(seq_);
    CRYPTO_chacha_20(len_bytes, len_bytes, 4, st_->chacha_len.data(), nonce.data(), 0);
  }
  const size_t packet_len = get_u32(len_bytes);
  const size_t bs = block_of(c);
  const size_t aligned = clear(c) ? packet_len + 4 : packet_len;
  if (packet_len < 5 || packet_len > kMaxPacketLength || aligned % bs != 0) {
    r.status = Opened::Error;
    r.error = "bad packet length";
    return r;
  }
  const size_t total = 4 + packet_len + tag_of(c);
  if (buf.size() < total) {
    r.need = total;
    return r;
  }
  uint8_t* p = buf.data();
  switch (c) {
    case Cipher::None:
    case Cipher::TlsBound:
      break;
    case Cipher::Aes128Gcm:
    case Cipher::Aes256Gcm:
      if (!st_->gcm.open(st_->gcm_iv.data(), {p, 4}, {p + 4, packet_len}, p + 4, p + 4 + packet_len)) {
        r.status = Opened::Error;
        r.error = "message authentication failed";
        return r;
      }
      st_->gcm_advance();
      break;
    case Cipher::ChaCha20Poly1305: {
      uint8_t tag[kTagLen];
      st_->chacha_tag(seq_, p, 4 + packet_len, tag);
      if (CRYPTO_memcmp(tag, p + 4 + packet_len, kTagLen) != 0) {
        r.status = Opened::Error;
        r.error = "message authentication failed";
        return r;
      }
      auto nonce = chacha_nonce(seq_);
      std::memcpy(p, len_bytes, 4);
      CRYPTO_chacha_20(p + 4, p + 4, packet_len, st_->chacha_main.data(), nonce.data(), 1);
      break;
    }
  }
  const size_t pad = p[4];
  if (pad < 4 || pad + 1 >= packet_len) {
    r.status = Opened::Error;
    r.error = "bad padding length";
    return r;
  }
  ++seq_;
  r.status = Opened::Packet;
  r.consumed = total;
  r.payload = buf.subspan(kPacketHeader, packet_len - 1 - pad);
  return r;
}

}  // namespace alk::ssh
