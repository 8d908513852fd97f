// The SSH connection protocol's codec (src/ssh/connection.hpp), fed what an authenticated
// peer may send: any payload decodes or is refused with a reason, and whatever decodes
// re-encodes to bytes that decode to the same message (encode is a fixed point after one
// decode). The type-specific data parsers (tcpip opens, forward requests, exit-status) get
// the same treatment.
#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "ssh/connection.hpp"

using namespace alk::ssh::conn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  std::string err;
  if (auto m = decode(in, &err)) {
    FUZZ_CHECK(err.empty());
    const auto wire = encode(*m);
    FUZZ_CHECK(!wire.empty() && wire[0] == in[0]);
    FUZZ_CHECK(wire.size() <= in.size() + 8);  // at most an added empty description + language
    auto again = decode(wire);
    FUZZ_CHECK(again && again->index() == m->index());
    FUZZ_CHECK(encode(*again) == wire);
    FUZZ_CHECK(recipient(*again) == recipient(*m));
    if (auto* o = std::get_if<Open>(&*m)) {
      if (auto e = decode_tcpip(o->data)) {
        FUZZ_CHECK(e->host.size() <= kMaxHost && e->orig_host.size() <= kMaxHost);
        auto e2 = decode_tcpip(encode_tcpip(*e));
        FUZZ_CHECK(e2 && e2->host == e->host && e2->port == e->port && e2->orig_host == e->orig_host &&
                   e2->orig_port == e->orig_port);
      }
    }
    if (auto* g = std::get_if<GlobalRequest>(&*m)) {
      if (auto f = decode_forward(g->data)) {
        FUZZ_CHECK(f->host.size() <= kMaxForwardHost);
        auto f2 = decode_forward(encode_forward(*f));
        FUZZ_CHECK(f2 && f2->host == f->host && f2->port == f->port);
      }
    }
    if (auto* q = std::get_if<Request>(&*m)) {
      if (auto s = decode_exit_status(q->data)) FUZZ_CHECK(decode_exit_status(encode_exit_status(*s)) == s);
    }
  } else {
    FUZZ_CHECK(err.rfind("bad ", 0) == 0);
  }
  return 0;
}
