// alknet: one binary, two subcommands.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cli/options.hpp"
#include "client/connect.hpp"
#include "server/serve.hpp"

int main(int argc, char **argv) {
  std::vector<std::string_view> args(argv + 1, argv + argc);
  auto parsed = alk::cli::parse_args(args, [](const char *name) { return std::getenv(name); });
  if (auto *err = std::get_if<std::string>(&parsed)) {
    std::fprintf(stderr, "error: %s\n", err->c_str());
    std::fprintf(stderr, "run 'alknet --help' for usage\n");
    return 2;
  }
  auto &p = std::get<alk::cli::Parsed>(parsed);
  switch (p.cmd) {
    case alk::cli::Command::Help:
      std::fputs(p.help_text.c_str(), stdout);
      return 0;
    case alk::cli::Command::Version:
      std::printf("alknet %s\n", ALKNET_VERSION);
      return 0;
    case alk::cli::Command::Connect:
      return alk::client::run_connect(p.connect);
    case alk::cli::Command::Serve:
      return alk::server::run_serve(p.serve);
  }
  return 1;
}
