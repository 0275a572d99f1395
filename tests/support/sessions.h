#pragma once
// What LibTorch-linked tests of optimize() share: a session that compiles without a GPU, and a
// max-abs-error comparison.
#include <string_view>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

namespace kiln::testing {

// Every kernel compiled for sm_90 with NVRTC, even without a GPU; kernels in memory only; no
// KILN_* variable read.
inline kiln::Options compileOnlyOptions() {
  kiln::Options o;
  o.arch = "sm_90";
  o.diskCache = false;
  o.strict = true;  // a capture or plan failure fails the test instead of running eagerly
  return o;
}

inline EnvLookup noEnvironment() {
  return [](std::string_view) { return std::nullopt; };
}

// One for the whole test process.
inline kiln::Session& compileOnlySession() {
  static kiln::Session* s = new kiln::Session(compileOnlyOptions(), noEnvironment());
  return *s;
}

// Same sizes and dtype, and max |got - want| <= tol (compared in float32).
inline void expectClose(const torch::Tensor& got, const torch::Tensor& want, double tol) {
  ASSERT_EQ(got.sizes(), want.sizes());
  ASSERT_EQ(got.scalar_type(), want.scalar_type());
  EXPECT_LE((got.to(torch::kFloat) - want.to(torch::kFloat)).abs().max().item<double>(), tol);
}

}  // namespace kiln::testing
