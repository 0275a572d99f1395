#include "src/ir/sym_dim.h"

#include <algorithm>
#include <cctype>

#include "src/support/error.h"
#include "src/support/hash.h"

namespace kiln::ir {

namespace {

using Monomial = std::vector<int>;

int64_t checkedAdd(int64_t a, int64_t b) {
  int64_t r;
  KILN_USER_CHECK(!__builtin_add_overflow(a, b, &r), "symbolic dim overflow: {} + {}", a, b);
  return r;
}

int64_t checkedMul(int64_t a, int64_t b) {
  int64_t r;
  KILN_USER_CHECK(!__builtin_mul_overflow(a, b, &r), "symbolic dim overflow: {} * {}", a, b);
  return r;
}

Monomial mulMonomial(const Monomial& a, const Monomial& b) {
  Monomial r;
  r.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(r));
  return r;
}

// Graded order (degree first, then lexicographic on the sorted symbol ids). Translation-invariant
// within a degree, so it is a monomial order and the division algorithm below is exact.
bool monomialLess(const Monomial& a, const Monomial& b) {
  if (a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

// a / b if b's symbols are a sub-multiset of a's.
std::optional<Monomial> divMonomial(const Monomial& a, const Monomial& b) {
  if (!std::includes(a.begin(), a.end(), b.begin(), b.end())) return std::nullopt;
  Monomial r;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(r));
  return r;
}

void addTerm(std::map<Monomial, int64_t>& terms, const Monomial& m, int64_t c) {
  if (c == 0) return;
  auto [it, inserted] = terms.emplace(m, c);
  if (!inserted) {
    it->second = checkedAdd(it->second, c);
    if (it->second == 0) terms.erase(it);
  }
}

}  // namespace

SymDim::SymDim(int64_t constant) {
  if (constant != 0) terms_[{}] = constant;
}

SymDim SymDim::symbol(int id) {
  KILN_CHECK(id >= 0, "negative symbol id {}", id);
  SymDim d;
  d.terms_[{id}] = 1;
  return d;
}

bool SymDim::isConstant() const {
  return terms_.empty() || (terms_.size() == 1 && terms_.begin()->first.empty());
}

int64_t SymDim::constant() const {
  KILN_CHECK(isConstant(), "dim {} is symbolic, not a constant", toString());
  return terms_.empty() ? 0 : terms_.begin()->second;
}

std::optional<int> SymDim::asSymbol() const {
  if (terms_.size() != 1) return std::nullopt;
  const auto& [m, c] = *terms_.begin();
  if (m.size() != 1 || c != 1) return std::nullopt;
  return m[0];
}

std::vector<int> SymDim::symbols() const {
  std::vector<int> r;
  for (const auto& [m, c] : terms_) r.insert(r.end(), m.begin(), m.end());
  std::sort(r.begin(), r.end());
  r.erase(std::unique(r.begin(), r.end()), r.end());
  return r;
}

SymDim SymDim::operator+(const SymDim& o) const {
  SymDim r = *this;
  for (const auto& [m, c] : o.terms_) addTerm(r.terms_, m, c);
  return r;
}

SymDim SymDim::operator-(const SymDim& o) const {
  SymDim r = *this;
  for (const auto& [m, c] : o.terms_) addTerm(r.terms_, m, checkedMul(c, -1));
  return r;
}

SymDim SymDim::operator*(const SymDim& o) const {
  SymDim r;
  for (const auto& [ma, ca] : terms_)
    for (const auto& [mb, cb] : o.terms_)
      addTerm(r.terms_, mulMonomial(ma, mb), checkedMul(ca, cb));
  return r;
}

std::optional<SymDim> SymDim::divExact(const SymDim& divisor) const {
  if (divisor.terms_.empty()) return std::nullopt;
  auto leading = [](const std::map<Monomial, int64_t>& t) {
    auto best = t.begin();
    for (auto it = t.begin(); it != t.end(); ++it)
      if (monomialLess(best->first, it->first)) best = it;
    return best;
  };
  const auto dl = leading(divisor.terms_);
  SymDim rem = *this;
  SymDim quotient;
  while (!rem.terms_.empty()) {
    const auto rl = leading(rem.terms_);
    if (rl->second % dl->second != 0) return std::nullopt;
    auto m = divMonomial(rl->first, dl->first);
    if (!m) return std::nullopt;
    SymDim t;
    t.terms_[*m] = rl->second / dl->second;
    quotient = quotient + t;
    rem = rem - t * divisor;
  }
  return quotient;
}

int64_t SymDim::evaluate(std::span<const int64_t> symbolValues) const {
  int64_t total = 0;
  for (const auto& [m, c] : terms_) {
    int64_t v = c;
    for (int s : m) {
      KILN_USER_CHECK(s >= 0 && static_cast<size_t>(s) < symbolValues.size(),
                      "no value for symbol s{} (have {} symbol values)", s, symbolValues.size());
      v = checkedMul(v, symbolValues[static_cast<size_t>(s)]);
    }
    total = checkedAdd(total, v);
  }
  return total;
}

std::string SymDim::toString() const {
  return toString([](int id) { return fmt::format("s{}", id); });
}

std::string SymDim::toString(const std::function<std::string(int)>& nameOf) const {
  if (terms_.empty()) return "0";
  std::vector<std::pair<Monomial, int64_t>> sorted(terms_.begin(), terms_.end());
  // Highest degree first; the constant term last.
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) {
    if (a.first.size() != b.first.size()) return a.first.size() > b.first.size();
    return a.first < b.first;
  });
  std::string out;
  bool first = true;
  for (const auto& [m, c] : sorted) {
    int64_t mag = c < 0 ? -c : c;
    if (c < 0)
      out += "-";
    else if (!first)
      out += "+";
    first = false;
    std::string body;
    if (m.empty() || mag != 1) body = std::to_string(mag);
    for (int s : m) {
      if (!body.empty()) body += "*";
      body += nameOf(s);
    }
    out += body;
  }
  return out;
}

