#include "jit/capture/sym_resolve.h"

#include <algorithm>

namespace kiln::jit {

using ir::Shape;
using ir::SymDim;

SymContext::SymContext(std::vector<int64_t> symbolValues) : values_(std::move(symbolValues)) {}

std::vector<int64_t> SymContext::eval(const Shape& s) const {
  std::vector<int64_t> out;
  out.reserve(s.size());
  for (const SymDim& d : s) out.push_back(eval(d));
  return out;
}

void SymContext::noteShape(const Shape& shape) {
  for (const SymDim& d : shape) {
    if (d.isConstant()) continue;
    if (std::find(seen_.begin(), seen_.end(), d) == seen_.end()) seen_.push_back(d);
  }
}

std::optional<SymDim> SymContext::matchLiteral(int64_t v, bool* ambiguous) const {
  if (v <= 1) return std::nullopt;
  std::vector<SymDim> single;
  std::vector<SymDim> products;
  for (const SymDim& d : seen_) {
    if (eval(d) != v) continue;
    (d.asSymbol() ? single : products).push_back(d);
  }
  const std::vector<SymDim>& pick = single.empty() ? products : single;
  if (pick.empty()) return std::nullopt;
  if (pick.size() > 1 && ambiguous) *ambiguous = true;
  return pick.front();
}

namespace {

SymDim product(const Shape& s, const std::vector<size_t>& idx) {
  SymDim p(1);
  for (size_t i : idx) p = p * s[i];
  return p;
}

// Splits a monomial c*s_a*s_b*... into its coefficient and symbol ids (with repeats).
std::optional<std::pair<int64_t, std::vector<int>>> splitMonomial(const SymDim& d) {
  SymDim cur = d;
  std::vector<int> syms;
  for (int id : d.symbols()) {
    while (auto q = cur.divExact(SymDim::symbol(id))) {
      // Stop once the symbol no longer divides every term (e.g. s0+1 is not divisible by s0).
      cur = *q;
      syms.push_back(id);
      if (cur.isConstant()) break;
    }
  }
  if (!cur.isConstant()) return std::nullopt;
  return std::make_pair(cur.constant(), syms);
}

struct Group {
  std::vector<size_t> in;
  std::vector<size_t> out;
};

}  // namespace

std::optional<Shape> resolveReshape(const Shape& in, const std::vector<int64_t>& out,
                                    const std::vector<std::optional<SymDim>>& known,
                                    const SymContext& ctx, bool* ambiguous) {
  Shape result;
  for (int64_t v : out) result.emplace_back(v);
  SymDim total = ir::numel(in);
  if (total.isConstant()) return result;
  std::vector<int64_t> inVals = ctx.eval(in);
  if (std::find(inVals.begin(), inVals.end(), 0) != inVals.end() ||
      std::find(out.begin(), out.end(), 0) != out.end()) {
    return std::nullopt;
  }
  auto knownAt = [&](size_t j) -> const std::optional<SymDim>& {
    static const std::optional<SymDim> kNone;
    return j < known.size() ? known[j] : kNone;
  };

  // Group dims whose concrete products agree (as ATen's view does); 1s stand alone.
  std::vector<Group> groups;
  size_t i = 0;
  size_t j = 0;
  const size_t n = in.size();
  const size_t m = out.size();
  while (i < n || j < m) {
    if (i < n && inVals[i] == 1) {
      if (!in[i].isConstant()) return std::nullopt;
      ++i;
      continue;
    }
    if (j < m && out[j] == 1) {
      ++j;
      continue;
    }
    if (i >= n || j >= m) return std::nullopt;
    Group g;
    int64_t pIn = inVals[i];
    int64_t pOut = out[j];
    g.in.push_back(i++);
    g.out.push_back(j++);
    while (pIn != pOut) {
      if (pIn < pOut) {
        if (i >= n) return std::nullopt;
        pIn *= inVals[i];
        g.in.push_back(i++);
      } else {
        if (j >= m) return std::nullopt;
        pOut *= out[j];
        g.out.push_back(j++);
      }
    }
    groups.push_back(std::move(g));
  }

  for (const Group& g : groups) {
    SymDim p = product(in, g.in);
    if (p.isConstant()) continue;  // result already holds the constants
    SymDim knownProduct(1);
    std::vector<size_t> unknown;
    for (size_t o : g.out) {
      if (const auto& k = knownAt(o)) {
        if (ctx.eval(*k) != out[o]) return std::nullopt;
        result[o] = *k;
        knownProduct = knownProduct * *k;
      } else {
        unknown.push_back(o);
      }
    }
    auto rem = p.divExact(knownProduct);
    if (!rem) return std::nullopt;
    if (unknown.empty()) {
      if (*rem != SymDim(1)) return std::nullopt;
      continue;
    }
    if (unknown.size() == 1) {
      if (ctx.eval(*rem) != out[unknown[0]]) return std::nullopt;
      result[unknown[0]] = *rem;
      continue;
    }

    auto mono = splitMonomial(*rem);
    if (!mono) {
      // A sum (from cat): one dim carries it, the others are the literals.
      std::optional<size_t> chosen;
      for (size_t cand : unknown) {
        SymDim others(1);
        for (size_t o : unknown)
          if (o != cand) others = others * SymDim(out[o]);
        auto q = rem->divExact(others);
        if (q && ctx.eval(*q) == out[cand]) {
          if (chosen) {
            if (ambiguous) *ambiguous = true;
            continue;
          }
          chosen = cand;
          result[cand] = *q;
        }
      }
      if (!chosen) return std::nullopt;
      continue;
    }

    // Distribute the symbols over the unknown dims: every assignment whose per-dim quotients are
    // integers and multiply to the coefficient is valid; prefer whole single symbols, then the
    // order-preserving one.
    const auto& [coef, syms] = *mono;
    const size_t u = unknown.size();
    const size_t k = syms.size();
    size_t combos = 1;
    for (size_t t = 0; t < k; ++t) {
      combos *= u;
      if (combos > 100000) return std::nullopt;
    }
    std::optional<Shape> best;
    std::pair<int, int> bestScore{-1, -1};
    std::vector<size_t> assign(k, 0);
    for (size_t c = 0; c < combos; ++c) {
      size_t code = c;
      for (size_t t = 0; t < k; ++t) {
        assign[t] = code % u;
        code /= u;
      }
      std::vector<int64_t> symVal(u, 1);
      std::vector<int> symCount(u, 0);
      for (size_t t = 0; t < k; ++t) {
        symVal[assign[t]] *= ctx.symbolValues().at(static_cast<size_t>(syms[t]));
        symCount[assign[t]]++;
      }
      bool ok = true;
      int64_t coefProduct = 1;
      Shape dims(u);
      int whole = 0;
      for (size_t d = 0; d < u && ok; ++d) {
        int64_t o = out[unknown[d]];
        if (o % symVal[d] != 0) {
          ok = false;
          break;
        }
        int64_t cd = o / symVal[d];
        coefProduct *= cd;
        SymDim dim(cd);
        for (size_t t = 0; t < k; ++t)
          if (assign[t] == d) dim = dim * SymDim::symbol(syms[t]);
        dims[d] = dim;
        if (cd == 1 && symCount[d] == 1) ++whole;
      }
      if (!ok || coefProduct != coef) continue;
      int ordered = std::is_sorted(assign.begin(), assign.end()) ? 1 : 0;
      std::pair<int, int> score{whole, ordered};
      if (score > bestScore) {
        bestScore = score;
        best = dims;
      } else if (score == bestScore && best && dims != *best && ambiguous) {
        *ambiguous = true;
      }
    }
    if (!best) return std::nullopt;
    for (size_t d = 0; d < u; ++d) result[unknown[d]] = (*best)[d];
  }

  // The symbolic result must agree with the trace and keep the element count.
  if (ctx.eval(result) != out || ir::numel(result) != total) return std::nullopt;
  return result;
}

Shape resolveExpand(const Shape& in, const std::vector<int64_t>& out, const SymContext& ctx,
                    bool* ambiguous) {
  Shape result;
  const size_t offset = out.size() >= in.size() ? out.size() - in.size() : 0;
  for (size_t j = 0; j < out.size(); ++j) {
    if (j >= offset) {
      const SymDim& d = in[j - offset];
      if (ctx.eval(d) == out[j]) {
        result.push_back(d);
        continue;
      }
    }
    auto m = ctx.matchLiteral(out[j], ambiguous);
    result.push_back(m ? *m : SymDim(out[j]));
  }
  return result;
}

}  // namespace kiln::jit
