// kiln device runtime: batched 2-d transpose, the layout conversion of Note [Layout conversion
// kernels] (codegen/emit_cuda.h, emitTranspose). in is [B, R, K] and out is [B, K, R], both dense;
// args.sizes = {B, R, K}. A 256-thread block moves tiles through shared memory, so both the reads
// (along K) and the writes (along R) are coalesced. 4-byte elements go 32 x 32 at a time, one
// element per access. 2-byte elements go 64 x 64 at a time in pairs (one 32-bit access moves two
// neighbours), which keeps a warp's access at 128 bytes; that needs R and K even, else they take
// the one-element path too. Padding columns keep the transposed reads of a tile spread over the
// banks. NCHW -> NHWC is (B, R, K) = (N, C, H*W); NHWC -> NCHW is (N, H*W, C). Indices are 64-bit:
// a conversion is memory-bound, and any size is served. The grid is any size (a grid-stride loop
// over tiles).
// The [B, R, K] problem cut into size x size tiles.
struct KilnTiles {
  long long rows, cols, tilesR, tilesK, count;
  int size;
  __device__ KilnTiles(const KilnArgs& args, int tileSize)
      : rows(args.sizes[1]), cols(args.sizes[2]), tilesR((rows + tileSize - 1) / tileSize),
        tilesK((cols + tileSize - 1) / tileSize), count(args.sizes[0] * tilesR * tilesK),
        size(tileSize) {}
  // Tile t's batch, first row and first column.
  __device__ void origin(long long t, long long& b, long long& r0, long long& k0) const {
    b = t / (tilesR * tilesK);
    const long long rest = t - b * tilesR * tilesK;
    r0 = (rest / tilesK) * size;
    k0 = (rest % tilesK) * size;
  }
};

template <typename T>
__device__ __forceinline__ void kiln_transpose_single(const KilnArgs& args, T (*tile)[33]) {
  const T* __restrict__ in = (const T*)args.ptr[0];
  T* __restrict__ out = (T*)args.ptr[1];
  const KilnTiles g(args, 32);
  const long long rows = g.rows, cols = g.cols;
  const int tx = (int)threadIdx.x & 31;
  const int ty = (int)threadIdx.x >> 5;
  for (long long t = blockIdx.x; t < g.count; t += gridDim.x) {
    long long b, r0, k0;
    g.origin(t, b, r0, k0);
    const T* src = in + b * rows * cols;
    T* dst = out + b * rows * cols;
#pragma unroll
    for (int j = ty; j < 32; j += 8) {
      const long long r = r0 + j;
      const long long k = k0 + tx;
      if (r < rows && k < cols) tile[j][tx] = src[r * cols + k];
    }
    __syncthreads();
#pragma unroll
    for (int j = ty; j < 32; j += 8) {
      const long long k = k0 + j;
      const long long r = r0 + tx;
      if (r < rows && k < cols) dst[k * rows + r] = tile[tx][j];
    }
    __syncthreads();
  }
}

// 2-byte T, R and K even: 64 x 64 tiles, pairs of neighbours per 32-bit access.
template <typename T>
__device__ __forceinline__ void kiln_transpose_pairs(const KilnArgs& args, T (*tile)[66]) {
  const unsigned* __restrict__ in = (const unsigned*)args.ptr[0];
  unsigned* __restrict__ out = (unsigned*)args.ptr[1];
  const KilnTiles g(args, 64);
  const long long rows = g.rows, cols = g.cols;
  const int tx = (int)threadIdx.x & 31;
  const int ty = (int)threadIdx.x >> 5;
  for (long long t = blockIdx.x; t < g.count; t += gridDim.x) {
    long long b, r0, k0;
    g.origin(t, b, r0, k0);
    // In pairs: a row of `in` holds cols / 2 pairs, a row of `out` rows / 2.
    const unsigned* src = in + b * rows * (cols / 2);
    unsigned* dst = out + b * cols * (rows / 2);
#pragma unroll
    for (int j = ty; j < 64; j += 8) {
      const long long r = r0 + j;
      const long long k = k0 + 2 * tx;
      if (r < rows && k < cols) {
        const unsigned pair = src[r * (cols / 2) + k / 2];
        *(unsigned*)&tile[j][2 * tx] = pair;
      }
    }
    __syncthreads();
#pragma unroll
    for (int j = ty; j < 64; j += 8) {
      const long long k = k0 + j;
      const long long r = r0 + 2 * tx;
      if (r < rows && k < cols) {
        const unsigned lo = *(const unsigned short*)&tile[2 * tx][j];
        const unsigned hi = *(const unsigned short*)&tile[2 * tx + 1][j];
        dst[k * (rows / 2) + r / 2] = lo | (hi << 16);  // r at the lower address
      }
    }
    __syncthreads();
  }
}

template <typename T>
__device__ __forceinline__ void kiln_batched_transpose(const KilnArgs& args) {
  // 16-bit types may take either path (the pairs' tile is the larger); others only the single one.
  constexpr int kBytes = sizeof(T) == 2 ? 64 * 66 * 2 : 32 * 33 * (int)sizeof(T);
  __shared__ __align__(16) unsigned char smem[kBytes];
  if constexpr (sizeof(T) == 2) {
    if (args.sizes[1] % 2 == 0 && args.sizes[2] % 2 == 0) {
      kiln_transpose_pairs<T>(args, (T(*)[66])smem);
      return;
    }
  }
  kiln_transpose_single<T>(args, (T(*)[33])smem);
}
