// alknet: one binary, two subcommands.
#include <gcrypt.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "cli/options.hpp"
#include "client/connect.hpp"
#include "server/serve.hpp"

int main(int argc, char **argv) {
  // libssh asks libgcrypt for random padding on every packet; the default CSPRNG re-mixes its
  // pool each time (40% of a sender's CPU in callgrind). The system RNG (getrandom) is as
  // strong for padding and nonces and 15x cheaper. Must precede libgcrypt's initialisation.
  gcry_control(GCRYCTL_SET_PREFERRED_RNG_TYPE, GCRY_RNG_TYPE_SYSTEM);
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
