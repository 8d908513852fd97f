// The ACME client's HTTP/1.1 pieces: URL parsing, request building, response parsing
// (Content-Length, chunked, EOF-delimited, split at every byte, malformed input).
#include <catch2/catch.hpp>

#include "acme/http.hpp"

using namespace alk::acme;

TEST_CASE("parse_url: scheme, host, port, target") {
  auto u = parse_url("https://acme-v02.api.letsencrypt.org/directory");
  REQUIRE(u);
  CHECK(u->https);
  CHECK(u->host == "acme-v02.api.letsencrypt.org");
  CHECK(u->port == 443);
  CHECK(u->target == "/directory");
  u = parse_url("https://127.0.0.1:14000/dir?x=1");
  REQUIRE(u);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == 14000);
  CHECK(u->target == "/dir?x=1");
  u = parse_url("http://[::1]:8080");
  REQUIRE(u);
  CHECK_FALSE(u->https);
  CHECK(u->host == "::1");
  CHECK(u->port == 8080);
  CHECK(u->target == "/");
  u = parse_url("http://h?q");
  REQUIRE(u);
  CHECK(u->port == 80);
  CHECK(u->target == "/?q");
}

TEST_CASE("parse_url refuses other schemes, userinfo, fragments, bad ports, spaces") {
  for (const char *bad : {"ftp://h/", "https://", "https://:443/", "https://u@h/", "https://h/#f", "https://h:0/",
                          "https://h:65536/", "https://h:x/", "https://h:/", "https://h /", "https://[::1/",
                          "https://a:b:c/", "HTTPS://h/", "https://h\r\n/", "https://[[x]]:14/", "https://[abc]/",
                          "https://h\x8c/", "https://a%2e/"})
    CHECK_FALSE(parse_url(bad));
}

TEST_CASE("build_request: request line, Host with non-default port, JOSE body with length, close") {
  auto u = parse_url("https://ca.test:14000/new-order");
  REQUIRE(u);
  std::string r = build_request("POST", *u, "{}");
  CHECK(r.starts_with("POST /new-order HTTP/1.1\r\nHost: ca.test:14000\r\n"));
  CHECK(r.find("\r\nContent-Type: application/jose+json\r\nContent-Length: 2\r\n") != std::string::npos);
  CHECK(r.find("\r\nConnection: close\r\n") != std::string::npos);
  CHECK(r.ends_with("\r\n\r\n{}"));
  auto g = build_request("GET", *parse_url("https://ca.test/dir"), "", "application/pem-certificate-chain");
  CHECK(g.starts_with("GET /dir HTTP/1.1\r\nHost: ca.test\r\n"));
  CHECK(g.find("Accept: application/pem-certificate-chain\r\n") != std::string::npos);
  CHECK(g.find("Content-Length") == std::string::npos);
  CHECK(build_request("GET", *parse_url("http://[::1]:81/"), "").find("Host: [::1]:81\r\n") != std::string::npos);
}

TEST_CASE("parse_response: Content-Length body, lower-cased headers, split at every byte") {
  const std::string msg =
      "HTTP/1.1 201 Created\r\nReplay-Nonce: abc\r\nLocation: https://ca.test/order/1\r\n"
      "Content-Length: 11\r\n\r\n{\"a\":\"xyz\"}";
  for (size_t cut = 0; cut < msg.size(); ++cut) CHECK(parse_response(msg.substr(0, cut), false).state == ParseState::NeedMore);
  auto r = parse_response(msg, false);
  REQUIRE(r.state == ParseState::Done);
  CHECK(r.response.status == 201);
  CHECK(r.response.header("replay-nonce") == "abc");
  CHECK(r.response.header("location") == "https://ca.test/order/1");
  CHECK(r.response.header("missing") == "");
  CHECK(r.response.body == "{\"a\":\"xyz\"}");
  // Bytes after the body (none expected with Connection: close) are not part of it.
  CHECK(parse_response(msg + "junk", false).response.body == "{\"a\":\"xyz\"}");
  // The peer closing early is an error, not a short body.
  CHECK(parse_response(msg.substr(0, msg.size() - 1), true).state == ParseState::Bad);
}

