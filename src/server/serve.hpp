// `alknet serve`: the process entry point the CLI calls.
#pragma once

#include "cli/options.hpp"

namespace alk::server {

// Runs the server until SIGINT/SIGTERM (then stops accepting, disconnects every session,
// drains up to ~2 s and returns 0). Start-up failures (host key, authorized keys, listen
// address, port in use) print `error: ...` to stderr and return 1.
int run_serve(const cli::ServeOptions &opts);

}  // namespace alk::server
