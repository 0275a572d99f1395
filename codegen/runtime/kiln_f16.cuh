// kiln device runtime: float16 storage (loaded into / stored from float).
__device__ __forceinline__ float kiln_ld(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void kiln_st(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float kiln_to_compute(__half v) { return __half2float(v); }
__device__ __forceinline__ void kiln_from_compute(__half& d, float v) { d = __float2half_rn(v); }
// Rounds to float16 precision (an explicit cast in the graph), keeping float as compute type.
__device__ __forceinline__ float kiln_round_f16(float v) { return __half2float(__float2half_rn(v)); }