TEST_CASE("parse_response: chunked bodies with extensions and trailers") {
  const std::string msg =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
  for (size_t cut = 0; cut < msg.size(); ++cut) {
    auto p = parse_response(msg.substr(0, cut), false);
    CHECK(p.state == ParseState::NeedMore);
  }
  auto r = parse_response(msg, false);
  REQUIRE(r.state == ParseState::Done);
  CHECK(r.response.body == "hello world");
  CHECK(parse_response(msg.substr(0, 60), true).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY", false).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffff\r\n", false).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n", false).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).state == ParseState::Bad);
}

TEST_CASE("parse_response: EOF-delimited bodies, HEAD, 204") {
  const std::string msg = "HTTP/1.0 200 OK\r\nServer: x\r\n\r\n-----BEGIN";
  CHECK(parse_response(msg, false).state == ParseState::NeedMore);
  auto r = parse_response(msg, true);
  REQUIRE(r.state == ParseState::Done);
  CHECK(r.response.body == "-----BEGIN");
  auto h = parse_response("HTTP/1.1 200 OK\r\nReplay-Nonce: n1\r\nContent-Length: 99\r\n\r\n", false, true);
  REQUIRE(h.state == ParseState::Done);
  CHECK(h.response.header("replay-nonce") == "n1");
  CHECK(h.response.body.empty());
  CHECK(parse_response("HTTP/1.1 204 No Content\r\n\r\n", false).state == ParseState::Done);
  CHECK(parse_response("HTTP/1.1 400 Bad\r\n\r\n", false).state == ParseState::NeedMore);
}

TEST_CASE("parse_response refuses malformed status lines, headers and oversized input") {
  for (const char *bad : {"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
                          "HTTP/1.1 abc OK\r\n\r\n", "HTTP/1.1 099 x\r\n\r\n", "FOO\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", "HTTP/1.1 200 OK\r\n: empty\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                          "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"})
    CHECK(parse_response(bad, false).state == ParseState::Bad);
  CHECK(parse_response("HTTP/1.1 200 OK\r\n", true).state == ParseState::Bad);
  std::string huge = "HTTP/1.1 200 OK\r\nX: " + std::string(kMaxHeaderBytes, 'a');
  CHECK(parse_response(huge, false).state == ParseState::Bad);
  std::string many = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 300; ++i) many += "H: v\r\n";
  CHECK(parse_response(many + "\r\n", false).state == ParseState::Bad);
  std::string big_body = "HTTP/1.1 200 OK\r\n\r\n" + std::string(kMaxBodyBytes + 1, 'b');
  CHECK(parse_response(big_body, false).state == ParseState::Bad);
}

TEST_CASE("parse_http01_request: the validator's GET, token charset, bounds") {
  const std::string req =
      "GET /.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA HTTP/1.1\r\nHost: a.example\r\n"
      "User-Agent: validator\r\n\r\n";
  for (size_t cut = 0; cut < req.size(); ++cut) CHECK(parse_http01_request(req.substr(0, cut)).state == ParseState::NeedMore);
  auto r = parse_http01_request(req);
  REQUIRE(r.state == ParseState::Done);
  CHECK(r.token == "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA");
  CHECK(parse_http01_request("GET /.well-known/acme-challenge/abc HTTP/1.0\r\n\r\n").token == "abc");
  for (const char *bad : {"POST /.well-known/acme-challenge/abc HTTP/1.1\r\n\r\n",
                          "GET /.well-known/acme-challenge/ HTTP/1.1\r\n\r\n",
                          "GET /.well-known/acme-challenge/a/b HTTP/1.1\r\n\r\n",
                          "GET /.well-known/acme-challenge/a%2e HTTP/1.1\r\n\r\n",
                          "GET /index.html HTTP/1.1\r\n\r\n", "GET /.well-known/acme-challenge/abc HTTP/2\r\n\r\n",
                          "GET /.well-known/acme-challenge/abc\r\n\r\n", "\r\n\r\n"})
    CHECK(parse_http01_request(bad).state == ParseState::Bad);
  CHECK(parse_http01_request(std::string(kMaxHttp01Head + 1, 'G')).state == ParseState::Bad);
  CHECK(parse_http01_request("GET /.well-known/acme-challenge/" + std::string(300, 'a') + " HTTP/1.1\r\n\r\n").state ==
        ParseState::Bad);
}
