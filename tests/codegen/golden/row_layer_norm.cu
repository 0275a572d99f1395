// kiln generated kernel (codegen v1)
// domain [s0, 256], 1 row dim(s); schedule row{warp, threads=32, rows=8, vec=4, cached x2, two-pass}; 32-bit indexing
//   arg 0: in  f32[s0, 256]
//   arg 1: in  f32[256]
//   arg 2: in  f32[256]
//   arg 3: out f32[s0, 256]
//   v0 = layer_norm(in0, in1, in2) {eps = 1e-05, normalized_ndim = 1}
// kiln device runtime: the kernel argument (device mirror of codegen/kernel_abi.h, Note [Kernel ABI]).
// Generated kernels are compiled by NVRTC as one self-contained string: this file and the other
// helpers are prepended to every kernel, so they include nothing but cuda_fp16.h/cuda_bf16.h.
#define KILN_MAX_TENSORS 24
#define KILN_MAX_RANK 8

struct KilnArgs {
  void* ptr[KILN_MAX_TENSORS];
  long long sizes[KILN_MAX_RANK];
  long long strides[KILN_MAX_TENSORS][KILN_MAX_RANK];
  long long numel;
  int vec;
  int reserved;
};
static_assert(sizeof(KilnArgs) == 1808, "KilnArgs layout is shared with codegen/kernel_abi.h");
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
// kiln device runtime: loads and stores between storage types and compute types.
// Storage -> compute: f32/f16/bf16 -> float, bool (one byte) -> bool, i32 -> int, i64 -> long long.
// Vector accesses (Note [Vector path] in codegen/kernel_abi.h) go through kiln_vec, aligned to
// min(16, N * sizeof(T)) bytes, so the compiler emits 16-byte (or narrower) loads and stores.
__device__ __forceinline__ float kiln_ld(const float* p) { return *p; }
__device__ __forceinline__ bool kiln_ld(const unsigned char* p) { return *p != 0; }
__device__ __forceinline__ int kiln_ld(const int* p) { return *p; }
__device__ __forceinline__ long long kiln_ld(const long long* p) { return *p; }
__device__ __forceinline__ void kiln_st(float* p, float v) { *p = v; }
__device__ __forceinline__ void kiln_st(unsigned char* p, bool v) { *p = v ? 1 : 0; }
__device__ __forceinline__ void kiln_st(int* p, int v) { *p = v; }
__device__ __forceinline__ void kiln_st(long long* p, long long v) { *p = v; }

__device__ __forceinline__ float kiln_to_compute(float v) { return v; }
__device__ __forceinline__ bool kiln_to_compute(unsigned char v) { return v != 0; }
__device__ __forceinline__ int kiln_to_compute(int v) { return v; }
__device__ __forceinline__ long long kiln_to_compute(long long v) { return v; }
__device__ __forceinline__ void kiln_from_compute(float& d, float v) { d = v; }
__device__ __forceinline__ void kiln_from_compute(unsigned char& d, bool v) { d = v ? 1 : 0; }
__device__ __forceinline__ void kiln_from_compute(int& d, int v) { d = v; }
__device__ __forceinline__ void kiln_from_compute(long long& d, long long v) { d = v; }

template <typename T, int N>
struct alignas(sizeof(T) * N > 16 ? 16 : sizeof(T) * N) kiln_vec {
  T v[N];
};

// Loads N consecutive elements (splat == false) or one element broadcast N times (splat == true).
template <int N, typename T, typename C>
__device__ __forceinline__ void kiln_ldv(C (&out)[N], const T* p, bool splat) {
  if (splat) {
    const C x = kiln_ld(p);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = x;
  } else {
    const kiln_vec<T, N> v = *reinterpret_cast<const kiln_vec<T, N>*>(p);
#pragma unroll
    for (int j = 0; j < N; ++j) out[j] = kiln_to_compute(v.v[j]);
  }
}

