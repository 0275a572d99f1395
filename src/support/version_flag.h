#pragma once
// --version for kiln's tools (Note [Versions], include/kiln/version.h.in): one line on stdout,
// exit 0.
#include <cstdio>
#include <string_view>

#include "kiln/version.h"

namespace kiln {

inline void printVersion() {
  const std::string_view v = version();
  std::printf("%.*s\n", static_cast<int>(v.size()), v.data());
}

// For tools without a flag parser of their own: prints the version and returns true when any
// argument is --version, and the tool returns 0.
inline bool printVersionIfAsked(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--version") {
      printVersion();
      return true;
    }
  }
  return false;
}

}  // namespace kiln
