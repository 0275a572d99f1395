#pragma once
#include <cstdint>
#include <string_view>

namespace kiln::ir {

enum class DType : uint8_t { kBool, kInt32, kInt64, kFloat16, kBFloat16, kFloat32 };

// Text names used by the IR printer/parser: bool, i32, i64, f16, bf16, f32.
std::string_view toString(DType dtype);
// Accepts the text names above and torch-style names (float16, half, bfloat16, float32, float,
// int64, long, int32, int, bool). Throws UserError naming the bad text.
DType parseDType(std::string_view text);
int64_t byteSize(DType dtype);
bool isFloating(DType dtype);
// Type promotion for binary pointwise ops between two tensors (torch's rules for the dtypes kiln
// supports: bool < ints < floats; f16 with bf16 -> f32).
DType promote(DType a, DType b);

}  // namespace kiln::ir
