#pragma once
// Recovering symbolic sizes from a concrete trace (Note [Symbolic dims in captured graphs] in
// capture.h). Plain C++ over ir::SymDim: no LibTorch here, so it is cheap to test.
#include <cstdint>
#include <optional>
#include <vector>

#include "src/ir/sym_dim.h"

namespace kiln::jit {

class SymContext {
 public:
  explicit SymContext(std::vector<int64_t> symbolValues = {});

  const std::vector<int64_t>& symbolValues() const { return values_; }
  int64_t eval(const ir::SymDim& d) const { return d.evaluate(values_); }
  std::vector<int64_t> eval(const ir::Shape& s) const;

  // Remembers the symbolic dims of a shape, as candidates for matchLiteral.
  void noteShape(const ir::Shape& shape);
  // A symbolic dim seen so far whose example value is `v`. Prefers a single symbol over a product;
  // sets *ambiguous when several distinct candidates fit (the first noted wins).
  std::optional<ir::SymDim> matchLiteral(int64_t v, bool* ambiguous = nullptr) const;

 private:
  std::vector<int64_t> values_;
  std::vector<ir::SymDim> seen_;
};

// The symbolic output shape of viewing `in` as the concrete `out` (the trace's sizes, -1 already
// resolved). `known[i]`, where set, is a dim the trace computed symbolically (aten::size). Returns
// nullopt when no consistent symbolic form exists (the caller keeps `out` concrete). Sets
// *ambiguous when more than one assignment of symbols fits equally well.
std::optional<ir::Shape> resolveReshape(const ir::Shape& in, const std::vector<int64_t>& out,
                                        const std::vector<std::optional<ir::SymDim>>& known,
                                        const SymContext& ctx, bool* ambiguous = nullptr);

// Target dims of expand: dims that keep the input's size stay symbolic; new or broadcast dims are
// resolved with matchLiteral.
ir::Shape resolveExpand(const ir::Shape& in, const std::vector<int64_t>& out, const SymContext& ctx,
                        bool* ambiguous = nullptr);

}  // namespace kiln::jit
