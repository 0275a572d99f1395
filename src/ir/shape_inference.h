#pragma once
// Output types of IR ops from their operands and attributes (torch semantics for the dtypes and
// ops kiln supports). Graph::append uses it when no type is given; the verifier re-checks stored
// types against it.
//
// Note [Shape inference rules]
// - Pointwise ops broadcast numpy-style; two dims are compatible when equal (structurally, as
//   polynomials) or when one is the constant 1. s0 against 5 is an error, not a guess.
// - dtype promotion follows torch: rank-0 operands (constants, scalars) do not raise the dtype of
//   ranked operands of the same category (f16[n] * f32[] -> f16), but do across categories
//   (i64[n] * f32[] -> f32). Comparisons give bool; div of integers gives f32.
// - cast, reshape, expand, slice, eager and the boundary ops cannot be inferred: their node carries
//   the type (needsExplicitType). inferType throws UserError for them.
// - Ill-typed ops throw UserError naming the op and the operand types.
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "src/ir/graph.h"

namespace kiln::ir {

TensorType inferType(OpKind kind, const std::vector<Value*>& inputs, const Attrs& attrs);

// True for ops whose output type is part of the node instead of a function of its operands.
bool needsExplicitType(OpKind kind);

// Broadcast result of two shapes; UserError mentioning `what` when they do not broadcast.
Shape broadcastShapes(const Shape& a, const Shape& b, std::string_view what);
// True if `from` broadcasts to exactly `to` (expand semantics: new leading dims, 1 -> any).
bool broadcastsTo(const Shape& from, const Shape& to);
// Normalizes a possibly negative dim against rank; UserError naming `what` when out of range.
int64_t normalizeDim(int64_t dim, int64_t rank, std::string_view what);
// A conv2d attribute (stride, padding, dilation) per spatial dim: one entry means both, an absent
// attribute `dflt` for both; nullopt for any other number of entries.
std::optional<std::array<int64_t, 2>> conv2dPair(const Attrs& attrs, std::string_view name,
                                                 int64_t dflt);

}  // namespace kiln::ir
