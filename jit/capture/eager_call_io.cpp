// Note [Eager calls in the capture cache] (capture.h).
#include <charconv>
#include <cstring>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/jit/runtime/operator.h>
#include <torch/csrc/jit/serialization/pickle.h>

#include "jit/capture/capture.h"
#include "jit/capture/lower.h"
#include "src/support/error.h"

namespace kiln::jit {
namespace {

using Kind = EagerCall::Slot::Kind;
using ScalarType = EagerCall::Scalar::Type;

constexpr std::string_view kMagic = "kiln-eager-calls 1";
constexpr int64_t kMaxCount = int64_t{1} << 20;

std::shared_ptr<torch::jit::Operator> findOp(const std::string& name, const std::string& overload) {
  return torch::jit::findOperatorFor(c10::OperatorName(name, overload));
}

// Whether a cached call can run `op` looked up by name: dispatcher operators, and the TorchScript
// builtins whose operation is a function of the stack alone (no graph node needed to make it):
// torch.tensor(...) (DeBERTa's scale, torch.tensor(size, dtype=float)), whose overloads
// torch/csrc/jit/runtime/register_special_ops.cpp registers as plain stack operations.
bool runsWithoutANode(const torch::jit::Operator& op, const std::string& name) {
  return op.isC10Op() || name == "aten::tensor" || name == "aten::as_tensor";
}

// Reads the encoding: whitespace-separated tokens on lines, and raw byte runs of known length.
class Cursor {
 public:
  explicit Cursor(std::string_view data) : data_(data) {}

  std::string_view token() {
    while (pos_ < data_.size() && (data_[pos_] == ' ' || data_[pos_] == '\n')) ++pos_;
    size_t start = pos_;
    while (pos_ < data_.size() && data_[pos_] != ' ' && data_[pos_] != '\n') ++pos_;
    if (start == pos_) throw UserError("eager calls: truncated");
    return data_.substr(start, pos_ - start);
  }
  void expect(std::string_view word) {
    std::string_view t = token();
    if (t != word) throw UserError(fmt::format("eager calls: expected '{}', got '{}'", word, t));
  }
  int64_t integer(int64_t lo, int64_t hi) {
    std::string_view t = token();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || end != t.data() + t.size() || v < lo || v > hi)
      throw UserError(fmt::format("eager calls: bad number '{}'", t));
    return v;
  }
  std::string_view bytes(size_t n) {
    if (pos_ >= data_.size() || data_[pos_] != '\n' || data_.size() - pos_ - 1 < n)
      throw UserError("eager calls: truncated bytes");
    std::string_view out = data_.substr(pos_ + 1, n);
    pos_ += 1 + n;
    return out;
  }
  bool atEnd() {
    while (pos_ < data_.size() && (data_[pos_] == ' ' || data_[pos_] == '\n')) ++pos_;
    return pos_ == data_.size();
  }

 private:
  std::string_view data_;
  size_t pos_ = 0;
};

// A double as the hex of its bits: exact, and one token.
std::string doubleToken(double v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof bits);
  return fmt::format("{:x}", bits);
}

// One constant argument as a line: a tag and its value. nullopt for a kind kiln does not store.
// Tensors (constants of a dtype the IR lacks) are pickled (torch::pickle_save) as raw bytes.
std::optional<std::string> encodeValue(const c10::IValue& v) {
  if (v.isNone()) return "n";
  if (v.isBool()) return fmt::format("b {}", v.toBool() ? 1 : 0);
  if (v.isInt()) return fmt::format("i {}", v.toInt());
  if (v.isDouble()) return fmt::format("d {}", doubleToken(v.toDouble()));
  if (v.isIntList())
    return fmt::format("I {} {}", v.toIntVector().size(), fmt::join(v.toIntVector(), " "));
  if (v.isBoolList()) {
    std::vector<int> bits;
    for (bool b : v.toBoolList()) bits.push_back(b ? 1 : 0);
    return fmt::format("B {} {}", bits.size(), fmt::join(bits, " "));
  }
  if (v.isDoubleList()) {
    std::vector<std::string> tokens;
    for (double d : v.toDoubleVector()) tokens.push_back(doubleToken(d));
    return fmt::format("D {} {}", tokens.size(), fmt::join(tokens, " "));
  }
  if (v.isDevice()) return fmt::format("v {}", v.toDevice().str());
  if (v.isString()) return fmt::format("s {}\n{}", v.toStringRef().size(), v.toStringRef());
  if (v.isTensor()) {
    const std::vector<char> bytes = torch::jit::pickle_save(v);
    return fmt::format("t {}\n{}", bytes.size(), std::string_view(bytes.data(), bytes.size()));
  }
  return std::nullopt;
}

