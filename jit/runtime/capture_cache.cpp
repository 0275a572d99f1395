#include "jit/runtime/capture_cache.h"

#include <map>
#include <sstream>

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
  int64_t count(std::string_view word) {
    std::string l = line();
    std::string w;
    int64_t n = -1;
    std::istringstream ls(l);
    ls >> w >> n;
    if (w != word || n < 0 || n > (1 << 20)) throw UserError(fmt::format("bad '{}' line", word));
    return n;
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
  for (const DynamicDim& d : options.dynamicDims)
    out += fmt::format("dynamic {} {} {}\n", d.input, d.dim, d.symbol);
  if (options.retypeTo) out += fmt::format("retype {}\n", ir::toString(*options.retypeTo));
  // Code: every method of every module (forward calls submodules' methods).
  for (const auto& sub : module.named_modules()) {
    out += fmt::format("module {} {}\n", sub.name, sub.value.type()->str());
    for (const auto& method : sub.value.get_methods())
      out += fmt::format("method {}\n{}\n", method.name(), method.graph()->toString(false));
    for (const auto& attr : sub.value.named_attributes(/*recurse=*/false)) {
      const c10::IValue& v = attr.value;
      if (v.isTensor()) {
        out += fmt::format("tensor {} {}\n", attr.name, tensorType(v.toTensor()));
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
                                            const torch::jit::Module& module) {
  if (!captured.graph || !captured.eagerNodes.empty() || !captured.unsupportedOps.empty())
    return std::nullopt;
  const ir::Graph& g = *captured.graph;
  const std::map<std::string, at::Tensor> tensors = moduleTensors(module);
  const std::vector<std::string> params = paramNamesOf(g);
  for (const std::string& p : params)
    if (!tensors.count(p) || hasNewline(p)) return std::nullopt;  // e.g. a traced constant
  for (const std::string& n : captured.inputNames)
    if (hasNewline(n)) return std::nullopt;
  const std::vector<std::string> symbols = symbolNamesOf(g);
  for (const std::string& s : symbols)
    if (hasNewline(s) || s.find(' ') != std::string::npos) return std::nullopt;

  std::string text = ir::print(g);
  // Only what parses back to the same graph is stored.
  try {
    std::unique_ptr<ir::Graph> back = ir::parse(text);
    if (ir::print(*back) != text || symbolNamesOf(*back) != symbols ||
        paramNamesOf(*back) != params)
      return std::nullopt;
  } catch (const std::exception&) {
    return std::nullopt;
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
  out += "graph\n";
  out += text;
  return out;
}

std::optional<CapturedGraph> deserializeCapture(const std::string& payload,
                                                const torch::jit::Module& module,
                                                std::string* why) {
  try {
    Reader r(payload);
    if (r.line() != fmt::format("{} {}", kMagic, kCaptureFormatVersion))
      throw UserError("not a capture entry of this format");
    CapturedGraph c;
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
    if (r.line() != "graph") throw UserError("no graph");
    c.graph = ir::parse(r.rest());
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
      if (toAtenDType(v->dtype()) != t.scalar_type() ||
          static_cast<size_t>(v->rank()) != static_cast<size_t>(t.dim()))
        throw UserError(fmt::format("param '{}' changed type", name));
      c.params.push_back(t);
      c.paramNames.push_back(name);
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
  std::optional<std::string> fingerprint = captureFingerprint(module, family, options);
  if (!fingerprint) return doCapture();
  const cache::CacheKey key = cache::CacheKey::capture(*fingerprint, kCaptureFormatVersion);
  if (std::optional<std::string> payload = cache.get(key)) {
    std::string why;
    if (std::optional<CapturedGraph> c = deserializeCapture(*payload, module, &why)) {
      *fromCache = true;
      return std::move(*c);
    }
    logOnce(LogLevel::kWarn, "capture-cache." + key.digest().hex(),
            fmt::format("kiln: cached capture {} is unusable ({}); tracing the module again",
                        key.digest().hex(), why));
  }
  CapturedGraph captured = doCapture();
  if (std::optional<std::string> payload = serializeCapture(captured, module))
    cache.put(key, *payload);
  return captured;
}

}  // namespace kiln::jit
