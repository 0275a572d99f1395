#pragma once
// Internal to jit/capture: the lowering table, the rules that turn one traced op into kiln IR.
#include <functional>
#include <string_view>
#include <unordered_map>

#include <ATen/core/interned_strings.h>
#include <torch/csrc/jit/ir/ir.h>

#include "src/ir/graph.h"

namespace kiln::jit {

class Lowerer;

// Note [Lowering table]
// Each traced op kiln lowers has one rule, registered under the op's interned name by the file of
// its family (below); adding an op touches that file only. The driver (Lowerer::run in lower.cpp)
// looks a node up after its own cases (sizes and int arithmetic, unpacks); a node without a rule,
// or whose rule returns nullptr/false, runs eagerly with the reason "kiln has no lowering for it",
// and a rule that throws NotLowerable{why} (lowerer.h) makes it eager with `why` as the reason.

// Lowers a node with one used, tensor output (the driver checks that) to the value it becomes.
using LoweringRule = std::function<ir::Value*(Lowerer&, const torch::jit::Node*)>;
// Lowers a node whose tensor-list output the trace unpacks (chunk/split/unbind): binds the
// prim::ListUnpack's outputs itself and returns true, or returns false when it does not apply.
using MultiLoweringRule = std::function<bool(Lowerer&, const torch::jit::Node*)>;

class LoweringTable {
 public:
  struct Entry {
    LoweringRule single;
    MultiLoweringRule multi;  // set instead of `single` for list-output ops
  };

  // qualName: "aten::softmax". Registering a name twice is an internal error.
  void add(std::string_view qualName, LoweringRule rule);
  void addMulti(std::string_view qualName, MultiLoweringRule rule);
  const Entry* find(c10::Symbol op) const;

 private:
  void insert(std::string_view qualName, Entry entry);
  std::unordered_map<c10::Symbol, Entry> rules_;
};

// The table of all families, built on first use.
const LoweringTable& loweringTable();
bool hasLoweringRule(std::string_view qualName);

// Elementwise ops: unary/binary maps, identities (contiguous, eval dropout), casts, add/sub/rsub,
// div, pow, gelu, clamp, where, masked_fill (lower_pointwise.cpp).
void addPointwiseRules(LoweringTable& table);
// Reductions kiln fuses: softmax/log_softmax, layer_norm, sum/mean/amax/amin
// (lower_reductions.cpp).
void addReductionRules(LoweringTable& table);
// Views and data movement: the view/reshape family, permute, transpose, expand,
// slice/narrow/select, cat, and the list-output chunk/split/unbind (lower_views.cpp).
void addViewRules(LoweringTable& table);
// Library calls: linear, matmul, mm, bmm, addmm, baddbmm, scaled_dot_product_attention,
// convolution, and eval batch_norm decomposed to pointwise ops (lower_library.cpp).
void addLibraryRules(LoweringTable& table);
// Indexing and creation from sizes: aten::index and aten::embedding by aranges, boolean scalars
// (lower_indexing.cpp, Note [Indexing by aranges]).
void addIndexingRules(LoweringTable& table);
// Note [Fills] in lower_indexing.cpp: comparison `kind` of node n (an arange with a number) as a
// kFill when every element answers the same, else nullptr.
ir::Value* comparisonOfArange(Lowerer& l, const torch::jit::Node* n, ir::OpKind kind);

}  // namespace kiln::jit