c10::IValue decodeValue(Cursor& in) {
  const std::string_view tag = in.token();
  auto count = [&] { return static_cast<size_t>(in.integer(0, kMaxCount)); };
  auto dbl = [&] {
    const std::string_view t = in.token();
    uint64_t bits = 0;
    auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), bits, 16);
    if (ec != std::errc() || end != t.data() + t.size())
      throw UserError(fmt::format("eager calls: bad double '{}'", t));
    double v = 0;
    std::memcpy(&v, &bits, sizeof v);
    return v;
  };
  if (tag == "n") return c10::IValue();
  if (tag == "b") return c10::IValue(in.integer(0, 1) != 0);
  if (tag == "i")
    return c10::IValue(
        in.integer(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
  if (tag == "d") return c10::IValue(dbl());
  if (tag == "I") {
    std::vector<int64_t> list(count());
    for (int64_t& x : list)
      x = in.integer(std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
    return c10::IValue(list);
  }
  if (tag == "B") {
    c10::List<bool> list;
    for (size_t k = count(); k > 0; --k) list.push_back(in.integer(0, 1) != 0);
    return c10::IValue(list);
  }
  if (tag == "D") {
    std::vector<double> list(count());
    for (double& x : list) x = dbl();
    return c10::IValue(list);
  }
  if (tag == "v") return c10::IValue(c10::Device(std::string(in.token())));
  if (tag == "s") return c10::IValue(std::string(in.bytes(count())));
  if (tag == "t") {
    const std::string_view bytes = in.bytes(static_cast<size_t>(in.integer(0, int64_t{1} << 30)));
    c10::IValue t = torch::jit::pickle_load(std::vector<char>(bytes.begin(), bytes.end()));
    if (!t.isTensor()) throw UserError("eager calls: a pickled constant is not a tensor");
    return t;
  }
  throw UserError(fmt::format("eager calls: unknown value tag '{}'", tag));
}

// The kEager nodes of the graph, by eager_id; null where no node has the id.
std::vector<const ir::Node*> eagerNodesById(const ir::Graph& g, size_t count) {
  std::vector<const ir::Node*> out(count, nullptr);
  for (const auto& n : g.nodes()) {
    if (n->kind() != ir::OpKind::kEager) continue;
    const int64_t id = n->attrs().getInt("eager_id");
    if (id < 0 || static_cast<size_t>(id) >= count || out[static_cast<size_t>(id)] != nullptr)
      throw UserError(fmt::format("eager calls: eager_id {} out of range or repeated", id));
    out[static_cast<size_t>(id)] = n.get();
  }
  return out;
}

}  // namespace

bool eagerCallMutates(const CapturedGraph& captured, int64_t eagerId) {
  if (eagerId < 0 || static_cast<size_t>(eagerId) >= captured.eagerCalls.size()) return false;
  const EagerCall& call = *captured.eagerCalls[static_cast<size_t>(eagerId)];
  if (!call.op) return false;
  std::shared_ptr<torch::jit::Operator> op = findOp(call.name, call.overload);
  // An operator kiln cannot look up is assumed to write: the answer gates a cache.
  return op == nullptr || op->schema().is_mutable();
}

std::optional<std::string> encodeEagerCalls(const CapturedGraph& captured, std::string* why) {
  auto refuse = [&](std::string reason) -> std::optional<std::string> {
    if (why != nullptr) *why = std::move(reason);
    return std::nullopt;
  };
  std::string out = fmt::format("{}\ncalls {}\n", kMagic, captured.eagerCalls.size());
  for (const std::unique_ptr<EagerCall>& callPtr : captured.eagerCalls) {
    const EagerCall& call = *callPtr;
    if (call.name.find_first_of(" \n") != std::string::npos ||
        call.overload.find_first_of(" \n") != std::string::npos)
      return refuse(fmt::format("operator name '{}' has a space", call.name));
    if (call.op) {
      std::shared_ptr<torch::jit::Operator> op = findOp(call.name, call.overload);
      if (op == nullptr || !runsWithoutANode(*op, call.name))
        return refuse(fmt::format("{} is not a dispatcher operator", call.name));
    }
    std::string stack;
    for (size_t i = 0; i < call.stackTemplate.size(); ++i) {
      std::optional<std::string> value;
      try {
        value = encodeValue(call.stackTemplate[i]);
      } catch (const std::exception&) {
        value.reset();
      }
      if (!value)
        return refuse(fmt::format("{}: argument {} is a {}, which kiln does not store", call.name,
                                  i, call.stackTemplate[i].tagKind()));
      stack += *value + "\n";
    }
    // The overload is written with a trailing '.' so that the default overload ("") is a token;
    // "-" is kiln's own kiln::sym_scalar, which has no operator.
    out += fmt::format("call {} {} {} {} {}\n", call.name, call.op ? call.overload + "." : "-",
                       call.slots.size(), call.results.size(), call.stackTemplate.size());
    out += "results";
    for (size_t r : call.results) out += fmt::format(" {}", r);
    out += "\n";
    for (const EagerCall::Slot& slot : call.slots) {
      out += fmt::format("slot {} {} {}", slot.stackIndex, static_cast<int>(slot.kind),
                         slot.operands.size());
      for (int o : slot.operands) out += fmt::format(" {}", o);
      out += fmt::format(" {}\n", slot.scalars.size());
      for (const EagerCall::Scalar& sc : slot.scalars)
        out += fmt::format("scalar {} {} {}\n", static_cast<int>(sc.type), sc.operand,
                           sc.sym.toString());
    }
    out += "stack\n";
    out += stack;
  }
  return out;
}

void decodeEagerCalls(std::string_view bytes, CapturedGraph& captured) {
  KILN_CHECK(captured.graph != nullptr, "decodeEagerCalls needs the graph");
  Cursor in(bytes);
  {
    std::string_view magic = in.token();
    std::string_view version = in.token();
    if (fmt::format("{} {}", magic, version) != kMagic)
      throw UserError("eager calls: not of this format");
  }
  in.expect("calls");
  const size_t count = static_cast<size_t>(in.integer(0, kMaxCount));
  const std::vector<const ir::Node*> nodes = eagerNodesById(*captured.graph, count);
  std::vector<std::unique_ptr<EagerCall>> calls;
  for (size_t id = 0; id < count; ++id) {
    const ir::Node* node = nodes[id];
    if (node == nullptr) throw UserError(fmt::format("eager calls: no node has eager_id {}", id));
    auto call = std::make_unique<EagerCall>();
    in.expect("call");
    call->name = std::string(in.token());
    const std::string overload(in.token());
    const size_t numSlots = static_cast<size_t>(in.integer(0, kMaxCount));
    const size_t numResults = static_cast<size_t>(in.integer(0, kMaxCount));
    const size_t stackSize = static_cast<size_t>(in.integer(0, kMaxCount));
    if (node->attrs().getString("schema") != call->name)
      throw UserError(fmt::format("eager calls: call {} is {}, its node runs {}", id, call->name,
                                  node->attrs().getString("schema")));
    if (overload != "-") {
      if (overload.back() != '.') throw UserError("eager calls: malformed overload");
      call->overload = overload.substr(0, overload.size() - 1);  // written with a trailing '.'
      std::shared_ptr<torch::jit::Operator> op = findOp(call->name, call->overload);
      if (op == nullptr || !runsWithoutANode(*op, call->name))
        throw UserError(fmt::format("eager calls: operator {}.{} is not registered", call->name,
                                    call->overload));
      call->op = op->getOperation();
    }
    in.expect("results");
    for (size_t r = 0; r < numResults; ++r)
      call->results.push_back(static_cast<size_t>(in.integer(0, kMaxCount)));
    const int64_t numOperands = static_cast<int64_t>(node->inputs().size());
    for (size_t s = 0; s < numSlots; ++s) {
      EagerCall::Slot slot;
      in.expect("slot");
      slot.stackIndex = static_cast<size_t>(in.integer(0, kMaxCount));
      slot.kind = static_cast<Kind>(in.integer(0, static_cast<int64_t>(Kind::kIntList)));
      const int64_t ops = in.integer(0, kMaxCount);
      for (int64_t o = 0; o < ops; ++o)
        slot.operands.push_back(static_cast<int>(in.integer(-1, numOperands - 1)));
      const int64_t scalars = in.integer(0, kMaxCount);
      for (int64_t k = 0; k < scalars; ++k) {
        EagerCall::Scalar sc;
        in.expect("scalar");
        sc.type = static_cast<ScalarType>(in.integer(0, static_cast<int64_t>(ScalarType::kBool)));
        sc.operand = static_cast<int>(in.integer(-1, numOperands - 1));
        sc.sym = ir::SymDim::parse(in.token());
        for (int sym : sc.sym.symbols())
          if (sym >= captured.graph->numSymbols())
            throw UserError(fmt::format("eager calls: symbol s{} is not in the graph", sym));
        slot.scalars.push_back(std::move(sc));
      }
      const bool needsOperand = slot.kind == Kind::kTensor;
      const bool needsScalar = slot.kind == Kind::kScalar;
      if ((needsOperand && (slot.operands.size() != 1 || slot.operands[0] < 0)) ||
          (needsScalar && slot.scalars.size() != 1))
        throw UserError(fmt::format("eager calls: call {} has a malformed slot", id));
      call->slots.push_back(std::move(slot));
    }
    in.expect("stack");
    for (size_t k = 0; k < stackSize; ++k) call->stackTemplate.push_back(decodeValue(in));
    for (const EagerCall::Slot& slot : call->slots)
      if (slot.stackIndex >= call->stackTemplate.size())
        throw UserError(fmt::format("eager calls: call {} fills argument {} of {}", id,
                                    slot.stackIndex, call->stackTemplate.size()));
    calls.push_back(std::move(call));
  }
  if (!in.atEnd()) throw UserError("eager calls: trailing bytes");
  captured.eagerCalls = std::move(calls);
  captured.eagerNodes.assign(count, nullptr);
}

}  // namespace kiln::jit