template <int N, typename T, typename C>
__device__ __forceinline__ void kiln_stv(T* p, const C (&in)[N]) {
  kiln_vec<T, N> v;
#pragma unroll
  for (int j = 0; j < N; ++j) kiln_from_compute(v.v[j], in[j]);
  *reinterpret_cast<kiln_vec<T, N>*>(p) = v;
}
// kiln device runtime: row reductions. Warp-level reductions use xor shuffles over the W lanes of a
// row (W <= 32, a power of two: lanes of one row are an aligned group); every lane of the warp must
// call them (rows past the end still participate). Block-level reductions (one row per block of NT
// threads) combine per-warp results through shared memory; every thread gets the result.
struct KilnSum {
  static __device__ __forceinline__ float init() { return 0.0f; }
  static __device__ __forceinline__ float op(float a, float b) { return a + b; }
};
struct KilnMax {
  static __device__ __forceinline__ float init() { return -kiln_inf(); }
  static __device__ __forceinline__ float op(float a, float b) { return kiln_max(a, b); }
};
struct KilnMin {
  static __device__ __forceinline__ float init() { return kiln_inf(); }
  static __device__ __forceinline__ float op(float a, float b) { return kiln_min(a, b); }
};

template <class Op, int W>
__device__ __forceinline__ float kiln_warp_reduce(float v) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) v = Op::op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// smem: at least 32 floats of __shared__ memory.
template <class Op, int NT>
__device__ __forceinline__ float kiln_block_reduce(float v, float* smem) {
  v = kiln_warp_reduce<Op, 32>(v);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // a previous reduction's readers are done with smem
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < NT / 32 ? smem[lane] : Op::init();
  return kiln_warp_reduce<Op, 32>(v);
}

// Welford's running mean and sum of squared deviations (m2); count as float (exact to 2^24).
struct KilnWelford {
  float mean;
  float m2;
  float n;
};
__device__ __forceinline__ KilnWelford kiln_welford_init() { return KilnWelford{0.0f, 0.0f, 0.0f}; }
__device__ __forceinline__ void kiln_welford_add(KilnWelford& w, float x) {
  w.n += 1.0f;
  const float d = x - w.mean;
  w.mean += d / w.n;
  w.m2 += d * (x - w.mean);
}
__device__ __forceinline__ KilnWelford kiln_welford_merge(KilnWelford a, KilnWelford b) {
  const float n = a.n + b.n;
  if (n == 0.0f) return a;
  const float d = b.mean - a.mean;
  const float wb = b.n / n;
  return KilnWelford{a.mean + d * wb, a.m2 + b.m2 + d * d * a.n * wb, n};
}
template <int W>
__device__ __forceinline__ KilnWelford kiln_warp_welford(KilnWelford w) {
#pragma unroll
  for (int o = W / 2; o > 0; o >>= 1) {
    KilnWelford other;
    other.mean = __shfl_xor_sync(0xffffffffu, w.mean, o);
    other.m2 = __shfl_xor_sync(0xffffffffu, w.m2, o);
    other.n = __shfl_xor_sync(0xffffffffu, w.n, o);
    w = kiln_welford_merge(w, other);
  }
  return w;
}
// smem: at least 96 floats of __shared__ memory.
template <int NT>
__device__ __forceinline__ KilnWelford kiln_block_welford(KilnWelford w, float* smem) {
  w = kiln_warp_welford<32>(w);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) {
    smem[warp] = w.mean;
    smem[32 + warp] = w.m2;
    smem[64 + warp] = w.n;
  }
  __syncthreads();
  w = lane < NT / 32 ? KilnWelford{smem[lane], smem[32 + lane], smem[64 + lane]} : kiln_welford_init();
  return kiln_warp_welford<32>(w);
}

