// `alknet connect`: keeps one SSH session up (reconnecting forever with backoff) and serves
// the local SOCKS5 port and the -L/-R forwards over it.
#pragma once

#include "cli/options.hpp"

namespace alk::client {

// Runs until SIGINT/SIGTERM. Returns the process exit code; start-up errors print
// "error: ..." and return 1.
int run_connect(const cli::ConnectOptions &opts);

}  // namespace alk::client
