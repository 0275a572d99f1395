#include "jit/runtime/conv_layout.h"

#include <map>

#include <ATen/Context.h>
#include <fmt/format.h>

#include "src/passes/channels_last_pointwise.h"

namespace kiln::jit {

namespace {
// Note [Channels-last convolutions]: the fewest convs that pay for the boundary conversions.
constexpr int kMinConvs = 2;
}  // namespace

ConvLayoutChoice chooseConvLayout(const CapturedGraph& captured, ConvLayout policy) {
  if (policy == ConvLayout::kContiguous) return {false, "NCHW (KILN_CONV_LAYOUT=contiguous)"};
  const ir::Graph& g = *captured.graph;
  std::map<std::string, const at::Tensor*> params;
  for (size_t i = 0; i < captured.params.size() && i < captured.paramNames.size(); ++i)
    params[captured.paramNames[i]] = &captured.params[i];
  int convs = 0;
  bool cuda = false;
  for (const auto& n : g.nodes()) {
    if (n->kind() != ir::OpKind::kConv2d) continue;
    ++convs;
    const ir::Node* w = n->input(1)->producer();
    if (w->kind() != ir::OpKind::kParam) continue;
    auto it = params.find(w->attrs().getString("name"));
    if (it != params.end() && it->second->defined() && it->second->is_cuda()) cuda = true;
  }
  if (convs == 0) return {false, ""};
  if (!cuda) return {false, fmt::format("NCHW ({} convs, weights not on CUDA)", convs)};
  if (!at::globalContext().userEnabledCuDNN()) return {false, "NCHW (cuDNN disabled)"};
  if (policy == ConvLayout::kChannelsLast)
    return {true, fmt::format("channels-last ({} convs, KILN_CONV_LAYOUT=channels_last)", convs)};
  if (convs < kMinConvs)
    return {false, fmt::format("NCHW ({} conv, fewer than the {} that pay for converting)", convs,
                               kMinConvs)};
  return {true, fmt::format("channels-last ({} convs)", convs)};
}

std::vector<int> convEntryInputs(const ir::Graph& graph) {
  std::vector<int> ids;
  for (const ir::Value* v : passes::convEntryInputs(graph)) ids.push_back(v->id());
  return ids;
}

}  // namespace kiln::jit
