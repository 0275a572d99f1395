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
