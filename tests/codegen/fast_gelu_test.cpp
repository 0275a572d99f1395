// Note [Fast gelu] (codegen/runtime/kiln_math.cuh), checked on the host: the same source text that
// NVRTC compiles is included twice, with and without KILN_FAST_MATH, under a minimal shim for the
// CUDA names it uses. Results are rounded to f16/bf16 (as the kernels' stores do) and compared with
// gelu computed in double, in ulps of the 16-bit format.
#include <gtest/gtest.h>
#include <math.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

// --- CUDA shim: only what kiln_math.cuh needs ---
#define __device__
#define __forceinline__ inline
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline float __expf(float a) {
  return expf(a);
}
inline float __fdividef(float a, float b) {
  return a / b;
}

namespace {
// The device exp2f is within 2 float ulp (CUDA C++ Programming Guide, mathematical functions);
// the host's is (nearly) correctly rounded. Each check also runs with exp2f moved 2 ulp down and
// 2 ulp up, so the bound holds for any device result.
int gExp2Ulps = 0;
}  // namespace

namespace fast {
inline float exp2f(float a) {  // found before ::exp2f by the helpers in this namespace
  float r = ::exp2f(a);
  if (r == 0.0f || !std::isfinite(r)) return r;  // exact on the device too
  for (int i = 0; i < gExp2Ulps; ++i) r = nextafterf(r, INFINITY);
  for (int i = 0; i < -gExp2Ulps; ++i) r = nextafterf(r, 0.0f);
  return r;
}
#define KILN_FAST_MATH 1
#include "codegen/runtime/kiln_math.cuh"
#undef KILN_FAST_MATH
}  // namespace fast

namespace exact {
#include "codegen/runtime/kiln_math.cuh"
}  // namespace exact

namespace {

// A binary floating format: `precision` significand bits (with the implicit one), normal exponents
// [minExp, maxExp], `exponentBits` wide.
struct Format {
  const char* name;
  int precision;
  int minExp;
  int maxExp;
  int exponentBits;
};
constexpr Format kF16{"f16", 11, -14, 15, 5};
constexpr Format kBf16{"bf16", 8, -126, 127, 8};

double minSubnormal(const Format& f) {
  return std::ldexp(1.0, f.minExp - f.precision + 1);
}

// Round to nearest even in format f, with its subnormals and overflow to inf: what
// __float2half_rn / __float2bfloat16_rn do to a float, and the reference's single rounding.
double roundTo(double v, const Format& f) {
  if (!std::isfinite(v) || v == 0.0) return v;
  int e = 0;
  std::frexp(v, &e);  // |v| in [2^(e-1), 2^e)
  const double spacing = std::ldexp(1.0, std::max(e - 1, f.minExp) - f.precision + 1);
  const double r = std::nearbyint(v / spacing) * spacing;
  if (std::fabs(r) >= std::ldexp(1.0, f.maxExp + 1)) return std::copysign(INFINITY, v);
  return r;
}

// Position of a value of format f (finite or inf) in the ordered list of its values; +0 and -0
// are both 0. Neighbours differ by 1, so the difference of two positions is a distance in ulps
// (in the subnormal range one ulp is the smallest subnormal).
int64_t ordinal(double r, const Format& f) {
  const double a = std::fabs(r);
  const int64_t perBinade = int64_t{1} << (f.precision - 1);
  int64_t n = 0;
  if (std::isinf(a)) {
    n = (f.maxExp - f.minExp + 2) * perBinade;
  } else if (a < std::ldexp(1.0, f.minExp)) {
    n = static_cast<int64_t>(a / minSubnormal(f));
  } else {
    int e = 0;
    std::frexp(a, &e);
    n = (e - 1 - f.minExp + 1) * perBinade +
        static_cast<int64_t>(std::ldexp(a, f.precision - e) - static_cast<double>(perBinade));
  }
  return r < 0 ? -n : n;
}

constexpr int64_t kNanMismatch = int64_t{1} << 40;
int64_t ulps(double a, double b, const Format& f) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b) ? 0 : kNanMismatch;
  return std::llabs(ordinal(a, f) - ordinal(b, f));
}

// Every finite value of format f, from its bit patterns.
std::vector<float> allFinite(const Format& f) {
  std::vector<float> out;
  const int mantBits = f.precision - 1;
  const int bias = f.maxExp;
  for (uint32_t bits = 0; bits < (1u << (1 + f.exponentBits + mantBits)); ++bits) {
    const uint32_t mant = bits & ((1u << mantBits) - 1);
    const int expField = static_cast<int>((bits >> mantBits) & ((1u << f.exponentBits) - 1));
    if (expField == (1 << f.exponentBits) - 1) continue;  // inf, NaN
    const double m = expField == 0 ? mant : mant + std::ldexp(1.0, mantBits);
    const double v = std::ldexp(m, std::max(expField, 1) - bias - mantBits);
    out.push_back(static_cast<float>((bits >> (f.exponentBits + mantBits)) ? -v : v));
  }
  return out;
}

// gelu in double: x Phi(x) with Phi from erfc, accurate in relative terms on the negative side.
// Like ATen's and the exact kiln_gelu: -inf * 0 = NaN at -inf.
double geluRef(double x) {
  return 0.5 * x * std::erfc(-x * 0.70710678118654752440);
}

struct Stats {
  int64_t count = 0;
  int64_t fastOff = 0, exactOff = 0;  // results not equal to the rounded reference
  int64_t fastMax = 0, exactMax = 0;  // worst distances, ulps
  std::vector<std::string> failures;
};

