#pragma once
// Attention recognition: the explicit form of scaled dot-product attention becomes one kSdpa node,
// which the runtime sends to the library's fused kernels (flash / memory-efficient, Note
// [Attention without per-shape plans] in jit/eval/attention.cpp) instead of materializing the
// [.., Sq, Sk] score matrix twice (matmul out, softmax in/out).
//
// Matched (every intermediate used once, nothing in between but what is listed):
//   matmul(softmax(S, dim = last), V)   with
//   S  = T | add(T, M) | add(M, T)      M: an additive mask of the scores' dtype that broadcasts
//                                          to the scores' shape
//   T  = QK | mul(QK, c) | div(QK, c)   c: a scalar constant
//   QK = matmul(Q', permute(K, swap of the last two dims))
//   Q' = Q | mul(Q, c)                  (scale applied to the query instead)
// with Q, K, V of one floating dtype and one rank >= 3, Q [.., Sq, D], K [.., Sk, D], V [.., Sk,
// Dv]. The scale becomes the sdpa node's explicit scale attribute (1 when there was none).
//
// Not exact (unlike canonicalize): the fused kernel accumulates in its own order and precision, as
// torch.nn.functional.scaled_dot_product_attention would. Near misses (softmax over another dim, a
// mask that does not broadcast, a second use of the scores) are left alone.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. The replaced nodes are left for eliminateDeadCode.
bool fuseAttention(ir::Graph& graph);

// Note [Additive attention masks]
// A boolean mask keeps the scores where it is true. Every library attention kernel that takes a
// mask takes it additive, so each sdpa call with a boolean mask converted it first (the dispatcher
// does, and so does kiln's own call of the memory-efficient kernel, Note [Attention without
// per-shape plans] in jit/eval/attention.cpp): three small kernels per layer, on a mask that is the
// same for every layer (HF BERT, GPT-2 and Llama pass one [batch, 1, 1 or seq, seq] boolean mask to
// all of theirs). This pass converts each boolean mask once, where(mask, 0, -inf) in the query's
// dtype, before its first sdpa; the partitioner fuses that into the kernel that builds the mask.
// Exact: the same values the per-call conversion made. Returns true if the graph changed.
bool additiveAttentionMasks(ir::Graph& graph);

}  // namespace kiln::passes
