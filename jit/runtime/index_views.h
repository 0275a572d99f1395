#pragma once
// Note [Indexing by aranges is a view]
// Hugging Face's attention masks (transformers 5, sdpa_mask) read the padding mask as
//   padding_mask[torch.arange(batch)[:, None, None, None], torch.arange(kv)[None, None, None, :]]
// which traces to aten::index with index tensors that are reshaped aranges. kiln has no gather,
// so that index ran eagerly, and on a fresh process its first use cost about 20 ms of BERT's
// first call (H200, 2026-12-06). Such an index reads every element of x exactly where it is:
//   out[p] = x[p[d_0], ..., p[d_{k-1}]]
// when index tensor j is arange(0, n_j) (n_j = x's dim j) reshaped so that dim d_j holds it and
// every other dim is 1, every dim of x is indexed, and the d_j are distinct. The output is then x
// with its dims permuted into the order of the d_j and reshaped to the output's type: views, so
// the mask is built with no copy and no eager step. Anything else (a None in the index list, an
// arange that does not start at 0 with step 1 or does not span its dim, a broadcast index) is
// left as it is.
//
// It runs in Program::build right after the passes (they simplify what feeds the index, such as
// HF's arange(kv) + 0), not among them: it reads the capture's eager calls, which the passes in
// src/ do not see. The aranges and the index become dead and are removed.
#include "jit/capture/capture.h"

namespace kiln::jit {

// Rewrites every such index in `captured.graph`; returns how many.
int indexByArangesToViews(CapturedGraph& captured);

}  // namespace kiln::jit
