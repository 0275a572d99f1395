// kiln device runtime: batchnorm folded into a convolution's weights (Note [Folding batchnorm
// into convolutions] in jit/runtime/fold_conv_bn.h; Note [Fold kernel] in codegen/emit_cuda.h).
// args.ptr = {conv weight, conv bias, mean, var, bn weight, bn bias, W', shift'}; a null conv bias,
// bn weight or bn bias is absent. args.sizes = {O, I, KH, KW} (the conv weight's shape),
// args.numel = O*I*KH*KW, args.strides[0] and args.strides[6]: the strides (in elements) of the
// conv weight and of W'. The per-channel params and shift' are dense [O]. Float arithmetic, in
// the order the ATen fold used, one rounding on each store:
//   scale = rsqrt(var + eps) [* bn weight]    shift' = ((conv bias or 0) - mean) * scale [+ bn bias]
//   W' = W * scale
// Any grid: a grid-stride loop over the weight's elements; the thread of element (o, 0, 0, 0)
// also writes shift'[o].
template <typename W, typename P, typename O>
__device__ __forceinline__ void kiln_fold_conv_bn(const KilnArgs& args, float eps) {
  const W* __restrict__ w = (const W*)args.ptr[0];
  const P* __restrict__ convBias = (const P*)args.ptr[1];
  const P* __restrict__ mean = (const P*)args.ptr[2];
  const P* __restrict__ var = (const P*)args.ptr[3];
  const P* __restrict__ bnWeight = (const P*)args.ptr[4];
  const P* __restrict__ bnBias = (const P*)args.ptr[5];
  O* __restrict__ outW = (O*)args.ptr[6];
  O* __restrict__ outShift = (O*)args.ptr[7];
  const long long nI = args.sizes[1], nH = args.sizes[2], nW = args.sizes[3];
  const long long* s = args.strides[0];
  const long long* t = args.strides[6];
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < args.numel; e += step) {
    long long r = e;
    const long long kw = r % nW;
    r /= nW;
    const long long kh = r % nH;
    r /= nH;
    const long long ci = r % nI;
    const long long o = r / nI;
    float scale = rsqrtf(kiln_ld(var + o) + eps);
    if (bnWeight != nullptr) scale = scale * kiln_ld(bnWeight + o);
    const float x = kiln_ld(w + o * s[0] + ci * s[1] + kh * s[2] + kw * s[3]);
    kiln_st(outW + o * t[0] + ci * t[1] + kh * t[2] + kw * t[3], x * scale);
    if (ci == 0 && kh == 0 && kw == 0) {
      float shift = convBias != nullptr ? kiln_ld(convBias + o) - kiln_ld(mean + o)
                                        : -kiln_ld(mean + o);
      shift = shift * scale;
      if (bnBias != nullptr) shift = shift + kiln_ld(bnBias + o);
      kiln_st(outShift + o, shift);
    }
  }
}
