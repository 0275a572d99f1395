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
