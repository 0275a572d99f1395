#pragma once
// Constant folding of rank-0 arithmetic. Traces are full of scalar math on literals (a scale
// computed as 1/sqrt(64), `-inf` built as a negated constant, casts of literals); folding them
// leaves one literal that codegen can inline into the kernel text.
//
// Note [Folding numerics]
// A folded value must equal what the device would compute. So only ops whose result is exactly
// specified by IEEE 754 fold: add, sub, mul, div, neg, abs, relu, sqrt, maximum, minimum, the
// comparisons, where, clamp and cast. Operands are first rounded to their own dtype, floating math
// runs in float32 (torch's opmath for f16/bf16) and the result is rounded to the result dtype
// (round-to-nearest-even); integers use int64 arithmetic wrapped to the result width. Results
// that hinge on a signed-zero tie (maximum(-0, +0), relu(-0), clamp of 0) are not folded, since
// kernels resolve those by operand position.
// Transcendentals (exp, tanh, ...) are left alone: host libm and device intrinsics may differ.
#include "src/ir/graph.h"

namespace kiln::passes {

// Returns true if the graph changed. Folded nodes and operand constants left unused are removed.
bool foldConstants(ir::Graph& graph);

// Rounds v to the nearest value representable in dtype (RNE; ints truncate toward zero, bool is
// v != 0). Exposed for tests and for codegen's literal printing.
double roundToDType(double v, ir::DType dtype);

}  // namespace kiln::passes
