#include "src/passes/patch_convs.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "src/ir/shape_inference.h"

namespace kiln::passes {

using ir::Node;
using ir::OpKind;
using ir::Shape;
using ir::SymDim;
using ir::Value;

namespace {

bool rewrite(ir::Graph& graph, Node* conv) {
  if (conv->inputs().size() > 3 || conv->attrs().has("activation") ||
      graph.isGraphOutput(conv->output()))
    return false;
  if (conv->attrs().has("groups") && conv->attrs().getInt("groups") != 1) return false;
  const auto stride = ir::conv2dPair(conv->attrs(), "stride", 1);
  const auto padding = ir::conv2dPair(conv->attrs(), "padding", 0);
  const auto dilation = ir::conv2dPair(conv->attrs(), "dilation", 1);
  if (!stride || !padding || !dilation) return false;
  const ir::DType dtype = conv->output()->dtype();
  if (!ir::isFloating(dtype)) return false;
  const Shape& x = conv->input(0)->shape();
  const Shape& w = conv->input(1)->shape();
  if (x.size() != 4 || w.size() != 4) return false;
  for (const SymDim& d : {w[0], w[1], w[2], w[3], x[2], x[3]})
    if (!d.isConstant()) return false;
  const int64_t kh = w[2].constant(), kw = w[3].constant();
  if (kh * kw <= 1) return false;
  for (int i = 0; i < 2; ++i)
    if ((*padding)[i] != 0 || (*dilation)[i] != 1) return false;
  if ((*stride)[0] != kh || (*stride)[1] != kw) return false;
  if (x[2].constant() % kh != 0 || x[3].constant() % kw != 0) return false;
  const int64_t oh = x[2].constant() / kh, ow = x[3].constant() / kw;
  const SymDim& n = x[0];
  const SymDim& c = x[1];
  const int64_t o = w[0].constant();
  const int64_t k = w[1].constant() * kh * kw;

  auto reshape = [&](Value* v, Shape shape) {
    return graph.insertBefore(conv, OpKind::kReshape, {v}, {}, ir::TensorType{dtype, shape})
        ->output();
  };
  auto permute = [&](Value* v, std::vector<int64_t> perm) {
    ir::Attrs attrs;
    attrs.set("perm", std::move(perm));
    return graph.insertBefore(conv, OpKind::kPermute, {v}, attrs)->output();
  };
  Value* patches =
      reshape(permute(reshape(conv->input(0), {n, c, oh, kh, ow, kw}), {0, 2, 4, 1, 3, 5}),
              {n * SymDim(oh * ow), k});
  std::vector<Value*> ins = {patches, reshape(conv->input(1), {o, k})};
  if (conv->inputs().size() == 3) ins.push_back(conv->input(2));
  Value* rows = graph.insertBefore(conv, OpKind::kLinear, ins)->output();
  Value* out = permute(reshape(rows, {n, oh, ow, o}), {0, 3, 1, 2});
  graph.replaceAllUsesWith(conv->output(), out);
  return true;
}

}  // namespace

bool patchConvsAsGemms(ir::Graph& graph) {
  std::vector<Node*> convs;
  for (const auto& node : graph.nodes())
    if (node->kind() == OpKind::kConv2d) convs.push_back(node.get());
  bool changed = false;
  for (Node* conv : convs) changed = rewrite(graph, conv) || changed;
  return changed;
}

}  // namespace kiln::passes
