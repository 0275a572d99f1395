// kiln device runtime: gathers (included by kernels that gather rows).
// Note [Embeddings in kernels] (codegen/emit_cuda.cpp): the table row an id picks, checked as
// ATen's embedding kernel checks it on the GPU: an id that is negative or not below the table's
// rows fails a device-side assertion (the call fails, and the CUDA context with it, as in eager).
__device__ __forceinline__ long long kiln_gather_row(long long id, long long rows) {
  if ((unsigned long long)id >= (unsigned long long)rows)
    __assertfail("kiln: embedding id out of range (negative, or not below the table's rows)",
                 __FILE__, __LINE__, "kiln_gather_row", 1);
  return id;
}