extern "C" __global__ void __launch_bounds__(256, 4) kiln_row_e8aa7f8aaa5cbb62(const KilnArgs args) {
  const float* __restrict__ p0 = (const float*)args.ptr[0];
  const float* __restrict__ p1 = (const float*)args.ptr[1];
  const float* __restrict__ p2 = (const float*)args.ptr[2];
  float* __restrict__ p3 = (float*)args.ptr[3];
  const int n0 = (int)args.sizes[0];  // s0
  const int n1 = 256;  // 256
  const int st0_0 = (int)args.strides[0][0];
  const int st0_1 = (int)args.strides[0][1];
  const int st1_1 = (int)args.strides[1][1];
  const int st2_1 = (int)args.strides[2][1];
  const int st3_0 = (int)args.strides[3][0];
  const int st3_1 = (int)args.strides[3][1];
  const int rowLen = n1;
  const int rows = n0;
  const int lane = (int)threadIdx.x % 32;
  const int rsub = (int)threadIdx.x / 32;
  for (int tile = (int)blockIdx.x * 8; tile < rows; tile += (int)gridDim.x * 8) {
    const int row = tile + rsub;
    const bool rowValid = row < rows;
    const int len = rowValid ? rowLen : 0;
    int q_ = rowValid ? row : 0;
    const int c0 = q_;
    const int base0 = c0 * st0_0;
    const int base1 = 0;
    const int base2 = 0;
    const int base3 = c0 * st3_0;
    if (args.vec) {
      float cx0[2][4];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = ((int)k * 32 + lane) * 4;
        if (e < len) {
          int q_ = e;
          const int r1 = q_;
          float in0[4];
          kiln_ldv<4>(in0, p0 + base0 + (r1 * st0_1), false);
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            cx0[k][j] = in0[j];
          }
        }
      }
      float accs0 = 0.0f;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = ((int)k * 32 + lane) * 4;
        if (e < len) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            accs0 += cx0[k][j];
          }
        }
      }
      const float mean0 = kiln_warp_reduce<KilnSum, 32>(accs0) / (float)rowLen;
      float accv0 = 0.0f;
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = ((int)k * 32 + lane) * 4;
        if (e < len) {
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            { const float d_ = cx0[k][j] - mean0; accv0 += d_ * d_; }
          }
        }
      }
      const float rstd0 = rsqrtf(kiln_warp_reduce<KilnSum, 32>(accv0) / (float)rowLen + 1e-05f);
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = ((int)k * 32 + lane) * 4;
        if (e < len) {
          int q_ = e;
          const int r1 = q_;
          float in1[4];
          kiln_ldv<4>(in1, p1 + base1 + (r1 * st1_1), false);
          float in2[4];
          kiln_ldv<4>(in2, p2 + base2 + (r1 * st2_1), false);
          float out3[4];
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const float v0 = ((((cx0[k][j] - mean0) * rstd0) * in1[j]) + in2[j]);
            out3[j] = v0;
          }
          kiln_stv<4>(p3 + base3 + (r1 * st3_1), out3);
        }
      }
    } else {
      float accs0 = 0.0f;
      for (int e = (int)lane * 1; e < len; e += 32) {
        {
          int q_ = e;
          const int r1 = q_;
          float in0[1];
          kiln_ldv<1>(in0, p0 + base0 + (r1 * st0_1), false);
#pragma unroll
          for (int j = 0; j < 1; ++j) {
            accs0 += in0[j];
          }
        }
      }
      const float mean0 = kiln_warp_reduce<KilnSum, 32>(accs0) / (float)rowLen;
      float accv0 = 0.0f;
      for (int e = (int)lane * 1; e < len; e += 32) {
        {
          int q_ = e;
          const int r1 = q_;
          float in0[1];
          kiln_ldv<1>(in0, p0 + base0 + (r1 * st0_1), false);
#pragma unroll
          for (int j = 0; j < 1; ++j) {
            { const float d_ = in0[j] - mean0; accv0 += d_ * d_; }
          }
        }
      }
      const float rstd0 = rsqrtf(kiln_warp_reduce<KilnSum, 32>(accv0) / (float)rowLen + 1e-05f);
      for (int e = (int)lane * 1; e < len; e += 32) {
        {
          int q_ = e;
          const int r1 = q_;
          float in0[1];
          kiln_ldv<1>(in0, p0 + base0 + (r1 * st0_1), false);
          float in1[1];
          kiln_ldv<1>(in1, p1 + base1 + (r1 * st1_1), false);
          float in2[1];
          kiln_ldv<1>(in2, p2 + base2 + (r1 * st2_1), false);
          float out3[1];
#pragma unroll
          for (int j = 0; j < 1; ++j) {
            const float v0 = ((((in0[j] - mean0) * rstd0) * in1[j]) + in2[j]);
            out3[j] = v0;
          }
          kiln_stv<1>(p3 + base3 + (r1 * st3_1), out3);
        }
      }
    }
  }
}
