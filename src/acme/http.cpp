#include "acme/http.hpp"

#include <algorithm>
#include <charconv>

namespace alk::acme {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool parse_decimal(std::string_view s, uint64_t max, uint64_t *out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v > max) return false;
  *out = v;
  return true;
}

ParseResult bad(std::string why) {
  ParseResult r;
  r.state = ParseState::Bad;
  r.error = std::move(why);
  return r;
}

// Decodes a chunked body starting at data; NeedMore until the last chunk and trailers ended.
ParseState decode_chunked(std::string_view data, std::string *out, std::string *err) {
  size_t pos = 0;
  out->clear();
  for (;;) {
    size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      if (data.size() - pos > 1024) {
        *err = "chunk size line too long";
        return ParseState::Bad;
      }
      return ParseState::NeedMore;
    }
    std::string_view line = data.substr(pos, eol - pos);
    line = line.substr(0, line.find(';'));  // chunk extensions are ignored
    line = trim(line);
    uint64_t size = 0;
    if (line.empty() || line.size() > 8) {
      *err = "bad chunk size";
      return ParseState::Bad;
    }
    auto [p, ec] = std::from_chars(line.data(), line.data() + line.size(), size, 16);
    if (ec != std::errc() || p != line.data() + line.size()) {
      *err = "bad chunk size";
      return ParseState::Bad;
    }
    pos = eol + 2;
    if (size == 0) {
      // Trailers, then an empty line.
      for (;;) {
        size_t e = data.find("\r\n", pos);
        if (e == std::string_view::npos) return ParseState::NeedMore;
        if (e == pos) return ParseState::Done;
        if (e - pos > 8192) {
          *err = "trailer too long";
          return ParseState::Bad;
        }
        pos = e + 2;
      }
    }
    if (out->size() + size > kMaxBodyBytes) {
      *err = "body too large";
      return ParseState::Bad;
    }
    if (data.size() - pos < size + 2) return ParseState::NeedMore;
    out->append(data.substr(pos, size));
    if (data.substr(pos + size, 2) != "\r\n") {
      *err = "chunk not followed by CRLF";
      return ParseState::Bad;
    }
    pos += size + 2;
  }
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto &[k, v] : headers)
    if (k == name) return v;
  return {};
}

