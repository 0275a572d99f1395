#include "src/ir/dtype.h"

#include <algorithm>
#include <cctype>
#include <string>

#include "src/support/error.h"

namespace kiln::ir {

std::string_view toString(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return "bool";
    case DType::kInt32:
      return "i32";
    case DType::kInt64:
      return "i64";
    case DType::kFloat16:
      return "f16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat32:
      return "f32";
  }
  KILN_CHECK(false, "bad DType {}", static_cast<int>(dtype));
}

DType parseDType(std::string_view text) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t.starts_with("torch.")) t = t.substr(6);
  if (t == "bool") return DType::kBool;
  if (t == "i32" || t == "int32" || t == "int") return DType::kInt32;
  if (t == "i64" || t == "int64" || t == "long") return DType::kInt64;
  if (t == "f16" || t == "float16" || t == "half") return DType::kFloat16;
  if (t == "bf16" || t == "bfloat16") return DType::kBFloat16;
  if (t == "f32" || t == "float32" || t == "float") return DType::kFloat32;
  throw UserError(
      fmt::format("unknown dtype '{}': expected one of bool, i32, i64, f16, bf16, f32", text));
}

int64_t byteSize(DType dtype) {
  switch (dtype) {
    case DType::kBool:
      return 1;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kFloat16:
      return 2;
    case DType::kBFloat16:
      return 2;
    case DType::kFloat32:
      return 4;
  }
  KILN_CHECK(false, "bad DType {}", static_cast<int>(dtype));
}

bool isFloating(DType dtype) {
  return dtype == DType::kFloat16 || dtype == DType::kBFloat16 || dtype == DType::kFloat32;
}

namespace {
int rankOf(DType d) {
  switch (d) {
    case DType::kBool:
      return 0;
    case DType::kInt32:
      return 1;
    case DType::kInt64:
      return 2;
    case DType::kFloat16:
      return 3;
    case DType::kBFloat16:
      return 3;
    case DType::kFloat32:
      return 4;
  }
  return 0;
}
}  // namespace

DType promote(DType a, DType b) {
  if (a == b) return a;
  // f16 with bf16 has no common 16-bit type: torch promotes to f32.
  if ((a == DType::kFloat16 && b == DType::kBFloat16) ||
      (a == DType::kBFloat16 && b == DType::kFloat16))
    return DType::kFloat32;
  return rankOf(a) >= rankOf(b) ? a : b;
}

}  // namespace kiln::ir
