// kiln's Hopper GEMM with a fused epilogue (Note [Kiln GEMM] in codegen/emit_gemm.h):
// out[M, N] = act(x[M, K] w[N, K]^T + b[N]) for 16-bit x and w, fp32 accumulation.
//
// Warp-specialized and persistent: warpgroup 0 issues TMA loads of x and w tiles into a ring of
// kKilnGemmStages shared-memory stages (128B-swizzled, the layout wgmma reads), warpgroups 1 and 2
// each multiply a 64-row half of a 128 x 256 tile with wgmma.m64n256k16, then apply the epilogue
// to the fp32 accumulators and store the result once. Full/empty mbarriers hand stages between
// producer and consumers. CTAs walk the tiles with a grid stride, so the producer prefetches the
// next tile while the consumers run the epilogue of this one.
//
// Needs sm_90a (wgmma, setmaxnreg). The generated source defines, before this file:
//   kiln_gemm_t        the element type (__half or __nv_bfloat16)
//   kiln_wgmma_256     the m64n256k16 wgmma for that type (128 accumulator registers)
//   kiln_gemm_act      the activation applied to fp32 values
// and after it the extern "C" kernel that calls kiln_gemm_sm90<kHasBias>(args).

#define KILN_GEMM_BM 128
#define KILN_GEMM_BN 256
#define KILN_GEMM_BK 64
#define KILN_GEMM_STAGES 4
#define KILN_GEMM_THREADS 384

struct __align__(128) KilnTensorMap {  // CUtensorMap
  unsigned long long opaque[16];
};

// Layout shared with GemmArgs in jit/runtime/gemm_kernels.cpp.
struct KilnGemmArgs {
  KilnTensorMap x;  // [M, K], box 64 x 128
  KilnTensorMap w;  // [N, K], box 64 x 256
  void* out;        // [M, N], row stride ldo (elements)
  const void* bias; // [N] or null
  long long m, n, k, ldo;
};

__device__ __forceinline__ unsigned kiln_smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void kiln_mbar_init(unsigned long long* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(kiln_smem_addr(bar)), "r"(count));
}

