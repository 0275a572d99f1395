// kiln device runtime: scalar math in the kernels' compute types (float for f16/bf16/f32).
// NaN handling follows ATen: maximum/minimum/relu/clamp propagate NaN.
__device__ __forceinline__ float kiln_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float kiln_nan() { return __int_as_float(0x7fffffff); }

__device__ __forceinline__ float kiln_max(float a, float b) { return (a != a || a > b) ? a : b; }
__device__ __forceinline__ float kiln_min(float a, float b) { return (a != a || a < b) ? a : b; }
__device__ __forceinline__ int kiln_max(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ int kiln_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ long long kiln_max(long long a, long long b) { return a > b ? a : b; }
__device__ __forceinline__ long long kiln_min(long long a, long long b) { return a < b ? a : b; }
__device__ __forceinline__ bool kiln_max(bool a, bool b) { return a || b; }
__device__ __forceinline__ bool kiln_min(bool a, bool b) { return a && b; }

// clamp(a, lo, hi) with either bound optional: comparisons are false for NaN, so NaN passes through.
__device__ __forceinline__ float kiln_clamp_min(float a, float lo) { return a < lo ? lo : a; }
__device__ __forceinline__ float kiln_clamp_max(float a, float hi) { return a > hi ? hi : a; }
__device__ __forceinline__ int kiln_clamp_min(int a, int lo) { return a < lo ? lo : a; }
__device__ __forceinline__ int kiln_clamp_max(int a, int hi) { return a > hi ? hi : a; }
__device__ __forceinline__ long long kiln_clamp_min(long long a, long long lo) { return a < lo ? lo : a; }
__device__ __forceinline__ long long kiln_clamp_max(long long a, long long hi) { return a > hi ? hi : a; }

__device__ __forceinline__ float kiln_relu(float a) { return (a != a || a > 0.0f) ? a : 0.0f; }
__device__ __forceinline__ int kiln_relu(int a) { return a > 0 ? a : 0; }
__device__ __forceinline__ long long kiln_relu(long long a) { return a > 0 ? a : 0; }
__device__ __forceinline__ int kiln_abs(int a) { return a < 0 ? -a : a; }
__device__ __forceinline__ long long kiln_abs(long long a) { return a < 0 ? -a : a; }
__device__ __forceinline__ float kiln_abs(float a) { return fabsf(a); }

// Note [Fast math for 16-bit outputs]
// A kernel whose floating outputs are all f16/bf16 defines KILN_FAST_MATH: exp and the divisions
// inside sigmoid/silu/softmax use the hardware approximations (__expf: a few float ulp; the
// division: rcp + mul), and gelu (erf form) uses the polynomial of Note [Fast gelu]. Their error
// is far below half an ulp of f16/bf16, and they cut the instruction count of exp/erf-heavy
// kernels, which are compute-bound in f16. User-written divisions, erf, tanh and gelu_tanh keep
// the IEEE versions; f32 outputs never use the approximations.
#ifdef KILN_FAST_MATH
__device__ __forceinline__ float kiln_exp(float a) { return __expf(a); }
__device__ __forceinline__ float kiln_fdiv(float a, float b) { return __fdividef(a, b); }
#else
__device__ __forceinline__ float kiln_exp(float a) { return expf(a); }
__device__ __forceinline__ float kiln_fdiv(float a, float b) { return a / b; }
#endif

__device__ __forceinline__ float kiln_sigmoid(float a) { return kiln_fdiv(1.0f, 1.0f + kiln_exp(-a)); }
__device__ __forceinline__ float kiln_silu(float a) { return kiln_fdiv(a, 1.0f + kiln_exp(-a)); }
// gelu, erf form: x * Phi(x).
#ifdef KILN_FAST_MATH
// Note [Fast gelu]
// q = Phi(-|x|) = 2^P(|x|), P a degree-9 weighted minimax fit of log2(Phi(-t)) on [0, 13.75]
// (smooth and nearly -0.72 t^2, so a short polynomial in the log domain fits it); then
// gelu(x) = x * q for x < 0 and x * (1 - q) for x >= 0. Unlike 0.5 x (1 + erf(x / sqrt 2)), the
// negative side has no cancellation: P's error dP is a relative error dP * ln 2 in gelu there,
// and at most that on the positive side. Measured in float, |dP| * ln 2 <= 7e-6 for |x| <= 4.3
// (f16 outputs are normal there), 2.3e-5 for |x| <= 5.6 (f16 subnormal outputs) and 1.5e-4 up to
// 13.75 (beyond it gelu is below half the smallest bf16 subnormal); exp2f is MUFU.EX2 (2 float
// ulp) and keeps subnormal q. That is 0.01 ulp of f16 and 0.04 ulp of bf16 but up to ~1000
// float ulp, hence 16-bit outputs only. tests/codegen/fast_gelu_test.cpp checks every finite f16
// and bf16 input and a dense float sweep, rounded like the stores: always within 1 ulp of the
// double gelu (f16: 0.5% of inputs 1 ulp off, erff formula 0.5% and up to 2 ulp; bf16: 0.2%, erff
// formula up to 13000 ulp, where 1 + erf cancels to 0 for x < -5.9). P's leading coefficient is
// negative and P < -141 for all |x| >= 13.75, so q -> 0 there; inf and NaN give what the exact
// formula gives (+inf -> +inf, -inf -> NaN as in ATen, NaN -> NaN). sm_90 SASS per element: 16
// instructions (9 FFMA, exp2f's 4, FSETP, FADD, FMUL) instead of erff's formula's 26.
__device__ __forceinline__ float kiln_gelu(float a) {
  const float t = fabsf(a);
  float p = -2.1058375e-09f;
  p = fmaf(p, t, 1.527518e-07f);
  p = fmaf(p, t, -4.845487e-06f);
  p = fmaf(p, t, 8.908209e-05f);
  p = fmaf(p, t, -1.0652575e-03f);
  p = fmaf(p, t, 8.875517e-03f);
  p = fmaf(p, t, -5.4500885e-02f);
  p = fmaf(p, t, -4.580798e-01f);
  p = fmaf(p, t, -1.1513528f);
  p = fmaf(p, t, -9.9999106e-01f);
  const float q = exp2f(p);  // Phi(-|a|)
  return a * (a < 0.0f ? q : 1.0f - q);
}
#else
__device__ __forceinline__ float kiln_gelu(float a) {
  return 0.5f * a * (1.0f + erff(a * 0.70710678118654752f));
}
#endif
// gelu, tanh approximation (approximate="tanh").
__device__ __forceinline__ float kiln_gelu_tanh(float a) {
  const float inner = 0.79788456080286536f * (a + 0.044715f * a * a * a);
  return 0.5f * a * (1.0f + tanhf(inner));
}
