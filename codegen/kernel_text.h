#pragma once
// Pieces every emitter of kernel text shares (emit_cuda.cpp, emit_gemm.cpp): the embedded device
// helpers and the naming of a finished kernel by the hash of its text.
#include <string>
#include <string_view>

#include "codegen/kernel_source.h"

namespace kiln::codegen {

// The text of an embedded device helper (codegen/runtime/<file>), or empty when there is none.
std::string_view helperText(std::string_view file);

// Stands for the kernel's name in its text until the text is complete.
inline constexpr std::string_view kNamePlaceholder = "KILN_KERNEL_NAME";

// Names the kernel `<prefix>_<hash of body>` and puts the name in place of kNamePlaceholder.
KernelSource finishKernelSource(std::string body, std::string_view prefix);

}  // namespace kiln::codegen