namespace {

class DimParser {
 public:
  DimParser(std::string_view text, const std::function<int(std::string_view)>& symbolOf)
      : text_(text), symbolOf_(symbolOf) {}

  SymDim parseAll() {
    SymDim d = expr();
    skipSpace();
    if (pos_ != text_.size()) fail("unexpected character");
    return d;
  }

 private:
  [[noreturn]] void fail(std::string_view what) {
    throw UserError(fmt::format("malformed dim '{}' at column {}: {}", text_, pos_ + 1, what));
  }
  void skipSpace() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool accept(char c) {
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  SymDim expr() {
    bool neg = accept('-');
    SymDim d = term();
    if (neg) d = SymDim(0) - d;
    while (true) {
      if (accept('+'))
        d = d + term();
      else if (accept('-'))
        d = d - term();
      else
        return d;
    }
  }
  SymDim term() {
    SymDim d = factor();
    while (accept('*')) d = d * factor();
    return d;
  }
  SymDim factor() {
    skipSpace();
    if (accept('(')) {
      SymDim d = expr();
      if (!accept(')')) fail("expected ')'");
      return d;
    }
    if (pos_ >= text_.size()) fail("expected an integer or a symbol");
    char c = text_[pos_];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      int64_t v = 0;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) {
        v = checkedAdd(checkedMul(v, 10), text_[pos_] - '0');
        ++pos_;
      }
      return SymDim(v);
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t start = pos_;
      while (pos_ < text_.size() &&
             (std::isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_'))
        ++pos_;
      return SymDim::symbol(symbolOf_(text_.substr(start, pos_ - start)));
    }
    fail("expected an integer or a symbol");
  }

  std::string_view text_;
  const std::function<int(std::string_view)>& symbolOf_;
  size_t pos_ = 0;
};

}  // namespace

SymDim SymDim::parse(std::string_view text) {
  return parse(text, [text](std::string_view name) -> int {
    bool ok = name.size() >= 2 && name[0] == 's' &&
              std::all_of(name.begin() + 1, name.end(),
                          [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    if (!ok || name.size() > 9)
      throw UserError(
          fmt::format("malformed dim '{}': unknown symbol '{}' (expected s<number>)", text, name));
    return std::stoi(std::string(name.substr(1)));
  });
}

SymDim SymDim::parse(std::string_view text, const std::function<int(std::string_view)>& symbolOf) {
  return DimParser(text, symbolOf).parseAll();
}

uint64_t SymDim::hash() const {
  uint64_t h = kFnvOffset;
  for (const auto& [m, c] : terms_) {
    h = hashCombine(h, m.size());
    for (int s : m) h = hashCombine(h, static_cast<uint64_t>(s));
    h = hashCombine(h, static_cast<uint64_t>(c));
  }
  return h;
}

std::string toString(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += shape[i].toString();
  }
  return out + "]";
}

SymDim numel(const Shape& shape) {
  SymDim n(1);
  for (const SymDim& d : shape) n = n * d;
  return n;
}

}  // namespace kiln::ir
