// --socks5-auth-file: the SOCKS5 username/password (RFC 1929) kept in a file instead of on the
// command line, where every local user could read it in /proc/PID/cmdline.
#pragma once

#include <string>
#include <string_view>

#include "net/spec.hpp"
#include "runtime/result.hpp"

namespace alk::socks5 {

// Pure. text: the file's first bytes; mode: its st_mode. USER:PASS is the first line (a trailing
// CR/LF is not part of the password); further lines are ignored. Refused (EACCES) when other
// users may read or write the file (any of the "other" permission bits set); the group may
// read it (a service's group). The password never appears in a message.
rt::Result<net::UserPass> parse_credentials_file(std::string_view text, unsigned mode, const std::string &path);

// Reads path (blocking: for start-up, before anything is served) and parses it as above.
rt::Result<net::UserPass> load_credentials_file(const std::string &path);

}  // namespace alk::socks5
