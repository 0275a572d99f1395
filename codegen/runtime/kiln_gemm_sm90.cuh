// kiln's Hopper GEMM with a fused epilogue (Note [Kiln GEMM] in codegen/emit_gemm.h):
// out[M, N] = act(x[M, K] w[N, K]^T + b[N]) for 16-bit x and w, fp32 accumulation.
//
// Warp-specialized, persistent and ping-pong: warpgroup 0 issues TMA loads of x and w tiles into
// a ring of KILN_GEMM_STAGES shared-memory stages (128B-swizzled, the layout wgmma reads), in the
// order of the CTA's output tiles. Warpgroups 1 and 2 take the CTA's tiles in turn, each a whole
// 128 x 128 tile with two wgmma.m64n128k16 per 16-wide k slice, so one consumer's epilogue (bias,
// activation, stores) runs while the other one's mainloop keeps the tensor cores busy: with
// K = 1024 a tile has only 16 k-steps, and an epilogue that both consumers run at once leaves the
// tensor cores idle for a third of the time. Full/empty mbarriers hand stages between producer and
// consumers; a consumer keeps one stage's wgmma group in flight and releases the stage before it.
// Two turn barriers order the consumers' mainloops: a consumer starts its tile's mainloop only once
// the other one has seen all stages of the tile before (and so every earlier phase of each full
// barrier has completed). That is needed for correctness, not only for the ping-pong: mbarrier
// waits test a phase's parity, so a consumer that ran two phases ahead of a stage would pass it.
//
// Needs sm_90a (wgmma, setmaxnreg). The generated source defines, before this file:
//   kiln_gemm_t, kiln_gemm_t2  the element type (__half or __nv_bfloat16) and its pair
//   kiln_wgmma_128     the m64n128k16 wgmma for that type (64 accumulator registers)
//   kiln_gemm_act      the activation applied to fp32 values
// and after it the extern "C" kernel that calls kiln_gemm_sm90<kHasBias>(args).

#define KILN_GEMM_BM 128
#define KILN_GEMM_BN 128
#define KILN_GEMM_BK 64
#define KILN_GEMM_STAGES 4  // kGemmStages on the host
#define KILN_GEMM_THREADS 384

struct __align__(128) KilnTensorMap {  // CUtensorMap
  unsigned long long opaque[16];
};

