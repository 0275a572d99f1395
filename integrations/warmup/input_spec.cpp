#include "integrations/warmup/input_spec.h"

#include <algorithm>
#include <charconv>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "src/support/error.h"

namespace kiln::warmup {
namespace {

// Note [Absurd warmup ranges]: sizes above this are typos, not shapes.
constexpr int64_t kMaxSize = kMaxWarmupSize;

bool isIdentifier(std::string_view s) {
  if (s.empty()) return false;
  auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (!alpha(s.front())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return alpha(c) || digit(c); });
}

// A non-negative integer; nullopt when `s` is not one. UserError when it is one above kMaxSize.
std::optional<int64_t> parseSize(std::string_view s) {
  if (s.empty() || s.front() == '+' || s.front() == '-') return std::nullopt;
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (end != s.data() + s.size()) return std::nullopt;
  if (ec == std::errc::result_out_of_range || (ec == std::errc() && v > kMaxSize))
    throw UserError(
        fmt::format("{} is larger than {}, the largest size kiln-warmup accepts", s, kMaxSize));
  if (ec != std::errc()) return std::nullopt;
  return v;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string dimText(const DimSpec& d) {
  if (!d.dynamic) return std::to_string(d.lo);
  if (!d.rangeGiven) return d.symbol;
  std::string range = fmt::format("{}..{}", d.lo, d.hi);
  return d.symbol.empty() ? range : d.symbol + "=" + range;
}

// One dim of a spec; UserError saying what is wrong with it.
DimSpec parseDim(std::string_view item) {
  DimSpec d;
  std::string_view range = item;
  if (size_t eq = item.find('='); eq != std::string_view::npos) {
    std::string_view sym = item.substr(0, eq);
    if (!isIdentifier(sym)) throw UserError(fmt::format("bad symbol name \"{}\"", sym));
    d.symbol = std::string(sym);
    range = item.substr(eq + 1);
    if (range.find("..") == std::string_view::npos)
      throw UserError("a named dim needs a range, e.g. b=1..64");
  }
  if (size_t dots = range.find(".."); dots != std::string_view::npos) {
    std::optional<int64_t> lo = parseSize(range.substr(0, dots));
    std::optional<int64_t> hi = parseSize(range.substr(dots + 2));
    if (!lo || !hi) throw UserError("expected lo..hi with non-negative integers, e.g. 1..64");
    if (*lo > *hi) throw UserError(fmt::format("empty range: {} > {}", *lo, *hi));
    d.dynamic = true;
    d.lo = *lo;
    d.hi = *hi;
  } else if (isIdentifier(range)) {
    d.dynamic = true;
    d.symbol = std::string(range);
    d.rangeGiven = false;
  } else if (std::optional<int64_t> size = parseSize(range)) {
    if (*size < 1) throw UserError("a static size must be >= 1");
    d.lo = d.hi = *size;
  } else {
    throw UserError("expected a size, lo..hi, name=lo..hi or name");
  }
  return d;
}

}  // namespace

ir::DType parseWarmupDType(std::string_view text) {
  if (text == "float16" || text == "half") return ir::DType::kFloat16;
  if (text == "bfloat16") return ir::DType::kBFloat16;
  if (text == "float32" || text == "float") return ir::DType::kFloat32;
  if (text == "int64" || text == "long") return ir::DType::kInt64;
  if (text == "int32" || text == "int") return ir::DType::kInt32;
  if (text == "bool") return ir::DType::kBool;
  throw UserError(
      fmt::format("unknown dtype \"{}\" (expected float16, half, bfloat16, float32, float, "
                  "int64, long, int32, int or bool)",
                  text));
}

std::string_view dtypeName(ir::DType dtype) {
  switch (dtype) {
    case ir::DType::kFloat16:
      return "float16";
    case ir::DType::kBFloat16:
      return "bfloat16";
    case ir::DType::kFloat32:
      return "float32";
    case ir::DType::kInt64:
      return "int64";
    case ir::DType::kInt32:
      return "int32";
    case ir::DType::kBool:
      return "bool";
    default:
      return ir::toString(dtype);
  }
}

InputSpec parseInputSpec(std::string_view text) {
  auto fail = [&](const std::string& what) -> UserError {
    return UserError(fmt::format("--input \"{}\": {}", text, what));
  };
  std::vector<std::string_view> parts = split(text, ':');
  if (parts.size() != 3) throw fail("expected name:dtype:[dims], e.g. x:float16:[1..64,128]");
  InputSpec spec;
  if (!isIdentifier(parts[0]))
    throw fail(
        fmt::format("bad input name \"{}\" (letters, digits and _; not starting with a "
                    "digit)",
                    parts[0]));
  spec.name = std::string(parts[0]);
  try {
    spec.dtype = parseWarmupDType(parts[1]);
  } catch (const UserError& e) {
    throw fail(e.what());
  }
  std::string_view dims = parts[2];
  if (dims.size() < 2 || dims.front() != '[' || dims.back() != ']')
    throw fail(fmt::format("dims \"{}\" must be in brackets, e.g. [1..64,128]", dims));
  dims = dims.substr(1, dims.size() - 2);
  if (dims.empty()) throw fail("no dims (a scalar input cannot be warmed up)");
  std::vector<std::string_view> items = split(dims, ',');
  for (size_t i = 0; i < items.size(); ++i) {
    std::string_view item = items[i];
    try {
      spec.dims.push_back(parseDim(item));
    } catch (const UserError& e) {
      throw fail(fmt::format("dim {} (\"{}\"): {}", i, item, e.what()));
    }
  }
  return spec;
}

std::vector<Symbol> assignSymbols(const std::vector<InputSpec>& specs) {
  std::set<std::string> inputNames;
  for (const InputSpec& s : specs)
    KILN_USER_CHECK(inputNames.insert(s.name).second, "--input: input name \"{}\" given twice",
                    s.name);
  // Ranges of named symbols, wherever they are defined (a reference may come before it).
  std::map<std::string, std::pair<int64_t, int64_t>> namedRange;
  for (const InputSpec& s : specs) {
    for (size_t i = 0; i < s.dims.size(); ++i) {
      const DimSpec& d = s.dims[i];
      if (!d.dynamic || d.symbol.empty() || !d.rangeGiven) continue;
      auto [it, fresh] = namedRange.emplace(d.symbol, std::make_pair(d.lo, d.hi));
      KILN_USER_CHECK(fresh || it->second == std::make_pair(d.lo, d.hi),
                      "--input {}: symbol {} is {}..{} here but {}..{} elsewhere", s.name, d.symbol,
                      d.lo, d.hi, it->second.first, it->second.second);
    }
  }
  std::vector<Symbol> symbols;
  std::map<std::string, size_t> byName;
  std::map<std::tuple<size_t, int64_t, int64_t>, size_t> unnamed;  // (dim, lo, hi) -> symbol
  for (size_t k = 0; k < specs.size(); ++k) {
    const InputSpec& s = specs[k];
    for (size_t i = 0; i < s.dims.size(); ++i) {
      const DimSpec& d = s.dims[i];
      if (!d.dynamic) continue;
      Symbol::Use use{static_cast<int>(k), static_cast<int>(i)};
      size_t id;
      if (!d.symbol.empty()) {
        auto range = namedRange.find(d.symbol);
        KILN_USER_CHECK(
            range != namedRange.end(),
            "--input {}: dim {} uses symbol {}, which no input defines (write {}=lo..hi "
            "once)",
            s.name, i, d.symbol, d.symbol);
        auto [it, fresh] = byName.emplace(d.symbol, symbols.size());
        if (fresh)
          symbols.push_back(Symbol{d.symbol, range->second.first, range->second.second, {}});
        id = it->second;
      } else {
        auto [it, fresh] = unnamed.emplace(std::make_tuple(i, d.lo, d.hi), symbols.size());
        if (fresh) symbols.push_back(Symbol{fmt::format("s{}", symbols.size()), d.lo, d.hi, {}});
        id = it->second;
      }
      symbols[id].uses.push_back(use);
    }
  }
  // An explicit name equal to an automatic s<k> of another symbol would merge them in capture.
  std::set<std::string> names;
  for (const Symbol& sym : symbols)
    KILN_USER_CHECK(names.insert(sym.name).second,
                    "--input: symbol name {} clashes with the automatic name of an unnamed dynamic "
                    "dim; pick another name",
                    sym.name);
  return symbols;
}

std::vector<int64_t> bucketEdgesIn(int64_t lo, int64_t hi) {
  std::vector<int64_t> edges;
  // Bucket E >= 2 holds (E/2, E].
  for (int64_t e = 2; e / 2 < hi; e *= 2)
    if (e >= lo) edges.push_back(e);
  return edges;
}

std::vector<WarmBucket> bucketsIn(int64_t lo, int64_t hi, const std::vector<int64_t>& edges) {
  std::vector<WarmBucket> out;
  lo = std::max<int64_t>(lo, 2);  // buckets 0 and 1 are never warmed (Note [Warmup buckets])
  if (edges.empty()) {
    for (int64_t e : bucketEdgesIn(lo, hi))
      out.push_back({e, std::max(e / 2 + 1, lo), std::min(e, hi)});
    return out;
  }
  int64_t bottom = 2;
  for (int64_t e : edges) {
    if (e >= bottom && e >= lo && bottom <= hi)
      out.push_back({e, std::max(bottom, lo), std::min(e, hi)});
    bottom = std::max(bottom, e + 1);
  }
  if (hi >= bottom) out.push_back({kOverflowEdge, std::max(bottom, lo), hi});
  return out;
}

bool rangeHasUnwarmableBuckets(int64_t lo, int64_t hi) {
  return lo <= 1 && hi >= 0;
}

std::vector<BucketCombo> bucketCombos(const std::vector<InputSpec>& specs,
                                      const std::vector<Symbol>& symbols,
                                      const std::map<std::string, std::vector<int64_t>>& edges) {
  std::vector<std::vector<WarmBucket>> perSymbol;
  for (const Symbol& s : symbols) {
    auto it = edges.find(s.name);
    perSymbol.push_back(
        bucketsIn(s.lo, s.hi, it == edges.end() ? std::vector<int64_t>{} : it->second));
    if (perSymbol.back().empty()) return {};
  }
  std::set<int64_t> staticSizes;
  for (const InputSpec& s : specs)
    for (const DimSpec& d : s.dims)
      if (!d.dynamic) staticSizes.insert(d.lo);

  std::vector<BucketCombo> combos;
  std::vector<size_t> idx(symbols.size(), 0);
  while (true) {
    BucketCombo c;
    std::set<int64_t> taken = staticSizes;
    for (size_t k = 0; k < symbols.size(); ++k) {
      const WarmBucket& b = perSymbol[k][idx[k]];
      int64_t example = b.hi;
      for (int64_t v = b.hi; v >= b.lo; --v) {
        if (!taken.count(v)) {
          example = v;
          break;
        }
      }
      taken.insert(example);
      c.edges.push_back(b.edge);
      c.examples.push_back(example);
    }
    combos.push_back(std::move(c));
    // Odometer, last symbol fastest.
    size_t k = symbols.size();
    while (k > 0) {
      --k;
      if (++idx[k] < perSymbol[k].size()) break;
      idx[k] = 0;
      if (k == 0) return combos;
    }
    if (symbols.empty()) return combos;
  }
}

std::vector<std::vector<int64_t>> exampleShapes(const std::vector<InputSpec>& specs,
                                                const std::vector<Symbol>& symbols,
                                                const BucketCombo& combo) {
  std::vector<std::vector<int64_t>> shapes;
  for (const InputSpec& s : specs) {
    std::vector<int64_t> shape;
    for (const DimSpec& d : s.dims) shape.push_back(d.lo);
    shapes.push_back(std::move(shape));
  }
  KILN_CHECK(combo.examples.size() == symbols.size(), "combo has {} sizes for {} symbols",
             combo.examples.size(), symbols.size());
  for (size_t k = 0; k < symbols.size(); ++k)
    for (const Symbol::Use& u : symbols[k].uses)
      shapes.at(static_cast<size_t>(u.input)).at(static_cast<size_t>(u.dim)) = combo.examples[k];
  return shapes;
}

std::string toString(const InputSpec& spec) {
  std::vector<std::string> dims;
  for (const DimSpec& d : spec.dims) dims.push_back(dimText(d));
  return fmt::format("{}:{}:[{}]", spec.name, dtypeName(spec.dtype), fmt::join(dims, ","));
}

}  // namespace kiln::warmup
