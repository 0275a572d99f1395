#include "src/ir/parser.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "src/ir/printer.h"
#include "src/ir/shape_inference.h"
#include "src/ir/verifier.h"
#include "src/support/error.h"

namespace kiln::ir {

namespace {

bool isNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text), graph_(std::make_unique<Graph>()) {}

  std::unique_ptr<Graph> run() {
    expectWord("graph");
    expect('(');
    if (!accept(')')) {
      do {
        parseArg();
      } while (accept(','));
      expect(')');
    }
    expect('{');
    while (true) {
      skipSpace();
      if (peekWord() == "return") break;
      parseStmt();
    }
    expectWord("return");
    expect('(');
    std::vector<Value*> outs;
    if (!accept(')')) {
      do {
        outs.push_back(parseUse());
      } while (accept(','));
      expect(')');
    }
    graph_->setOutputs(std::move(outs));
    expect('}');
    skipSpace();
    if (pos_ != text_.size()) fail("end of text", describeHere());
    try {
      verify(*graph_);
    } catch (const Error& e) {
      throw UserError(fmt::format("parsed graph is invalid: {}", e.what()));
    }
    return std::move(graph_);
  }

 private:
  // --- positions and errors ---
  std::string location(size_t pos) const {
    size_t line = 1, col = 1;
    for (size_t i = 0; i < pos && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    return fmt::format("line {}:{}", line, col);
  }
  [[noreturn]] void failAt(size_t pos, const std::string& msg) const {
    throw UserError(fmt::format("{}: {}", location(pos), msg));
  }
  [[noreturn]] void fail(std::string_view expected, const std::string& got) const {
    failAt(pos_, fmt::format("expected {}, got {}", expected, got));
  }
  std::string describeHere() const {
    if (pos_ >= text_.size()) return "end of text";
    size_t end = pos_;
    if (isNameChar(text_[end])) {
      while (end < text_.size() && isNameChar(text_[end])) ++end;
    } else {
      ++end;
    }
    return fmt::format("'{}'", text_.substr(pos_, end - pos_));
  }

  // --- characters ---
  void skipSpace() {
    while (pos_ < text_.size()) {
      if (std::isspace(static_cast<unsigned char>(text_[pos_]))) {
        ++pos_;
      } else if (text_.substr(pos_, 2) == "//") {
        while (pos_ < text_.size() && text_[pos_] != '\n') ++pos_;
      } else {
        break;
      }
    }
  }
  bool accept(char c) {
    skipSpace();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!accept(c)) fail(fmt::format("'{}'", c), describeHere());
  }
  std::string_view peekWord() {
    skipSpace();
    size_t end = pos_;
    while (end < text_.size() && isNameChar(text_[end])) ++end;
    return text_.substr(pos_, end - pos_);
  }
  std::string_view word(std::string_view what) {
    std::string_view w = peekWord();
    if (w.empty()) fail(what, describeHere());
    pos_ += w.size();
    return w;
  }
  void expectWord(std::string_view w) {
    if (peekWord() != w) fail(fmt::format("'{}'", w), describeHere());
    pos_ += w.size();
  }

  // --- pieces ---
  std::string parseRefName() {
    skipSpace();
    if (pos_ >= text_.size() || text_[pos_] != '%') fail("a value like %x", describeHere());
    ++pos_;
    size_t start = pos_;
    while (pos_ < text_.size() && isNameChar(text_[pos_])) ++pos_;
    if (pos_ == start) fail("a value name after '%'", describeHere());
    return std::string(text_.substr(start, pos_ - start));
  }

  Value* parseUse() {
    skipSpace();
    size_t at = pos_;
    std::string name = parseRefName();
    auto it = values_.find(name);
    if (it == values_.end()) failAt(at, fmt::format("use of undefined value %{}", name));
    return it->second;
  }