// (1) f(fast) within 1 ulp of f(reference); (2) never more than 1 ulp further from it than
// f(exact formula); (3) for subnormal results (|ref| below the smallest normal) the absolute
// error is at most the smallest subnormal: there the format has no relative precision, every
// value is a multiple of that subnormal, so 1 ulp in (1) means exactly this absolute bound.
void check(float x, const Format& f, Stats& s) {
  const double ref = roundTo(geluRef(x), f);
  const double got = roundTo(fast::kiln_gelu(x), f);
  const double ex = roundTo(exact::kiln_gelu(x), f);
  const int64_t dFast = ulps(got, ref, f);
  const int64_t dExact = ulps(ex, ref, f);
  ++s.count;
  s.fastOff += dFast != 0;
  s.exactOff += dExact != 0;
  s.fastMax = std::max(s.fastMax, dFast);
  s.exactMax = std::max(s.exactMax, dExact);
  const bool subnormal = std::isfinite(ref) && std::fabs(ref) < std::ldexp(1.0, f.minExp);
  const bool bad =
      dFast > 1 || dFast > dExact + 1 || (subnormal && !(std::fabs(got - ref) <= minSubnormal(f)));
  if (bad && s.failures.size() < 10) {
    char line[200];
    std::snprintf(line, sizeof line, "x=%.9g (exp2f %+d ulp): fast %.9g, exact %.9g, ref %.9g", x,
                  gExp2Ulps, got, ex, ref);
    s.failures.push_back(line);
  }
  if (bad && s.failures.size() == 10) s.failures.push_back("...");
}

void report(const std::string& what, const Format& f, const Stats& s) {
  std::cout << what << " (" << f.name << ", exp2f " << gExp2Ulps << " ulp): " << s.count
            << " inputs; fast: max " << s.fastMax << " ulp, " << s.fastOff
            << " off the rounded reference; exact formula: max " << s.exactMax << " ulp, "
            << s.exactOff << " off\n";
  std::string all;
  for (const auto& l : s.failures) all += "\n  " + l;
  EXPECT_TRUE(s.failures.empty()) << what << " " << f.name << ":" << all;
  EXPECT_GT(s.count, 0);
}

void checkAll(const std::string& what, const std::vector<float>& xs, const Format& f) {
  for (int e : {0, -2, 2}) {
    gExp2Ulps = e;
    Stats s;
    for (float x : xs) check(x, f, s);
    report(what, f, s);
  }
  gExp2Ulps = 0;
}

TEST(FastGelu, EveryFiniteF16Input) {
  checkAll("all finite f16", allFinite(kF16), kF16);
}

TEST(FastGelu, EveryFiniteBf16Input) {
  checkAll("all finite bf16", allFinite(kBf16), kBf16);
}

// Kernel inputs to gelu are floats (x * w + b), mostly not 16-bit values: every 2^-12 in [-12, 12]
// and the same grid shifted by 0.3 step, without the points the format represents exactly (the
// tests above have them).
TEST(FastGelu, DenseFloatSweep) {
  for (const Format& f : {kF16, kBf16}) {
    std::vector<float> xs;
    for (int k = -12 * 4096; k <= 12 * 4096; ++k) {
      for (double shift : {0.0, 0.3}) {
        const float x = static_cast<float>((k + shift) / 4096.0);
        if (roundTo(x, f) != x) xs.push_back(x);
      }
    }
    checkAll("float sweep", xs, f);
  }
}

TEST(FastGelu, LargeTinyAndSpecialInputs) {
  const float inf = std::numeric_limits<float>::infinity();
  const float big = std::numeric_limits<float>::max();
  std::vector<float> xs = {0.0f,     -0.0f,     1e-40f, -1e-40f, 1e-30f,   -1e-30f,
                           13.75f,   -13.75f,   -14.0f, -20.0f,  65504.0f, -65504.0f,
                           65520.0f, -65520.0f, 1e5f,   -1e5f,   1e20f,    -1e20f,
                           3e38f,    -3e38f,    big,    -big,    inf,      -inf};
  for (const Format& f : {kF16, kBf16}) checkAll("large, tiny, inf", xs, f);
  // Special values as the exact formula (and ATen): +inf -> +inf, -inf -> NaN, NaN -> NaN.
  EXPECT_EQ(fast::kiln_gelu(inf), inf);
  EXPECT_TRUE(std::isnan(fast::kiln_gelu(-inf)));
  EXPECT_TRUE(std::isnan(exact::kiln_gelu(-inf)));
  EXPECT_TRUE(std::isnan(fast::kiln_gelu(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(fast::kiln_gelu(-1e20f), 0.0f);
  EXPECT_EQ(fast::kiln_gelu(1e20f), 1e20f);
  // Beyond the fit range q underflows to 0 (P < -141 there; f32 subnormals end at 2^-149).
  for (float x = -13.75f; x > -1e6f; x *= 1.01f) ASSERT_LT(fast::kiln_gelu(x), 1e-40f) << x;
}

// Without KILN_FAST_MATH (f32 outputs) gelu is the exact formula, bit for bit.
TEST(FastGelu, ExactPathUnchanged) {
  int differ = 0;
  for (float x : {-7.5f, -3.0f, -0.5f, 0.25f, 1.0f, 2.5f}) {
    EXPECT_EQ(exact::kiln_gelu(x), 0.5f * x * (1.0f + erff(x * 0.70710678118654752f))) << x;
    differ += exact::kiln_gelu(x) != fast::kiln_gelu(x);
  }
  EXPECT_GT(differ, 0);  // the two paths are different code
}

}  // namespace
