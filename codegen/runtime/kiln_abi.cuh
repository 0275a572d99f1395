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