  void define(size_t at, const std::string& name, Value* v) {
    if (!values_.emplace(name, v).second)
      failAt(at, fmt::format("value %{} is defined twice", name));
    bool numeric = std::all_of(name.begin(), name.end(),
                               [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
    v->setName(numeric ? std::string() : name);
  }

  int symbolOf(std::string_view name) {
    std::string key(name);
    if (auto it = symbols_.find(key); it != symbols_.end()) return it->second;
    // "s<k>" keeps id k when possible so text written with default names maps back to the ids a
    // capture would have used.
    bool isDefault = name.size() >= 2 && name.size() <= 6 && name[0] == 's' &&
                     std::all_of(name.begin() + 1, name.end(), [](char c) {
                       return std::isdigit(static_cast<unsigned char>(c));
                     });
    if (isDefault) {
      int k = std::stoi(std::string(name.substr(1)));
      if (k >= graph_->numSymbols()) {
        while (graph_->numSymbols() <= k) {
          int id = graph_->numSymbols();
          std::string dflt = fmt::format("s{}", id);
          graph_->newSymbol(dflt);
          symbols_.emplace(dflt, id);
        }
        return k;
      }
    }
    int id = graph_->numSymbols();
    graph_->newSymbol(key);
    symbols_.emplace(key, id);
    return id;
  }

  TensorType parseType() {
    skipSpace();
    size_t at = pos_;
    std::string_view dt = word("a dtype (bool, i32, i64, f16, bf16, f32)");
    TensorType t;
    try {
      t.dtype = parseDType(dt);
    } catch (const UserError& e) {
      failAt(at, e.what());
    }
    expect('[');
    if (accept(']')) return t;
    while (true) {
      skipSpace();
      size_t start = pos_;
      int depth = 0;
      while (pos_ < text_.size()) {
        char c = text_[pos_];
        if (c == '(') ++depth;
        if (c == ')') --depth;
        if (depth == 0 && (c == ',' || c == ']')) break;
        if (c == '\n') break;
        ++pos_;
      }
      std::string_view dimText = text_.substr(start, pos_ - start);
      while (!dimText.empty() && std::isspace(static_cast<unsigned char>(dimText.back())))
        dimText.remove_suffix(1);
      if (dimText.empty()) fail("a dim", describeHere());
      try {
        t.shape.push_back(
            SymDim::parse(dimText, [this](std::string_view n) { return symbolOf(n); }));
      } catch (const UserError& e) {
        failAt(start, e.what());
      }
      if (accept(']')) return t;
      expect(',');
    }
  }

  void parseArg() {
    skipSpace();
    size_t at = pos_;
    std::string name = parseRefName();
    expect(':');
    TensorType type = parseType();
    bool isParam = false;
    if (peekWord() == "param") {
      pos_ += 5;
      isParam = true;
    }
    Value* v =
        isParam ? graph_->addParam(name, std::move(type)) : graph_->addInput(name, std::move(type));
    define(at, name, v);
  }

  AttrValue parseAttrValue() {
    skipSpace();
    if (pos_ >= text_.size()) fail("an attribute value", "end of text");
    char c = text_[pos_];
    if (c == '"') {
      ++pos_;
      std::string s;
      while (true) {
        if (pos_ >= text_.size() || text_[pos_] == '\n') fail("closing '\"'", describeHere());
        char d = text_[pos_++];
        if (d == '"') break;
        if (d == '\\' && pos_ < text_.size()) {
          char e = text_[pos_++];
          s += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
          s += d;
        }
      }
      return s;
    }
    if (c == '[') {
      ++pos_;
      std::vector<int64_t> ints;
      if (accept(']')) return ints;
      do {
        skipSpace();
        size_t at = pos_;
        AttrValue v = parseNumber();
        if (!std::holds_alternative<int64_t>(v)) failAt(at, "expected an integer in an int list");
        ints.push_back(std::get<int64_t>(v));
      } while (accept(','));
      expect(']');
      return ints;
    }
    std::string_view w = peekWord();
    if (w == "true" || w == "false") {
      pos_ += w.size();
      return w == "true";
    }
    return parseNumber();
  }

  AttrValue parseNumber() {
    skipSpace();
    size_t start = pos_;
    bool neg = false;
    if (pos_ < text_.size() && (text_[pos_] == '-' || text_[pos_] == '+')) {
      neg = text_[pos_] == '-';
      ++pos_;
    }
    if (text_.substr(pos_, 3) == "inf") {
      pos_ += 3;
      return neg ? -std::numeric_limits<double>::infinity()
                 : std::numeric_limits<double>::infinity();
    }
    if (text_.substr(pos_, 3) == "nan") {
      pos_ += 3;
      return std::numeric_limits<double>::quiet_NaN();
    }
    bool isDouble = false;
    size_t digits = pos_;
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (std::isdigit(static_cast<unsigned char>(c))) {
        ++pos_;
      } else if (c == '.' || c == 'e' || c == 'E') {
        isDouble = true;
        ++pos_;
        if ((c == 'e' || c == 'E') && pos_ < text_.size() &&
            (text_[pos_] == '-' || text_[pos_] == '+'))
          ++pos_;
      } else {
        break;
      }
    }
    if (pos_ == digits) {
      pos_ = start;
      fail("a value (number, true/false, \"string\" or [ints])", describeHere());
    }
    std::string num(text_.substr(start, pos_ - start));
    if (!num.empty() && num[0] == '+') num.erase(0, 1);
    if (isDouble) {
      try {
        size_t used = 0;
        double d = std::stod(num, &used);
        if (used != num.size()) failAt(start, fmt::format("malformed number '{}'", num));
        return d;
      } catch (const std::logic_error&) {
        failAt(start, fmt::format("malformed number '{}'", num));
      }
    }
    int64_t v = 0;
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), v);
    if (ec != std::errc() || p != num.data() + num.size())
      failAt(start, fmt::format("malformed integer '{}'", num));
    return v;
  }

  Attrs parseAttrs() {
    Attrs attrs;
    if (!accept('{')) return attrs;
    if (accept('}')) return attrs;
    do {
      skipSpace();
      size_t at = pos_;
      std::string name(word("an attribute name"));
      if (attrs.has(name)) failAt(at, fmt::format("attribute '{}' given twice", name));
      expect('=');
      attrs.set(name, parseAttrValue());
    } while (accept(','));
    expect('}');
    return attrs;
  }

  void parseStmt() {
    skipSpace();
    size_t stmtAt = pos_;
    struct Result {
      size_t at;
      std::string name;
      std::optional<TensorType> type;
    };
    std::vector<Result> results;
    if (pos_ < text_.size() && text_[pos_] == '%') {
      do {
        skipSpace();
        Result r{pos_, parseRefName(), std::nullopt};
        if (accept(':')) r.type = parseType();
        results.push_back(std::move(r));
      } while (accept(','));
      expect('=');
    }
    skipSpace();
    size_t opAt = pos_;
    std::string_view opName = word("an op name");
    std::optional<OpKind> kind = parseOpKind(opName);
    if (!kind) failAt(opAt, fmt::format("unknown op '{}'", opName));
    if (*kind == OpKind::kInput || *kind == OpKind::kParam)
      failAt(opAt, fmt::format("'{}' values are declared in the graph header", opName));
    expect('(');
    std::vector<Value*> operands;
    if (!accept(')')) {
      do {
        operands.push_back(parseUse());
      } while (accept(','));
      expect(')');
    }
    Attrs attrs = parseAttrs();

    Node* node = nullptr;
    if (results.size() == 1) {
      std::optional<TensorType> type = results[0].type;
      if (!needsExplicitType(*kind)) {
        TensorType inferred;
        try {
          inferred = inferType(*kind, operands, attrs);
        } catch (const Error& e) {
          failAt(opAt, e.what());
        }
        if (type && !(*type == inferred))
          failAt(results[0].at,
                 fmt::format("{} result declared {}, but its operands give {}", opName,
                             printType(*graph_, *type), printType(*graph_, inferred)));
        type = inferred;
      } else if (!type) {
        failAt(results[0].at, fmt::format("{} needs an explicit result type", opName));
      }
      node = graph_->append(*kind, std::move(operands), std::move(attrs), std::move(type));
    } else {
      if (*kind != OpKind::kEager)
        failAt(stmtAt, fmt::format("{} has exactly one result, got {}", opName, results.size()));
      std::vector<TensorType> types;
      for (const Result& r : results) {
        if (!r.type) failAt(r.at, "eager results need explicit types");
        types.push_back(*r.type);
      }
      node = graph_->appendMulti(*kind, std::move(operands), std::move(attrs), std::move(types));
    }
    for (size_t i = 0; i < results.size(); ++i)
      define(results[i].at, results[i].name, node->outputs()[i]);
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::unique_ptr<Graph> graph_;
  std::unordered_map<std::string, Value*> values_;
  std::unordered_map<std::string, int> symbols_;
};

}  // namespace

std::unique_ptr<Graph> parse(std::string_view text) {
  return Parser(text).run();
}

}  // namespace kiln::ir
