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
// division: rcp + mul). Their error is far below half an ulp of f16/bf16, and they cut the
// instruction count of exp-heavy kernels, which are compute-bound in f16. User-written divisions
// and erf/tanh keep the IEEE versions; f32 outputs never use the approximations.
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
__device__ __forceinline__ float kiln_gelu(float a) {
  return 0.5f * a * (1.0f + erff(a * 0.70710678118654752f));
}
// gelu, tanh approximation (approximate="tanh").
__device__ __forceinline__ float kiln_gelu_tanh(float a) {
  const float inner = 0.79788456080286536f * (a + 0.044715f * a * a * a);
  return 0.5f * a * (1.0f + tanhf(inner));
}
