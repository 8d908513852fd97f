// Test-only entry point: `alknet_serve_test serve FLAGS...` parses the real command line and runs
// alknet serve in-process, so the integration tests do not depend on the final alknet binary.
#include <cstdio>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cli/options.hpp"
#include "server/serve.hpp"

int main(int argc, char **argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto parsed = alk::cli::parse_args(args, {});
  if (auto *err = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "error: %s\n", err->c_str());
    return 2;
  }
  auto &p = std::get<alk::cli::Parsed>(parsed);
  if (p.cmd != alk::cli::Command::Serve) {
    std::fprintf(stderr, "error: this test binary only runs `serve`\n");
    return 2;
  }
  return alk::server::run_serve(p.serve);
}
