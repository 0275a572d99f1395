#pragma once
// kiln-warmup's input specs and the bucket combinations they expand to. Plain C++ (no LibTorch),
// so the parsing rules are unit-tested without a model.
//
// Spec grammar (one --input per forward() argument, in positional order):
//   spec    := name ':' dtype ':' '[' dim (',' dim)* ']'       (no spaces)
//   dtype   := float16 | half | bfloat16 | float32 | float | int64 | long | int32 | int | bool
//   dim     := size                 a static size, >= 1
//            | lo '..' hi           a dynamic dim, 0 <= lo <= hi
//            | sym '=' lo '..' hi   a dynamic dim bound to the symbol `sym`
//            | sym                  the symbol `sym`, defined (sym=lo..hi) in this or another input
//   name, sym := [A-Za-z_][A-Za-z0-9_]*
// Example: x:float16:[b=1..64,128,768] mask:float16:[b,1,128]
//
// Note [Warmup symbols]
// Each dynamic dim becomes a graph symbol (a jit::DynamicDim). Two dims must share a symbol when
// the model relates them (batch of x and of mask broadcast together); a graph with two symbols
// where the runtime has one compiles different kernels, and the cache would not be hit. Rules:
//   - named dims (b=1..64, or a bare b) share the symbol of that name; every definition of a name
//     must give the same range;
//   - unnamed dynamic dims share one symbol when they sit at the same dim index and have the same
//     range (batch at dim 0 of x and mask, both 1..64); they never share with named dims;
//   - symbols are numbered by first appearance (input order, then dim order), and unnamed ones are
//     called s0, s1, ... by that number, as capture names them. Declare the runtime's
//     jit::Options::dynamicDims in the same order so both sides build the same graph.
//
// Note [Warmup buckets]
// The runtime guards on the power-of-two bucket of each dynamic dim and compiles kernels whose
// text depends only on the bucket (Note [Buckets are deterministic] in jit/runtime/buckets.cpp), so
// warming one example per bucket covers every size in it. For a symbol with range [lo, hi] every
// bucket intersecting the range is compiled. Buckets 0 and 1 are skipped: capture cannot make a
// dim of example size 0 or 1 symbolic (it would specialize broadcasting), so no cache entry can be
// produced for them; they are reported as skipped. The example size of bucket edge E is the
// largest size in (E/2, E] ∩ [lo, hi] that differs from every static size and from the other
// symbols' examples (capture recovers symbolic sizes by value, Note [Symbolic dims in captured
// graphs]); if every candidate collides, min(E, hi). With explicit edges (--buckets, the
// runtime's jit::BucketPolicy) the buckets are those edges' instead, plus the overflow bucket
// above the last edge when the range reaches past it, whose plans run generic kernels.
//
// Note [Absurd warmup ranges]
// Nothing runs at a bucket's sizes (Note [Preparing plans ahead] in jit/runtime/optimize.h), so a
// large range costs compile time, not memory. Still, a size above kMaxWarmupSize (2^31 - 1) or a
// range product of more than kMaxWarmupCombos bucket combinations is a typo, not a deployment,
// and is refused up front with a message naming it.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "src/ir/dtype.h"

namespace kiln::warmup {

inline constexpr int64_t kMaxWarmupSize = (int64_t{1} << 31) - 1;
inline constexpr int64_t kMaxWarmupCombos = 4096;
// The edge of the overflow bucket (above the last explicit edge); jit::kOverflowBucket.
inline constexpr int64_t kOverflowEdge = -1;

struct DimSpec {
  bool dynamic = false;
  int64_t lo = 0;  // static: the size; dynamic: the range [lo, hi]
  int64_t hi = 0;
  std::string symbol;      // explicit symbol name (dynamic only); empty: unnamed
  bool rangeGiven = true;  // false for a bare symbol reference, resolved by assignSymbols()
};

struct InputSpec {
  std::string name;
  ir::DType dtype = ir::DType::kFloat32;
  std::vector<DimSpec> dims;
};

// Parses one --input value. Throws UserError with a one-line message naming the spec and the bad
// part, e.g. `--input "x:float16:[1..]": dim 1 ("1.."): expected a size, lo..hi or name=lo..hi`.
InputSpec parseInputSpec(std::string_view text);
// float16|half|bfloat16|float32|float; throws UserError naming `text` and the accepted names.
ir::DType parseWarmupDType(std::string_view text);
// "float16", "bfloat16", "float32".
std::string_view dtypeName(ir::DType dtype);

// One graph symbol (Note [Warmup symbols]).
struct Symbol {
  std::string name;  // explicit name, or s<index>
  int64_t lo = 0;
  int64_t hi = 0;
  struct Use {
    int input = 0;  // index into the specs
    int dim = 0;
  };
  std::vector<Use> uses;
};

// Assigns symbols to every dynamic dim of `specs`, in first-appearance order. Throws UserError
// for an undefined name, a name defined with two ranges, duplicate input names, or a name that
// clashes with an automatic s<k>.
std::vector<Symbol> assignSymbols(const std::vector<InputSpec>& specs);

// Bucket edges (powers of two, >= 2) intersecting [lo, hi], ascending (Note [Warmup buckets]).
std::vector<int64_t> bucketEdgesIn(int64_t lo, int64_t hi);

// One bucket of a symbol, and the sizes of [lo, hi] in it.
struct WarmBucket {
  int64_t edge = 0;  // kOverflowEdge: above the last explicit edge
  int64_t lo = 0;
  int64_t hi = 0;
};
// The buckets intersecting [max(lo, 2), hi]: powers of two when `edges` is empty, else the
// explicit edges' and the overflow bucket (Note [Warmup buckets]).
std::vector<WarmBucket> bucketsIn(int64_t lo, int64_t hi, const std::vector<int64_t>& edges);
// True when [lo, hi] includes sizes 0 or 1, whose buckets are skipped.
bool rangeHasUnwarmableBuckets(int64_t lo, int64_t hi);

// One bucket combination: per symbol, its bucket edge and the example size to trace with.
struct BucketCombo {
  std::vector<int64_t> edges;
  std::vector<int64_t> examples;
};

// The cartesian product of every symbol's buckets (first symbol varies slowest), each with example
// sizes chosen as in Note [Warmup buckets]. A graph without symbols has one empty combination.
// Returns no combinations when some symbol has no warmable bucket.
// `edges`: explicit bucket edges by symbol name (others use powers of two).
std::vector<BucketCombo> bucketCombos(
    const std::vector<InputSpec>& specs, const std::vector<Symbol>& symbols,
    const std::map<std::string, std::vector<int64_t>>& edges = {});

// Concrete sizes of every input for one combination.
std::vector<std::vector<int64_t>> exampleShapes(const std::vector<InputSpec>& specs,
                                                const std::vector<Symbol>& symbols,
                                                const BucketCombo& combo);

// "x:float16:[b=1..64,128]" style rendering of a parsed spec (round-trips through the parser).
std::string toString(const InputSpec& spec);

}  // namespace kiln::warmup
