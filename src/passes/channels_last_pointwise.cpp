#include "src/passes/channels_last_pointwise.h"

#include <algorithm>
#include <cstdint>
#include <unordered_set>
#include <vector>

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::Value;

namespace {

const std::vector<int64_t> kToNhwc = {0, 2, 3, 1};
const std::vector<int64_t> kToNchw = {0, 3, 1, 2};

bool isPermute(const Node* n, const std::vector<int64_t>& perm) {
  return n != nullptr && n->kind() == OpKind::kPermute && n->attrs().getInts("perm") == perm;
}

}  // namespace

std::vector<const Value*> convEntryInputs(const ir::Graph& graph) {
  std::vector<const Value*> out;
  auto add = [&](const Value* v) {
    if (v->producer()->kind() != OpKind::kInput || v->rank() != 4) return;
    if (std::find(out.begin(), out.end(), v) == out.end()) out.push_back(v);
  };
  for (const auto& n : graph.nodes()) {
    if (n->kind() != OpKind::kConv2d) continue;
    add(n->input(0));
    if (n->inputs().size() > 3) add(n->input(3));
  }
  return out;
}

bool channelsLastPointwise(ir::Graph& graph) {
  // Values in channels-last memory: conv outputs, graph inputs a conv reads (as its input or its
  // residual), and [N, H, W, C] values permuted to [N, C, H, W] (the permutes back this pass makes,
  // and Note [Patch convolutions as GEMMs]'s results), which the rewrite reads unpermuted.
  const std::vector<const Value*> entry = convEntryInputs(graph);
  std::unordered_set<const Value*> nhwc(entry.begin(), entry.end());
  bool convs = false;
  for (const auto& n : graph.nodes()) {
    if (isPermute(n.get(), kToNchw)) nhwc.insert(n->output());
    if (n->kind() != OpKind::kConv2d) continue;
    convs = true;
    nhwc.insert(n->output());
  }
  if (!convs) return false;
  std::vector<Node*> order;
  for (const auto& n : graph.nodes()) order.push_back(n.get());
  bool changed = false;
  for (Node* node : order) {
    if (node->category() != ir::OpCategory::kPointwise || node->outputs().size() != 1) continue;
    const Value* out = node->output();
    const Shape& s = out->shape();
    if (s.size() != 4 || (s[2].isOne() && s[3].isOne())) continue;
    bool any = false, all = true;
    for (const Value* in : node->inputs()) {
      if (in->shape() != s) continue;
      any = true;
      all = all && nhwc.count(in) > 0;
    }
    if (!any || !all) continue;
    std::vector<Value*> ins;
    for (Value* in : node->inputs()) {
      if (in->rank() == 0) {
        ins.push_back(in);
        continue;
      }
      if (isPermute(in->producer(), kToNchw) && nhwc.count(in) > 0) {
        ins.push_back(in->producer()->input(0));  // the permute back cancels
        continue;
      }
      Value* v = in;
      if (in->rank() < 4) {
        Shape padded(4 - in->rank(), SymDim(1));
        padded.insert(padded.end(), in->shape().begin(), in->shape().end());
        v = graph
                .insertBefore(node, OpKind::kReshape, {in}, {}, ir::TensorType{in->dtype(), padded})
                ->output();
      }
      ir::Attrs attrs;
      attrs.set("perm", kToNhwc);
      ins.push_back(graph.insertBefore(node, OpKind::kPermute, {v}, attrs)->output());
    }
    const ir::TensorType type{out->dtype(), {s[0], s[2], s[3], s[1]}};
    Node* inner = graph.insertBefore(node, node->kind(), ins, node->attrs(), type);
    ir::Attrs back;
    back.set("perm", kToNchw);
    Value* result = graph.insertBefore(node, OpKind::kPermute, {inner->output()}, back)->output();
    nhwc.insert(result);
    graph.replaceAllUsesWith(node->output(), result);
    changed = true;
  }
  return changed;
}

}  // namespace kiln::passes
