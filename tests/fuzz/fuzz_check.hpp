// The one assertion fuzz targets use: a property that must hold for every input. It aborts
// (libFuzzer then saves the input as a crash) and names the file and line that failed.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond)                                                                          \
  do {                                                                                            \
    if (!(cond)) {                                                                                \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
      std::abort();                                                                               \
    }                                                                                             \
  } while (0)
