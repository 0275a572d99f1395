#include "kiln/version.h"

// Set for this file by src/support/CMakeLists.txt (Note [Versions]).
#ifndef KILN_TORCH_VERSION
#define KILN_TORCH_VERSION "unknown"
#endif
#ifndef KILN_CUDA_VERSION
#define KILN_CUDA_VERSION "unknown"
#endif

namespace kiln {

std::string_view version() {
  return "kiln " KILN_VERSION_STRING " (torch " KILN_TORCH_VERSION ", CUDA " KILN_CUDA_VERSION ")";
}

}  // namespace kiln