std::optional<Url> parse_url(std::string_view s) {
  Url u;
  if (s.starts_with("https://")) {
    s.remove_prefix(8);
  } else if (s.starts_with("http://")) {
    u.https = false;
    u.port = 80;
    s.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  size_t slash = s.find_first_of("/?#");
  std::string_view authority = s.substr(0, slash);
  std::string_view rest = slash == std::string_view::npos ? std::string_view() : s.substr(slash);
  if (rest.find('#') != std::string_view::npos || authority.find('@') != std::string_view::npos) return std::nullopt;
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  std::string_view host = authority, port;
  if (authority.starts_with("[")) {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;
  }
  if (host.empty()) return std::nullopt;
  // A DNS name or IPv4 literal, or (bracketed) an IPv6 literal: nothing that would need
  // escaping in a Host header or could be read back differently.
  const bool bracketed = authority.starts_with("[");
  for (char c : host) {
    bool ok = bracketed ? (std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.')
                        : (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_');
    if (!ok) return std::nullopt;
  }
  if (bracketed && host.find(':') == std::string_view::npos) return std::nullopt;
  if (!port.empty() || authority.ends_with(":")) {
    uint64_t p = 0;
    if (!parse_decimal(port, 65535, &p) || p == 0) return std::nullopt;
    u.port = uint16_t(p);
  }
  u.host = std::string(host);
  u.target = rest.empty() ? "/" : std::string(rest);
  if (u.target[0] == '?') u.target.insert(0, "/");
  return u;
}

std::string build_request(std::string_view method, const Url &url, std::string_view body, std::string_view accept) {
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  if (url.port != (url.https ? 443 : 80)) host += ":" + std::to_string(url.port);
  std::string r;
  r.reserve(256 + body.size());
  r.append(method).append(" ").append(url.target).append(" HTTP/1.1\r\nHost: ").append(host);
  r.append("\r\nUser-Agent: alknet/" ALKNET_VERSION " (acme)\r\nAccept: ").append(accept);
  r.append("\r\nConnection: close\r\n");
  if (!body.empty() || method == "POST") {
    r.append("Content-Type: application/jose+json\r\nContent-Length: ").append(std::to_string(body.size()));
    r.append("\r\n");
  }
  r.append("\r\n").append(body);
  return r;
}

ParseResult parse_response(std::string_view bytes, bool eof, bool head) {
  size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() > kMaxHeaderBytes) return bad("response headers too large");
    if (eof) return bad("connection closed before the response headers ended");
    return {};
  }
  if (end > kMaxHeaderBytes) return bad("response headers too large");
  std::string_view head_block = bytes.substr(0, end + 2);
  size_t eol = head_block.find("\r\n");
  std::string_view status_line = head_block.substr(0, eol);
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.") || status_line[8] != ' ' ||
      (status_line.size() > 12 && status_line[12] != ' '))
    return bad("malformed status line");
  uint64_t code = 0;
  if (!parse_decimal(status_line.substr(9, 3), 999, &code) || code < 100) return bad("malformed status code");
  ParseResult r;
  r.response.status = int(code);
  size_t pos = eol + 2;
  while (pos < head_block.size()) {
    size_t e = head_block.find("\r\n", pos);
    std::string_view line = head_block.substr(pos, e - pos);
    pos = e + 2;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad("malformed header line");
    std::string_view name = line.substr(0, colon);
    for (char c : name)
      if (c == ' ' || c == '\t' || static_cast<unsigned char>(c) < 0x21) return bad("malformed header name");
    if (r.response.headers.size() >= 256) return bad("too many headers");
    r.response.headers.emplace_back(lower(name), std::string(trim(line.substr(colon + 1))));
  }
  std::string_view body = bytes.substr(end + 4);
  // 1xx, 204, 304 and HEAD responses carry no body whatever their headers say.
  if (head || code < 200 || code == 204 || code == 304) {
    r.state = ParseState::Done;
    return r;
  }
  std::string te = lower(r.response.header("transfer-encoding"));
  std::string cl = r.response.header("content-length");
  if (!te.empty()) {
    if (te != "chunked") return bad("unsupported transfer-encoding " + te);
    std::string err;
    ParseState st = decode_chunked(body, &r.response.body, &err);
    if (st == ParseState::Bad) return bad(err);
    if (st == ParseState::NeedMore) {
      if (eof) return bad("connection closed inside a chunked body");
      return {};
    }
    r.state = ParseState::Done;
    return r;
  }
  if (!cl.empty()) {
    uint64_t n = 0;
    if (!parse_decimal(cl, kMaxBodyBytes, &n)) return bad("bad or too large content-length");
    if (body.size() < n) {
      if (eof) return bad("connection closed before the body ended");
      return {};
    }
    r.response.body = std::string(body.substr(0, n));
    r.state = ParseState::Done;
    return r;
  }
  if (body.size() > kMaxBodyBytes) return bad("body too large");
  if (!eof) return {};
  r.response.body = std::string(body);
  r.state = ParseState::Done;
  return r;
}

Http01Request parse_http01_request(std::string_view bytes) {
  Http01Request r;
  size_t end = bytes.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (bytes.size() > kMaxHttp01Head) r.state = ParseState::Bad;
    return r;
  }
  r.state = ParseState::Bad;
  if (end > kMaxHttp01Head) return r;
  std::string_view line = bytes.substr(0, bytes.find("\r\n"));
  if (!line.starts_with("GET ")) return r;
  line.remove_prefix(4);
  size_t sp = line.find(' ');
  if (sp == std::string_view::npos) return r;
  std::string_view target = line.substr(0, sp), version = line.substr(sp + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return r;
  if (!target.starts_with(kHttp01Prefix)) return r;
  std::string_view token = target.substr(kHttp01Prefix.size());
  if (token.empty() || token.size() > 256) return r;
  for (char c : token)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return r;
  r.state = ParseState::Done;
  r.token = std::string(token);
  return r;
}

}  // namespace alk::acme
