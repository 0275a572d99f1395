#include "jit/runtime/capture_cache.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <sstream>
#include <tuple>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/api/module.h>

#include "cache/kernel_cache.h"
#include "jit/eval/aten_eval.h"
#include "src/ir/parser.h"
#include "src/ir/printer.h"
#include "src/support/error.h"
#include "src/support/log.h"

namespace kiln::jit {
namespace {

constexpr std::string_view kMagic = "kiln-capture";

// The module's parameters and buffers (recursively), by name.
std::map<std::string, at::Tensor> moduleTensors(const torch::jit::Module& module) {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) out.emplace(p.name, p.value);
  for (const auto& b : module.named_buffers(/*recurse=*/true)) out.emplace(b.name, b.value);
  return out;
}

std::string tensorType(const at::Tensor& t) {
  return fmt::format("{}:{}:[{}]", c10::toString(t.scalar_type()),
                     c10::DeviceTypeName(t.device().type()), fmt::join(t.sizes(), ","));
}

bool hasNewline(const std::string& s) {
  return s.find('\n') != std::string::npos;
}

// Display text (reasons) on one line.
std::string oneLine(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// "<first word> <rest of line>"; the rest may be empty.
std::pair<std::string, std::string> splitWord(const std::string& line) {
  const size_t sp = line.find(' ');
  if (sp == std::string::npos) return {line, std::string()};
  return {line.substr(0, sp), line.substr(sp + 1)};
}

// Param names of a graph, in graph->params() order.
std::vector<std::string> paramNamesOf(const ir::Graph& g) {
  std::vector<std::string> out;
  for (const ir::Value* v : g.params()) out.push_back(v->producer()->attrs().getString("name"));
  return out;
}

std::vector<std::string> symbolNamesOf(const ir::Graph& g) {
  std::vector<std::string> out;
  for (int s = 0; s < g.numSymbols(); ++s) out.push_back(g.symbolName(s));
  return out;
}

// Reads "<word> <count>" and the next line-based fields.
struct Reader {
  std::istringstream in;
  explicit Reader(const std::string& text) : in(text) {}
  std::string line() {
    std::string l;
    if (!std::getline(in, l)) throw UserError("truncated");
    return l;
  }
  int64_t count(std::string_view word, int64_t max = 1 << 20) {
    std::string l = line();
    std::string w;
    int64_t n = -1;
    std::istringstream ls(l);
    ls >> w >> n;
    if (w != word || n < 0 || n > max) throw UserError(fmt::format("bad '{}' line", word));
    return n;
  }
  // `n` raw bytes, then the newline that ends them.
  std::string bytes(int64_t n) {
    std::string out(static_cast<size_t>(n), '\0');
    in.read(out.data(), n);
    if (in.gcount() != n || in.get() != '\n') throw UserError("truncated");
    return out;
  }
  std::string rest() {
    std::ostringstream o;
    o << in.rdbuf();
    return o.str();
  }
};

}  // namespace

std::optional<std::string> captureFingerprint(const torch::jit::Module& module,
                                              const std::string& family,
                                              const CaptureOptions& options) {
  std::string out = fmt::format("{} {}\nfamily {}\n", kMagic, kCaptureFormatVersion, family);
  for (const std::string& n : options.inputNames) out += fmt::format("input {}\n", n);
  // The dims as a set, with the order of their symbols (ids follow first appearance), so that two
  // declarations of the same dims in another order (kiln-warmup's and a service's) share an
  // entry. Unnamed dims get their symbols by position, so then the order itself counts.
  std::vector<DynamicDim> dims = options.dynamicDims;
  const bool named =
      std::all_of(dims.begin(), dims.end(), [](const DynamicDim& d) { return !d.symbol.empty(); });
  if (named) {
    std::vector<std::string> order;
    for (const DynamicDim& d : dims)
      if (std::find(order.begin(), order.end(), d.symbol) == order.end()) order.push_back(d.symbol);
    out += fmt::format("symbol-order {}\n", fmt::join(order, " "));
    std::sort(dims.begin(), dims.end(), [](const DynamicDim& a, const DynamicDim& b) {
      return std::tie(a.input, a.dim, a.symbol) < std::tie(b.input, b.dim, b.symbol);
    });
  }
  for (const DynamicDim& d : dims)
    out += fmt::format("dynamic {} {} {}\n", d.input, d.dim, d.symbol);
  if (options.retypeTo)
    out += fmt::format("retype {}{}\n", ir::toString(*options.retypeTo),
                       options.castAtBoundary ? " cast-at-boundary" : "");
  // Code: every method of every module (forward calls submodules' methods).
  for (const auto& sub : module.named_modules()) {
    out += fmt::format("module {} {}\n", sub.name, sub.value.type()->str());
    for (const auto& method : sub.value.get_methods())
      out += fmt::format("method {}\n{}\n", method.name(), method.graph()->toString(false));
    for (const auto& attr : sub.value.named_attributes(/*recurse=*/false)) {
      const c10::IValue& v = attr.value;
      if (v.isTensor()) {
        out += fmt::format("tensor {} {}\n", attr.name, tensorType(v.toTensor()));
        // Note [Buffers with known contents]: a capture may rely on what these hold.
        if (std::optional<ContentAssumption> c = knownContent(v.toTensor()))
          out += fmt::format("content {} {} {}\n",
                             c->kind == ContentAssumption::Kind::kFill ? "fill" : "arange",
                             c->first, c->numel);
      } else if (v.isObject()) {
        out += fmt::format("object {} {}\n", attr.name, v.type()->str());
      } else if (v.isNone() || v.isInt() || v.isDouble() || v.isBool() || v.isString() ||
                 v.isIntList() || v.isDoubleList() || v.isBoolList()) {
        std::ostringstream s;
        s << v;
        out += fmt::format("attr {} {}\n", attr.name, s.str());
      } else {
        return std::nullopt;  // something kiln cannot fingerprint: never cache this module
      }
    }
  }
  return out;
}

std::optional<std::string> serializeCapture(const CapturedGraph& captured,
                                            const torch::jit::Module& module, std::string* why) {
  auto refuse = [&](std::string reason) -> std::optional<std::string> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  if (!captured.graph) return refuse("no graph");
  const ir::Graph& g = *captured.graph;
  const std::map<std::string, at::Tensor> tensors = moduleTensors(module);
  const std::vector<std::string> params = paramNamesOf(g);
  for (const std::string& p : params)
    if (!tensors.count(p) || hasNewline(p))  // e.g. a traced constant
      return refuse(fmt::format("param '{}' is not one of the module's", p));
  for (const std::string& n : captured.inputNames)
    if (hasNewline(n)) return refuse("an input name has a newline");
  const std::vector<std::string> symbols = symbolNamesOf(g);
  for (const std::string& s : symbols)
    if (hasNewline(s) || s.find(' ') != std::string::npos)
      return refuse(fmt::format("symbol name '{}' has a space", s));
  for (const std::string& op : captured.unsupportedOps)
    if (op.find_first_of(" \n") != std::string::npos) return refuse("an eager op name has a space");
  std::string eagerWhy;
  std::optional<std::string> eager = encodeEagerCalls(captured, &eagerWhy);
  if (!eager) return refuse(eagerWhy);

  std::string text = ir::print(g);
  // Only what parses back to the same graph is stored.
  try {
    std::unique_ptr<ir::Graph> back = ir::parse(text);
    if (ir::print(*back) != text || symbolNamesOf(*back) != symbols ||
        paramNamesOf(*back) != params)
      return refuse("the graph's text does not parse back to the same graph");
  } catch (const std::exception& e) {
    return refuse(fmt::format("the graph's text does not parse back: {}", e.what()));
  }
  std::string out = fmt::format("{} {}\n", kMagic, kCaptureFormatVersion);
  out += fmt::format("inputs {}\n", captured.inputNames.size());
  for (const std::string& n : captured.inputNames) out += n + "\n";
  out += fmt::format("outputs {}\n{}\n", static_cast<int>(captured.outputs.kind),
                     captured.outputs.count);
  out += fmt::format("symbols {}\n", symbols.size());
  for (size_t s = 0; s < symbols.size(); ++s)
    out += fmt::format(
        "{} {}\n", symbols[s],
        s < captured.exampleSymbolValues.size() ? captured.exampleSymbolValues[s] : int64_t{-1});
  out += fmt::format("assumptions {}\n", captured.assumptions.size());
  for (const SizeAssumption& a : captured.assumptions)
    out += fmt::format("{} {} {}\n", a.lhs.toString(), a.rhs.toString(), oneLine(a.what));
  out += fmt::format("contents {}\n", captured.contents.size());
  for (const ContentAssumption& a : captured.contents) {
    if (hasNewline(a.param)) return refuse("a param name has a newline");
    out +=
        fmt::format("{} {} {} {}\n", a.kind == ContentAssumption::Kind::kFill ? "fill" : "arange",
                    a.first, a.numel, a.param);
  }
  out += fmt::format("eager-ops {}\n", captured.unsupportedOps.size());
  for (size_t k = 0; k < captured.unsupportedOps.size(); ++k)
    out +=
        fmt::format("{} {}\n", captured.unsupportedOps[k],
                    k < captured.unsupportedReasons.size() ? oneLine(captured.unsupportedReasons[k])
                                                           : std::string());
  out += fmt::format("eager-calls {}\n", eager->size());
  out += *eager;
  out += "\ngraph\n";
  out += text;
  return out;
}

std::optional<CapturedGraph> deserializeCapture(const std::string& payload,
                                                const torch::jit::Module& module, std::string* why,
                                                std::optional<ir::DType> retypedTo) {
  try {
    Reader r(payload);
    if (r.line() != fmt::format("{} {}", kMagic, kCaptureFormatVersion))
      throw UserError("not a capture entry of this format");
    CapturedGraph c;
    c.retypedTo = retypedTo;
    const int64_t inputs = r.count("inputs");
    for (int64_t i = 0; i < inputs; ++i) c.inputNames.push_back(r.line());
    const int64_t kind = r.count("outputs");
    if (kind < 0 || kind > static_cast<int64_t>(OutputStructure::Kind::kList))
      throw UserError("bad output kind");
    c.outputs.kind = static_cast<OutputStructure::Kind>(kind);
    c.outputs.count = std::stoi(r.line());
    const int64_t numSymbols = r.count("symbols");
    std::vector<std::string> symbols;
    for (int64_t s = 0; s < numSymbols; ++s) {
      std::istringstream ls(r.line());
      std::string name;
      int64_t value = -1;
      ls >> name >> value;
      symbols.push_back(name);
      c.exampleSymbolValues.push_back(value);
    }
    const int64_t numAssumptions = r.count("assumptions");
    std::vector<std::string> assumptionLines;
    for (int64_t a = 0; a < numAssumptions; ++a) assumptionLines.push_back(r.line());
    const int64_t numContents = r.count("contents");
    for (int64_t k = 0; k < numContents; ++k) {
      std::istringstream ls(r.line());
      std::string kind;
      ContentAssumption a;
      ls >> kind >> a.first >> a.numel;
      std::getline(ls >> std::ws, a.param);
      if ((kind != "fill" && kind != "arange") || !ls.eof() || a.numel < 1 ||
          a.numel > kMaxKnownContentNumel || a.param.empty())
        throw UserError("bad 'contents' line");
      a.kind = kind == "fill" ? ContentAssumption::Kind::kFill : ContentAssumption::Kind::kArange;
      c.contents.push_back(std::move(a));
    }
    const int64_t numEagerOps = r.count("eager-ops");
    for (int64_t k = 0; k < numEagerOps; ++k) {
      auto [op, reason] = splitWord(r.line());
      c.unsupportedOps.push_back(op);
      c.unsupportedReasons.push_back(reason);
    }
    const int64_t eagerBytes = r.count("eager-calls", int64_t{1} << 30);
    const std::string eager = r.bytes(eagerBytes);
    if (r.line() != "graph") throw UserError("no graph");
    c.graph = ir::parse(r.rest());
    for (const std::string& line : assumptionLines) {
      std::istringstream ls(line);
      std::string lhs, rhs;
      ls >> lhs >> rhs;
      SizeAssumption a{ir::SymDim::parse(lhs), ir::SymDim::parse(rhs), std::string()};
      std::getline(ls >> std::ws, a.what);
      for (const ir::SymDim* d : {&a.lhs, &a.rhs})
        for (int sym : d->symbols())
          if (sym >= c.graph->numSymbols())
            throw UserError("an assumption names a symbol the graph lacks");
      c.assumptions.push_back(std::move(a));
    }
    decodeEagerCalls(eager, c);
    if (symbolNamesOf(*c.graph) != symbols) throw UserError("symbols do not match");
    if (static_cast<int>(c.graph->outputs().size()) != c.outputs.count ||
        static_cast<int64_t>(c.graph->inputs().size()) != inputs)
      throw UserError("inputs or outputs do not match the graph");
    const std::map<std::string, at::Tensor> tensors = moduleTensors(module);
    for (const ir::Value* v : c.graph->params()) {
      const std::string& name = v->producer()->attrs().getString("name");
      auto it = tensors.find(name);
      if (it == tensors.end())
        throw UserError(fmt::format("param '{}' is not in the module", name));
      const at::Tensor& t = it->second;
      // Note [Tracing in float32]: a retyped param is a float32 tensor of the module.
      const bool retyped = retypedTo && v->dtype() == *retypedTo && t.scalar_type() == at::kFloat;
      if ((toAtenDType(v->dtype()) != t.scalar_type() && !retyped) ||
          static_cast<size_t>(v->rank()) != static_cast<size_t>(t.dim()))
        throw UserError(fmt::format("param '{}' changed type", name));
      c.params.push_back(t);
      c.paramNames.push_back(name);
    }
    // Note [Buffers with known contents]: the key holds these contents; read them again all the
    // same, as the plan will.
    for (const ContentAssumption& a : c.contents) {
      auto it = std::find(c.paramNames.begin(), c.paramNames.end(), a.param);
      if (it == c.paramNames.end())
        throw UserError(
            fmt::format("a content assumption names '{}', which no param of the graph "
                        "is",
                        a.param));
      if (!holdsContent(c.params[static_cast<size_t>(it - c.paramNames.begin())], a))
        throw UserError(fmt::format("the module's tensor no longer matches: {}", describe(a)));
    }
    return c;
  } catch (const std::exception& e) {
    if (why != nullptr) *why = e.what();
    return std::nullopt;
  }
}

CapturedGraph cachedCapture(cache::KernelCache& cache, const torch::jit::Module& module,
                            const std::string& family, const CaptureOptions& options,
                            const std::function<CapturedGraph()>& doCapture, bool* fromCache) {
  *fromCache = false;
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::time_point a, Clock::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
  };
  const auto t0 = Clock::now();
  std::optional<std::string> fingerprint = captureFingerprint(module, family, options);
  if (!fingerprint) return doCapture();
  const cache::CacheKey key = cache::CacheKey::capture(*fingerprint, kCaptureFormatVersion);
  const auto t1 = Clock::now();
  if (std::optional<std::string> payload = cache.get(key)) {
    std::string why;
    const auto t2 = Clock::now();
    if (std::optional<CapturedGraph> c =
            deserializeCapture(*payload, module, &why, options.retypeTo)) {
      *fromCache = true;
      KILN_LOG_DEBUG("kiln: capture {} from the cache: key {:.1f} ms, read {:.1f} ms, load {:.1f} ms",
                     key.digest().hex(), ms(t0, t1), ms(t1, t2), ms(t2, Clock::now()));
      return std::move(*c);
    }
    logOnce(LogLevel::kWarn, "capture-cache." + key.digest().hex(),
            fmt::format("kiln: cached capture {} is unusable ({}); tracing the module again",
                        key.digest().hex(), why));
  }
  CapturedGraph captured = doCapture();
  std::string why;
  if (std::optional<std::string> payload = serializeCapture(captured, module, &why))
    cache.put(key, *payload);
  else
    KILN_LOG_DEBUG("kiln: capture {} is not cached: {}", key.digest().hex(), why);
  return captured;
}

}  // namespace kiln::jit