__device__ __forceinline__ void kiln_mbar_wait(unsigned long long* bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "KILN_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra KILN_WAIT;\n"
      "}\n" ::"r"(kiln_smem_addr(bar)),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void kiln_mbar_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(kiln_smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void kiln_mbar_expect_tx(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(
                   kiln_smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

// A box of `map` at (inner, outer) into shared memory; completes `bar`'s transaction bytes.
__device__ __forceinline__ void kiln_tma_load(void* dst, const KilnTensorMap* map, int inner,
                                              int outer, unsigned long long* bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3}], [%4];" ::"r"(kiln_smem_addr(dst)),
      "l"(reinterpret_cast<unsigned long long>(map)), "r"(inner), "r"(outer),
      "r"(kiln_smem_addr(bar))
      : "memory");
}

// wgmma shared-memory descriptor of a K-major tile with 128-byte rows in the 128B swizzle that
// TMA writes: 8-row core matrices 1024 bytes apart (stride byte offset), leading offset unused.
__device__ __forceinline__ unsigned long long kiln_wgmma_desc(const void* p) {
  const unsigned long long addr = kiln_smem_addr(p);
  return ((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}

template <bool kHasBias>
__device__ __forceinline__ void kiln_gemm_sm90(const KilnGemmArgs& args) {
  constexpr int kTileA = KILN_GEMM_BM * KILN_GEMM_BK;  // elements
  constexpr int kTileB = KILN_GEMM_BN * KILN_GEMM_BK;
  extern __shared__ unsigned char kiln_gemm_smem[];
  // The 128B swizzle repeats every 1024 bytes; tiles start on that boundary.
  kiln_gemm_t* sA = reinterpret_cast<kiln_gemm_t*>(
      (reinterpret_cast<unsigned long long>(kiln_gemm_smem) + 1023) & ~1023ull);
  kiln_gemm_t* sB = sA + KILN_GEMM_STAGES * kTileA;
  unsigned long long* full = reinterpret_cast<unsigned long long*>(sB + KILN_GEMM_STAGES * kTileB);
  unsigned long long* empty = full + KILN_GEMM_STAGES;

  const int warpgroup = threadIdx.x / 128;
  const int t = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < KILN_GEMM_STAGES; ++s) {
      kiln_mbar_init(&full[s], 1);   // the producer's expect_tx arrival (+ the TMA bytes)
      kiln_mbar_init(&empty[s], 8);  // one arrival per consumer warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  __syncthreads();

  const int tilesN = static_cast<int>((args.n + KILN_GEMM_BN - 1) / KILN_GEMM_BN);
  const int tiles = static_cast<int>((args.m + KILN_GEMM_BM - 1) / KILN_GEMM_BM) * tilesN;
  const int steps = static_cast<int>((args.k + KILN_GEMM_BK - 1) / KILN_GEMM_BK);

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (t != 0) return;
    int stage = 0;
    unsigned phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      const int m0 = (tile / tilesN) * KILN_GEMM_BM;
      const int n0 = (tile % tilesN) * KILN_GEMM_BN;
      for (int s = 0; s < steps; ++s) {
        kiln_mbar_wait(&empty[stage], phase ^ 1);  // a fresh barrier passes parity 1 at once
        // Out-of-bounds parts of a box are zero-filled and still count their bytes.
        kiln_mbar_expect_tx(&full[stage], (kTileA + kTileB) * sizeof(kiln_gemm_t));
        kiln_tma_load(sA + stage * kTileA, &args.x, s * KILN_GEMM_BK, m0, &full[stage]);
        kiln_tma_load(sB + stage * kTileB, &args.w, s * KILN_GEMM_BK, n0, &full[stage]);
        if (++stage == KILN_GEMM_STAGES) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int half = warpgroup - 1;  // rows [64 * half, 64 * half + 64) of each tile
  const int warp = t / 32, lane = t % 32;
  float d[KILN_GEMM_BN / 2];
  int stage = 0;
  unsigned phase = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / tilesN) * KILN_GEMM_BM;
    const int n0 = (tile % tilesN) * KILN_GEMM_BN;
#pragma unroll
    for (int i = 0; i < KILN_GEMM_BN / 2; ++i) d[i] = 0.f;
    for (int s = 0; s < steps; ++s) {
      kiln_mbar_wait(&full[stage], phase);
      const kiln_gemm_t* a = sA + stage * kTileA + half * 64 * KILN_GEMM_BK;
      const kiln_gemm_t* b = sB + stage * kTileB;
      asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
      for (int kk = 0; kk < KILN_GEMM_BK / 16; ++kk)
        kiln_wgmma_256(d, kiln_wgmma_desc(a + kk * 16), kiln_wgmma_desc(b + kk * 16));
      asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
      if (lane == 0) kiln_mbar_arrive(&empty[stage]);  // this warp has read the stage
      if (++stage == KILN_GEMM_STAGES) {
        stage = 0;
        phase ^= 1;
      }
    }
    // Accumulator fragment of m64nNk16: d[4j + 2h + e] is row 16 * warp + lane / 4 + 8h,
    // column 8j + 2 (lane % 4) + e.
    kiln_gemm_t* out = static_cast<kiln_gemm_t*>(args.out);
    const kiln_gemm_t* bias = static_cast<const kiln_gemm_t*>(args.bias);
    const long long rowBase = m0 + half * 64 + warp * 16 + lane / 4;
#pragma unroll
    for (int j = 0; j < KILN_GEMM_BN / 8; ++j) {
      const long long col = n0 + 8 * j + 2 * (lane % 4);
      if (col >= args.n) continue;
      const bool pair = col + 1 < args.n;
      float b0 = 0.f, b1 = 0.f;
      if (kHasBias) {
        b0 = static_cast<float>(bias[col]);
        if (pair) b1 = static_cast<float>(bias[col + 1]);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const long long row = rowBase + 8 * h;
        if (row >= args.m) continue;
        const float v0 = kiln_gemm_act(d[4 * j + 2 * h] + b0);
        const float v1 = kiln_gemm_act(d[4 * j + 2 * h + 1] + b1);
        kiln_gemm_t* p = out + row * args.ldo + col;
        if (pair && (args.ldo % 2) == 0) {
          kiln_gemm_t2 v;
          v.x = static_cast<kiln_gemm_t>(v0);
          v.y = static_cast<kiln_gemm_t>(v1);
          *reinterpret_cast<kiln_gemm_t2*>(p) = v;
        } else {
          p[0] = static_cast<kiln_gemm_t>(v0);
          if (pair) p[1] = static_cast<kiln_gemm_t>(v1);
        }
      }
    }
  }
}
