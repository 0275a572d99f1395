#pragma once
// Note [Symbolic dims]
// A dimension is a polynomial with integer coefficients over symbols s0, s1, ... (the dynamic dims
// a caller declared, e.g. batch and sequence). Products appear when views merge dims (flatten of
// [s0, s1, 768] -> [s0*s1, 768]); sums appear with cat. Division is exact or rejected, which is all
// that reshapes of real models need ([s0*s1*768] -> [s0*s1, 12, 64]). The representation is
// canonical (sorted monomials, no zero coefficients), so == is structural and hash() is stable.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::ir {

class SymDim {
 public:
  SymDim() = default;
  SymDim(int64_t constant);  // NOLINT(google-explicit-constructor): dims are mostly literals
  static SymDim symbol(int id);

  bool isConstant() const;
  // The constant 1 (a broadcast or squeezable dim); false for any symbolic dim.
  bool isOne() const { return isConstant() && constant() == 1; }
  // The constant value; InternalError if symbolic.
  int64_t constant() const;
  // The symbol id if this dim is exactly one symbol with coefficient 1.
  std::optional<int> asSymbol() const;
  // All symbol ids used, ascending, without repeats.
  std::vector<int> symbols() const;

  SymDim operator+(const SymDim& o) const;
  SymDim operator-(const SymDim& o) const;
  SymDim operator*(const SymDim& o) const;
  // Exact division; nullopt when the quotient is not a polynomial with integer coefficients.
  std::optional<SymDim> divExact(const SymDim& divisor) const;
  bool operator==(const SymDim& o) const { return terms_ == o.terms_; }
  bool operator!=(const SymDim& o) const { return !(*this == o); }

  // Value for concrete symbol values (index = symbol id). UserError if a symbol has no value.
  int64_t evaluate(std::span<const int64_t> symbolValues) const;

  // "128", "s0", "s0*s1", "128*s0+1", "2*s0-3", "s0*s1+2*s0-3": terms by descending degree, the
  // constant last, coefficient first. Deterministic. Symbols print as "s<id>", or through nameOf.
  std::string toString() const;
  std::string toString(const std::function<std::string(int)>& nameOf) const;
  // Parses the toString() form (also accepts spaces and products in any order). UserError on
  // malformed text.
  // Grammar: expr := ['-'] term (('+'|'-') term)*; term := factor ('*' factor)*;
  // factor := integer | symbol | '(' expr ')'. Symbols are "s<id>", or resolved through symbolOf
  // (which may create them).
  static SymDim parse(std::string_view text);
  static SymDim parse(std::string_view text, const std::function<int(std::string_view)>& symbolOf);
  uint64_t hash() const;

 private:
  // monomial (sorted symbol ids, with repeats for powers; empty = constant term) -> coefficient
  std::map<std::vector<int>, int64_t> terms_;
};

using Shape = std::vector<SymDim>;

std::string toString(const Shape& shape);  // "[s0, 128, 768]"
// Product of all dims (1 for rank 0).
SymDim numel(const Shape& shape);

}  // namespace kiln::ir
