// kiln device runtime: bfloat16 storage (loaded into / stored from float).
__device__ __forceinline__ float kiln_ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void kiln_st(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ float kiln_to_compute(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void kiln_from_compute(__nv_bfloat16& d, float v) {
  d = __float2bfloat16_rn(v);
}
// Rounds to bfloat16 precision (an explicit cast in the graph), keeping float as compute type.
__device__ __forceinline__ float kiln_round_bf16(float v) {
  return __bfloat162float(__float2bfloat16_rn(v));
}
