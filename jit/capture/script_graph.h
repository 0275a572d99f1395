#pragma once
// Internal to jit/capture: a TorchScript module's own forward graph, ready for lowering.
//
// Note [Capturing TorchScript from its graph]
// Tracing a TorchScript module with the C++ tracer loses what makes it shape-generic: the
// interpreter's aten::size is not a dispatcher op, so the tracer records every size the module
// reads as a literal (view(x, [3, 7, 4, 16]), arange(7)). A module that torch.jit.trace produced
// in Python already is a trace, with aten::size, prim::NumToTensor and integer arithmetic kept as
// nodes (Python's tracer records them). So kiln lowers that graph itself:
//   - forward's graph, copied and inlined; every prim::GetAttr chain that ends in a tensor becomes
//     a leading graph input bound to the module's own tensor (Note [Params by reference]); other
//     attributes become constants;
//   - in-place ops are rewritten out of place (RemoveTensorMutation);
//   - the graph is run node by node on the example inputs and every tensor value gets the
//     example's complete type (dtype and sizes), which is what lowering reads from a trace.
// A graph with control flow (prim::If, prim::Loop) or mutation that cannot be removed is not
// taken: the caller traces the module instead (Note [Tracing records one path] in capture.h).
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <ATen/ATen.h>

namespace torch::jit {
struct Graph;
struct Module;
}  // namespace torch::jit

namespace kiln::jit {

// A module's parameters and buffers, tied weights once (the first name wins).
struct ModuleTensors {
  std::vector<at::Tensor> tensors;
  std::vector<std::string> names;
  std::unordered_map<const c10::TensorImpl*, size_t> index;

  // Returns the tensor's position; adds it under `name` unless it is there already.
  size_t add(const std::string& name, const at::Tensor& t);
};

// The op of a mutation island (Note [Mutation islands] in script_graph.cpp).
inline constexpr const char* kMutationIslandOp = "kiln::mutation_island";

// The graph (inputs: `tensors` in order, then one per example input), or null with the reason in
// *why. May add tensor attributes that are neither parameters nor buffers to `tensors`.
std::shared_ptr<torch::jit::Graph> scriptGraphFor(const torch::jit::Module& module,
                                                  ModuleTensors& tensors,
                                                  const std::vector<at::Tensor>& inputs,
                                                  std::string* why);

}  // namespace kiln::jit
