#pragma once
// Sibling linears merged into one GEMM.
//
// Note [Merged linears]
// Transformers project one activation several times: q, k and v from the normed hidden states, and
// a gate and an up projection in SiLU-gated MLPs. Each is a GEMM of its own, and the small ones use
// the GPU badly: a Llama-style decoder's k and v (grouped-query attention, N = 256 for K = 2048)
// give 64 output tiles at 4096 tokens on a 132-SM card, and BERT-base's q, k and v (N = 768) give 6
// tiles each at batch 1. One GEMM over the concatenated weights computes the same rows with one
// launch and 3-20x more tiles; each old output becomes a slice of its columns, a view:
//
//   %q = linear(%x, %wq)      %qkv = linear(%x, %wq+wk+wv)        W = cat(wq, wk, wv) on dim 0
//   %k = linear(%x, %wk)  ->  %q = slice(%qkv) {dim = -1, start = 0}
//   %v = linear(%x, %wv)      %k = slice(%qkv) {start = Nq}  ...
//
// Merged: the linears that read one value as their input, with param weights of one dtype and one
// static K, no attributes (no epilogue activation: Note [Kiln GEMM]), and biases that are all
// params or all absent. Left alone: a linear whose output is a graph output (the caller would get a
// strided slice where the module returns a dense tensor) or is read by an eager step (an ATen op
// such as view may refuse a strided tensor where the module's dense one works). A group whose
// merged weight would exceed `maxBytes` (32 MiB by default) is not merged: the copy is memory the
// module's own weights take already, and large groups gain least (gate and up of the benchmark's
// Llama, 46 MiB in float16, are 44 tiles each at 128 tokens and fill the GPU from a few hundred
// tokens on). Small groups gain most: q, k and v of that Llama (10 MiB) and of BERT-base (3.4 MiB
// per layer, 40 MiB for 12 layers, about 18% of its weights).
//
// This pass only rewrites the graph and names each new param after its sources joined by '+'
// ("q_proj.weight+k_proj.weight+v_proj.weight"; no module attribute name contains '+'). The
// runtime builds the concatenated tensors and keeps them current when the module's weights change
// in place (Note [Derived params are snapshots] in jit/runtime/derived_params.h).
//
// Not exact: the merged GEMM may pick another algorithm or split, so results can differ from the
// separate GEMMs' in the last bits, as with any library call whose shape changes.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "src/ir/graph.h"

namespace kiln::passes {

// A param this pass added: the concatenation, on dim 0, of the named params, in order.
struct MergedParam {
  std::string name;
  std::vector<std::string> sources;
  ir::DType dtype = ir::DType::kFloat32;
};

struct MergedLinears {
  std::vector<MergedParam> params;  // weights, then the biases, of each merged group
  int groups = 0;                   // merged linears
  int linears = 0;                  // linears they replaced
  int64_t bytes = 0;                // of the merged weights and biases
  std::vector<std::string>
      describe;  // one line per group: "attn.{q_proj,k_proj,v_proj}: [2560, 2048]"
};

constexpr int64_t kMaxMergedLinearBytes = int64_t{32} << 20;

// Rewrites the graph (see the note); the replaced linears are erased, their weights stay as
// unused params. `taken` are the param names already in use: a merged name among them is skipped.
// `accept` (when set) is asked about each group's weights, then its biases, by name: false leaves
// the group alone (the runtime cannot concatenate those tensors).
using AcceptSources = std::function<bool(const std::vector<std::string>& sources)>;
MergedLinears mergeSiblingLinears(ir::Graph& graph, const std::vector<std::string>& taken,
                                  const AcceptSources& accept = {},
                                  int64_t maxBytes = kMaxMergedLinearBytes);

}  // namespace kiln::passes