// Layout shared with GemmArgs in jit/runtime/gemm_kernels.cpp.
struct KilnGemmArgs {
  KilnTensorMap x;  // [M, K], box 64 x 128
  KilnTensorMap w;  // [N, K], box 64 x 128
  KilnTensorMap o;  // [M, N] out, box 64 x 128, when tmaStore
  void* out;        // [M, N], row stride ldo (elements)
  const void* bias; // [N] or null
  long long m, n, k, ldo;
  int tmaStore;     // store through o (else with bounds-checked stores to out)
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

// The tile at shared address src (two boxes of 64 columns, 128B-swizzled like the loads) to `map`
// at (inner, outer); the bulk group is committed, and out-of-bounds parts of boxes are not written.
__device__ __forceinline__ void kiln_tma_store_tile(const KilnTensorMap* map, unsigned src,
                                                    int inner, int outer) {
#pragma unroll
  for (int box = 0; box < KILN_GEMM_BN / 64; ++box)
    asm volatile(
        "cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%1, %2}], [%3];" ::"l"(
            reinterpret_cast<unsigned long long>(map)),
        "r"(inner + 64 * box), "r"(outer),
        "r"(src + box * KILN_GEMM_BM * 128)
        : "memory");
  asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

// Synchronizes the 128 threads of consumer warpgroup c (named barrier 1 + c; 0 is __syncthreads).
__device__ __forceinline__ void kiln_consumer_sync(int c) {
  asm volatile("bar.sync %0, 128;" ::"r"(1 + c) : "memory");
}

// wgmma shared-memory descriptor of a K-major tile with 128-byte rows in the 128B swizzle that
// TMA writes: 8-row core matrices 1024 bytes apart (stride byte offset), leading offset unused.
__device__ __forceinline__ unsigned long long kiln_wgmma_desc(const void* p) {
  const unsigned long long addr = kiln_smem_addr(p);
  return ((addr & 0x3FFFF) >> 4) | (1ull << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}

// One consumer's epilogue: out[m0:, n0:] = act(d + bias) for its 128 x 128 tile. With kTma, the
// tile is staged in shared memory at sC (once the previous TMA store from there has read it) and
// one thread stores it with TMA: whole lines, asynchronous, clipped at the tensor's edges.
// Otherwise each thread stores its pairs, bounds-checked. Starts and ends with a consumer sync:
// tileBias is written before, and read by nothing after.
template <bool kTma>
__device__ __forceinline__ void kiln_gemm_epilogue(const KilnGemmArgs& args,
                                                   const float (&d)[2][KILN_GEMM_BN / 2],
                                                   const kiln_gemm_t* tileBias,
                                                   const kiln_gemm_t* sC, int consumer, int m0,
                                                   int n0) {
  const int t = threadIdx.x % 128, warp = t / 32, lane = t % 32;
  const unsigned c = kiln_smem_addr(sC + consumer * KILN_GEMM_BM * KILN_GEMM_BN);
  if (kTma && t == 0) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
  kiln_consumer_sync(consumer);
  kiln_gemm_t* out = static_cast<kiln_gemm_t*>(args.out);
  // Accumulator fragment of m64nNk16: d[.][4j + 2h + e] is row 16 * warp + lane / 4 + 8h,
  // column 8j + 2 (lane % 4) + e.
#pragma unroll
  for (int j = 0; j < KILN_GEMM_BN / 8; ++j) {
    const kiln_gemm_t2 bp =
        *reinterpret_cast<const kiln_gemm_t2*>(tileBias + 8 * j + 2 * (lane % 4));
    const float b0 = static_cast<float>(bp.x), b1 = static_cast<float>(bp.y);
    const long long col = n0 + 8 * j + 2 * (lane % 4);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = 64 * half + 16 * warp + lane / 4 + 8 * h;
        kiln_gemm_t2 v;
        v.x = static_cast<kiln_gemm_t>(kiln_gemm_act(d[half][4 * j + 2 * h] + b0));
        v.y = static_cast<kiln_gemm_t>(kiln_gemm_act(d[half][4 * j + 2 * h + 1] + b1));
        if (kTma) {
          // Box j / 8, 16-byte chunk j % 8 of the row, swizzled with the row's low 3 bits.
          const unsigned offset = (j / 8) * KILN_GEMM_BM * 128 + row * 128 +
                                  (((j % 8) ^ (row % 8)) * 16) + (lane % 4) * 4;
          asm volatile("st.shared.b32 [%0], %1;" ::"r"(c + offset),
                       "r"(*reinterpret_cast<const unsigned*>(&v)));
        } else if (m0 + row < args.m && col < args.n) {
          kiln_gemm_t* p = out + (m0 + row) * args.ldo + col;
          if (col + 1 < args.n && args.ldo % 2 == 0) {
            *reinterpret_cast<kiln_gemm_t2*>(p) = v;
          } else {
            p[0] = v.x;
            if (col + 1 < args.n) p[1] = v.y;
          }
        }
      }
    }
  }
  if (kTma) asm volatile("fence.proxy.async.shared::cta;" ::: "memory");  // visible to TMA
  kiln_consumer_sync(consumer);
  if (kTma && t == 0) kiln_tma_store_tile(&args.o, c, n0, m0);
}

// Moves a ring position (stage, phase) on by n stages.
__device__ __forceinline__ void kiln_ring_advance(int& stage, unsigned& phase, int n) {
  stage += n;
  phase ^= static_cast<unsigned>(stage / KILN_GEMM_STAGES) & 1u;
  stage %= KILN_GEMM_STAGES;
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
  // Per consumer, its output tile staged for the TMA store: two [128 rows][64 columns] boxes.
  kiln_gemm_t* sC = sB + KILN_GEMM_STAGES * kTileB;
  kiln_gemm_t* sBias = sC + 2 * KILN_GEMM_BM * KILN_GEMM_BN;  // per consumer, its tile's bias
  unsigned long long* full = reinterpret_cast<unsigned long long*>(sBias + 2 * KILN_GEMM_BN);
  unsigned long long* empty = full + KILN_GEMM_STAGES;
  unsigned long long* turn = empty + KILN_GEMM_STAGES;  // [c]: consumer c may start its mainloop

  const int warpgroup = threadIdx.x / 128;
  const int t = threadIdx.x % 128;
  if (threadIdx.x == 0) {
    for (int s = 0; s < KILN_GEMM_STAGES; ++s) {
      kiln_mbar_init(&full[s], 1);   // the producer's expect_tx arrival (+ the TMA bytes)
      kiln_mbar_init(&empty[s], 4);  // one arrival per warp of the consumer of that stage
    }
    kiln_mbar_init(&turn[0], 4);  // one arrival per warp of the other consumer
    kiln_mbar_init(&turn[1], 4);
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
        kiln_ring_advance(stage, phase, 1);
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int consumer = warpgroup - 1;  // takes the CTA's tiles consumer, consumer + 2, ...
  const int warp = t / 32, lane = t % 32;
  float d[2][KILN_GEMM_BN / 2];  // rows [0, 64) and [64, 128) of the tile
  int stage = 0;
  unsigned phase = 0;
  kiln_ring_advance(stage, phase, consumer * steps);  // past the other consumer's first tile
  int round = 0;  // this consumer's tiles so far
  for (int tile = blockIdx.x + consumer * gridDim.x; tile < tiles;
       tile += 2 * gridDim.x, ++round) {
    const int m0 = (tile / tilesN) * KILN_GEMM_BM;
    const int n0 = (tile % tilesN) * KILN_GEMM_BN;
#pragma unroll
    for (int i = 0; i < KILN_GEMM_BN / 2; ++i) d[0][i] = d[1][i] = 0.f;
    // Consumer 0's tile r comes after consumer 1's tile r - 1, consumer 1's after consumer 0's r.
    const int turnPhase = consumer == 0 ? round - 1 : round;
    if (turnPhase >= 0) kiln_mbar_wait(&turn[consumer], static_cast<unsigned>(turnPhase) & 1u);
    // Column n0 + t of the bias, loaded during the mainloop and staged in shared memory after it.
    kiln_gemm_t biasValue = static_cast<kiln_gemm_t>(0.f);
    if (kHasBias && n0 + t < args.n) biasValue = static_cast<const kiln_gemm_t*>(args.bias)[n0 + t];
    int previous = -1;
    for (int s = 0; s < steps; ++s) {
      kiln_mbar_wait(&full[stage], phase);
      const kiln_gemm_t* a = sA + stage * kTileA;
      const kiln_gemm_t* b = sB + stage * kTileB;
      asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#pragma unroll
      for (int kk = 0; kk < KILN_GEMM_BK / 16; ++kk) {
        const unsigned long long db = kiln_wgmma_desc(b + kk * 16);
        kiln_wgmma_128(d[0], kiln_wgmma_desc(a + kk * 16), db);
        kiln_wgmma_128(d[1], kiln_wgmma_desc(a + 64 * KILN_GEMM_BK + kk * 16), db);
      }
      asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
      // The group before this one has finished reading its stage: hand that stage back.
      asm volatile("wgmma.wait_group.sync.aligned 1;" ::: "memory");
      if (previous >= 0 && lane == 0) kiln_mbar_arrive(&empty[previous]);
      previous = stage;
      kiln_ring_advance(stage, phase, 1);
    }
    if (lane == 0) kiln_mbar_arrive(&turn[consumer ^ 1]);  // the other consumer's turn
    asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
    if (previous >= 0 && lane == 0) kiln_mbar_arrive(&empty[previous]);
    kiln_ring_advance(stage, phase, steps);  // past the other consumer's tile
    // The epilogue before ended with a consumer sync, after its last read of tileBias.
    kiln_gemm_t* tileBias = sBias + consumer * KILN_GEMM_BN;
    tileBias[t] = biasValue;

    if (args.tmaStore)
      kiln_gemm_epilogue<true>(args, d, tileBias, sC, consumer, m0, n0);
    else
      kiln_gemm_epilogue<false>(args, d, tileBias, sC, consumer, m0, n0);
  }
  // The shared memory of the last stores must outlive their reads.
  if (args.tmaStore && t == 0) asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
}
