#include "codegen/emit_cuda.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "codegen/kernel_text.h"
#include "src/support/error.h"

namespace kiln::codegen {

namespace {

using ir::DType;
using ir::Node;
using ir::OpKind;
using ir::Value;

// 32-bit kernels need numel <= 2^30 (Note [Index width] in kernel_abi.h).
constexpr int64_t kMaxNumel32 = (int64_t{1} << 30) - (int64_t{1} << 20);
constexpr int kMaxCachedChunks = 16;

// Compute types: float for every floating dtype, the dtype's own type otherwise.
enum class CType : uint8_t { kFloat, kBool, kInt, kLong };

CType ctypeOf(DType d) {
  switch (d) {
    case DType::kBool:
      return CType::kBool;
    case DType::kInt32:
      return CType::kInt;
    case DType::kInt64:
      return CType::kLong;
    default:
      return CType::kFloat;
  }
}

std::string_view ctypeName(CType t) {
  switch (t) {
    case CType::kFloat:
      return "float";
    case CType::kBool:
      return "bool";
    case CType::kInt:
      return "int";
    case CType::kLong:
      return "long long";
  }
  return "?";
}

std::string_view storageType(DType d) {
  switch (d) {
    case DType::kBool:
      return "unsigned char";
    case DType::kInt32:
      return "int";
    case DType::kInt64:
      return "long long";
    case DType::kFloat16:
      return "__half";
    case DType::kBFloat16:
      return "__nv_bfloat16";
    case DType::kFloat32:
      return "float";
  }
  return "?";
}

std::string floatLiteral(double value) {
  const float f = static_cast<float>(value);
  if (std::isnan(f)) return "kiln_nan()";
  if (std::isinf(f)) return f > 0 ? "kiln_inf()" : "(-kiln_inf())";
  std::string s = fmt::format("{}", f);
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  s += "f";
  return f < 0 || (f == 0 && std::signbit(f)) ? "(" + s + ")" : s;
}

std::string literal(double value, CType t) {
  switch (t) {
    case CType::kFloat:
      return floatLiteral(value);
    case CType::kBool:
      return value != 0 ? "true" : "false";
    case CType::kInt:
      return fmt::format("((int){}LL)", static_cast<int64_t>(value));
    case CType::kLong:
      return fmt::format("({}LL)", static_cast<int64_t>(value));
  }
  return "?";
}

std::string convert(const std::string& expr, CType from, CType to) {
  if (from == to) return expr;
  if (to == CType::kBool) return fmt::format("(({}) != 0)", expr);
  return fmt::format("(({})({}))", ctypeName(to), expr);
}

bool isRowOp(const Node* n) {
  const auto c = n->category();
  return c == ir::OpCategory::kReduction || c == ir::OpCategory::kNormalization;
}

// How a value is referred to inside the kernel.
struct ValueInfo {
  std::string name;  // "in0", "v3"
  CType ctype = CType::kFloat;
  bool rowConst = false;  // one value per row (row kernels)
  int tensor = -1;        // group input index, or -1
  int node = -1;          // index into nodes_, or -1
};

// Note [Embeddings in kernels]
// embedding(table [V, H], ids [..., 1]) is an IR op (kEmbedding) that fuses like a pointwise op:
// out[..., h] = table[ids[..., 0], h]. Every text model starts with one (token ids into the word
// embedding), and until it was an op it was the one step of BERT, ALBERT, DistilBERT and ELECTRA
// that ran eagerly: an ATen kernel of its own, and one more kernel load on a process's first
// call. Now the gather is the first load of the kernel that adds the position and type rows and
// normalizes (a row kernel), or of a pointwise kernel.
//   - The ids end in a dim of size 1, so they broadcast along H like any operand; the capture
//     reshapes them to that (a view). The table is a group input of its own (the partitioner
//     keeps the table and the ids outside the group, and no other member reads the table), with
//     TensorArg::dimMap {kGatherDim, innermost domain dim} and its row stride in strides[t][0].
//   - Pointwise kernels load the ids of each element or vector (one id a vector: they do not
//     extend along H), then the table at row id. Row kernels need ids that are row constants
//     (one id a row, loaded once), and fold the row into the table's row base.
//   - V must be static (a param's shape); it is a literal, and kiln_gather_row checks each id
//     against it as ATen does on the GPU: a device-side assertion for an id out of range. On the
//     CPU the op runs as at::embedding, which raises IndexError, as the module does.
//   - Vector loads of table rows are aligned when the row stride is a multiple of the vector
//     (packArgs checks it with the other strides).
struct Gather {
  int ids = -1;      // group input holding the ids
  int64_t rows = 0;  // V
};

class Emitter {
 public:
  Emitter(const ir::Graph& graph, const partition::FusionGroup& group, const ScheduleParams& params,
          const BucketInfo& bucket)
      : graph_(graph), group_(group), params_(params), bucket_(bucket) {}

  KernelSource run();

 private:
  // --- analysis ---
  void collect();
  void analyzeRows();
  void buildAbi();
  std::vector<int> spannedDims(const TensorArg& t) const;
  bool spans(int tensor, int dim) const;

  // --- expressions ---
  // The expression for `v` converted to `want`; `elem` is the current element's reference
  // suffix for loaded inputs ("[j]", "[k][j]").
  std::string ref(const Value* v, CType want) const;
  std::string nodeExpr(int k) const;
  const ValueInfo& info(const Value* v) const;

  // --- text ---
  void emitPointwise(std::string& out) const;
  void emitRow(std::string& out) const;
  void emitPointwisePath(std::string& out, int vec, int perThread, const std::string& ind) const;
  void emitRowPath(std::string& out, int vec, int chunks, bool cache, const std::string& ind) const;
  void emitCoords(std::string& out, const std::string& ind, const std::string& var, int from,
                  int to, const std::string& prefix) const;
  std::string offsetExpr(int tensor, int from, int to, const std::string& prefix) const;
  std::string splatExpr(int tensor, int vec) const;
  // Elementwise node values needed for `roots` (transitive, stopping at row constants), in
  // graph order, and the elementwise inputs they read.
  // Values in `stop` are leaves: not expanded, collected into *leaves when given.
  void closure(const std::vector<const Value*>& roots, std::vector<int>& nodes,
               std::vector<int>& inputs, const std::vector<const Value*>& stop = {},
               std::vector<const Value*>* leaves = nullptr) const;
  // Input t of a row kernel varies along the row but not across rows (a weight or bias): it is
  // never cached per row (Note [Row caching]).
  bool rowInvariant(int t) const;
  std::string reduceCall(std::string_view op, const std::string& acc) const;
  // "256" or "256, 4": Note [Register budget].
  std::string launchBounds() const;

  const ir::Graph& graph_;
  const partition::FusionGroup& group_;
  const ScheduleParams& params_;
  const BucketInfo& bucket_;

  int rank_ = 0;
  bool rowKernel_ = false;
  int outer_ = 0;                   // rank_ - rowDims
  std::vector<const Node*> nodes_;  // group nodes without constants
  std::map<const Value*, ValueInfo> values_;
  std::vector<int> rowOps_;  // indices into nodes_
  std::map<int, Gather> gathers_;  // Note [Embeddings in kernels]: table input -> its ids
  KernelAbi abi_;
  LaunchSpec launch_;
  int vec_ = 1;
  bool cacheRow_ = false;
  int chunks_ = 1;
  int threadsPerRow_ = 32;
  int rowsPerBlock_ = 1;
  VarianceAlgo variance_ = VarianceAlgo::kWelford;
  PointwiseParams pointwise_;
  std::string idx_ = "int";
  bool usesF16_ = false;
  bool usesBf16_ = false;
  bool fastMath_ = false;  // Note [Fast math for 16-bit outputs] (kiln_math.cuh)
  // Inside the element loop, loaded inputs are "<prefix><t><suffix>".
  mutable std::string inPrefix_ = "in";
  mutable std::string inSuffix_ = "[j]";
  // Per input tensor: the expression that reads its current element, overriding prefix/suffix.
  mutable std::map<int, std::string> inputExpr_;
  // Per value: the expression that holds its current element (row caching), overriding all else.
  mutable std::map<const Value*, std::string> valueExpr_;
  // Floats a thread holds across the passes of a cached row (Note [Row caching]).
  mutable int cachedFloats_ = 0;
};

const ValueInfo& Emitter::info(const Value* v) const {
  auto it = values_.find(v);
  KILN_CHECK(it != values_.end(),
             "group {}: value %{} used but neither a group input nor defined "
             "in the group",
             group_.id, v->id());
  return it->second;
}

void Emitter::collect() {
  rank_ = static_cast<int>(group_.domain.size());
  rowKernel_ = group_.kind == partition::GroupKind::kRow;
  if (rank_ > kMaxRank)
    throw Unsupported(
        fmt::format("group {}: domain rank {} exceeds {}", group_.id, rank_, kMaxRank));
  const size_t numTensors = group_.inputs.size() + group_.outputs.size();
  if (numTensors > static_cast<size_t>(kMaxTensors))
    throw Unsupported(fmt::format("group {}: {} tensors exceed the kernel argument budget of {}",
                                  group_.id, numTensors, kMaxTensors));
  KILN_CHECK(!group_.outputs.empty(), "group {} has no outputs", group_.id);
  if (rowKernel_) {
    KILN_CHECK(group_.rowDims >= 1 && group_.rowDims <= rank_, "group {}: rowDims {} over rank {}",
               group_.id, group_.rowDims, rank_);
    outer_ = rank_ - group_.rowDims;
  } else {
    outer_ = rank_;
  }
  for (size_t t = 0; t < group_.inputs.size(); ++t) {
    const Value* v = group_.inputs[t];
    if (v->rank() > rank_)
      throw Unsupported(fmt::format("group {}: input %{} of rank {} over a rank-{} domain",
                                    group_.id, v->id(), v->rank(), rank_));
    ValueInfo vi;
    vi.name = fmt::format("in{}", t);
    vi.ctype = ctypeOf(v->dtype());
    vi.tensor = static_cast<int>(t);
    values_.emplace(v, vi);
  }
  for (const Node* n : group_.nodes) {
    if (n->kind() == OpKind::kConstant) continue;
    const auto c = n->category();
    if (c != ir::OpCategory::kPointwise && c != ir::OpCategory::kGather && !isRowOp(n))
      throw Unsupported(fmt::format("group {}: op {} cannot be generated in a fused kernel",
                                    group_.id, ir::toString(n->kind())));
    if (isRowOp(n) && !rowKernel_)
      KILN_CHECK(false, "group {}: {} in a pointwise group", group_.id, ir::toString(n->kind()));
    KILN_CHECK(n->outputs().size() == 1, "group {}: {} with {} outputs", group_.id,
               ir::toString(n->kind()), n->outputs().size());
    for (const Value* in : n->inputs()) {
      if (in->producer() != nullptr && in->producer()->kind() == OpKind::kConstant) continue;
      (void)info(in);  // must be a group input or defined earlier in the group
    }
    const int k = static_cast<int>(nodes_.size());
    nodes_.push_back(n);
    ValueInfo vi;
    vi.name = fmt::format("v{}", k);
    vi.ctype = ctypeOf(n->output()->dtype());
    vi.node = k;
    values_.emplace(n->output(), vi);
    if (isRowOp(n)) rowOps_.push_back(k);
  }
  KILN_CHECK(!nodes_.empty(), "group {} has no ops", group_.id);
  for (const Value* v : group_.outputs) (void)info(v);
  for (const Node* n : nodes_) {  // Note [Embeddings in kernels]
    if (n->kind() != OpKind::kEmbedding) continue;
    const Value* table = n->input(0);
    const Value* ids = n->input(1);
    const int t = info(table).tensor;
    const int i = info(ids).tensor;
    if (t < 0 || i < 0)
      throw Unsupported(fmt::format(
          "group {}: an embedding whose table or ids are computed in the kernel", group_.id));
    for (const Node* m : nodes_)
      for (const Value* in : m->inputs())
        if (in == table && m != n)
          throw Unsupported(
              fmt::format("group {}: embedding table %{} read by another op of the kernel",
                          group_.id, table->id()));
    if (rank_ < 2 || table->rank() != 2 || !table->shape()[0].isConstant() ||
        table->shape()[1] != group_.domain.back() || table->shape()[1].isOne() || ids->rank() < 1 ||
        !ids->shape().back().isOne())
      throw Unsupported(fmt::format(
          "group {}: embedding of table {} by ids {} over the domain {} (the table needs static "
          "rows and its columns along the innermost dim)",
          group_.id, ir::toString(table->shape()), ir::toString(ids->shape()),
          ir::toString(group_.domain)));
    gathers_[t] = Gather{i, table->shape()[0].constant()};
  }
  for (const auto& [v, vi] : values_) {
    usesF16_ |= v->dtype() == DType::kFloat16;
    usesBf16_ |= v->dtype() == DType::kBFloat16;
  }
  bool anyFloatOut = false;
  fastMath_ = true;
  for (const Value* v : group_.outputs) {
    const DType d = v->dtype();
    if (ctypeOf(d) != CType::kFloat) continue;
    anyFloatOut = true;
    fastMath_ &= d == DType::kFloat16 || d == DType::kBFloat16;
  }
  fastMath_ &= anyFloatOut;
}

// Row kernels: every reduction/normalization reduces exactly the innermost rowDims dims of a
// domain-shaped operand. Values derived only from reductions and row-constant inputs are row
// constants, computed once per row (by every thread of the row).
void Emitter::analyzeRows() {
  if (!rowKernel_) return;
  KILN_CHECK(!rowOps_.empty(), "row group {} without a reduction", group_.id);
  const int rowDims = group_.rowDims;
  for (int k : rowOps_) {
    const Node* n = nodes_[static_cast<size_t>(k)];
    const Value* x = n->input(0);
    const auto name = ir::toString(n->kind());
    if (x->shape() != group_.domain)
      throw Unsupported(fmt::format("group {}: {} operand of shape {} is not the domain {}",
                                    group_.id, name, ir::toString(x->shape()),
                                    ir::toString(group_.domain)));
    if (ctypeOf(x->dtype()) != CType::kFloat)
      throw Unsupported(
          fmt::format("group {}: {} of {} values", group_.id, name, ir::toString(x->dtype())));
    switch (n->kind()) {
      case OpKind::kSum:
      case OpKind::kMean:
      case OpKind::kAmax:
      case OpKind::kAmin: {
        std::vector<int64_t> dims = n->attrs().getInts("dims");
        for (auto& d : dims)
          if (d < 0) d += rank_;
        std::sort(dims.begin(), dims.end());
        std::vector<int64_t> want;
        for (int d = outer_; d < rank_; ++d) want.push_back(d);
        if (dims != want)
          throw Unsupported(
              fmt::format("group {}: {} over dims [{}] is not a reduction over the "
                          "innermost {} dim(s)",
                          group_.id, name, fmt::join(dims, ", "), rowDims));
        break;
      }
      case OpKind::kSoftmax:
      case OpKind::kLogSoftmax: {
        int64_t dim = n->attrs().getInt("dim");
        if (dim < 0) dim += rank_;
        if (rowDims != 1 || dim != rank_ - 1)
          throw Unsupported(
              fmt::format("group {}: {} over dim {} of a rank-{} domain with {} row "
                          "dims",
                          group_.id, name, dim, rank_, rowDims));
        break;
      }
      case OpKind::kLayerNorm:
        if (n->attrs().getInt("normalized_ndim") != rowDims)
          throw Unsupported(
              fmt::format("group {}: layer_norm over {} dims in a group of {} row "
                          "dims",
                          group_.id, n->attrs().getInt("normalized_ndim"), rowDims));
        break;
      default:
        KILN_CHECK(false, "unexpected row op {}", name);
    }
  }
  // No dim along a row dim (right-aligned), except static 1s: one value per row.
  auto alongNoRowDim = [&](const Value* v) {
    const int r = static_cast<int>(v->rank());
    for (int k = 0; k < r; ++k)
      if (rank_ - r + k >= outer_ && !v->shape()[static_cast<size_t>(k)].isOne()) return false;
    return true;
  };
  for (const Value* v : group_.inputs) values_.at(v).rowConst = alongNoRowDim(v);
  for (size_t k = 0; k < nodes_.size(); ++k) {
    const Node* n = nodes_[k];
    ValueInfo& vi = values_.at(n->output());
    if (n->category() == ir::OpCategory::kReduction) {
      vi.rowConst = true;
    } else if (n->kind() == OpKind::kFill) {
      // Note [Fills]: one value everywhere; a row constant only where its shape is, like an input.
      vi.rowConst = alongNoRowDim(n->output());
    } else if (n->category() == ir::OpCategory::kNormalization) {
      vi.rowConst = false;
    } else {
      bool allConst = true;
      for (const Value* in : n->inputs()) {
        auto it = values_.find(in);
        if (it != values_.end() && !it->second.rowConst) allConst = false;
      }
      vi.rowConst = allConst;
      if (!allConst) {
        // A row constant meets row-varying values: it must line up with the domain (keepdim).
        for (const Value* in : n->inputs()) {
          auto it = values_.find(in);
          if (it == values_.end() || !it->second.rowConst || it->second.tensor >= 0 ||
              in->producer()->kind() == OpKind::kFill)  // the same value anywhere it lines up
            continue;
          if (in->rank() != 0 && in->rank() != rank_)
            throw Unsupported(fmt::format(
                "group {}: row value %{} of shape {} broadcast against "
                "the domain {} (only keepdim reductions fuse)",
                group_.id, in->id(), ir::toString(in->shape()), ir::toString(group_.domain)));
        }
      }
    }
  }
}

void Emitter::buildAbi() {
  for (const auto& [t, g] : gathers_)
    if (rowKernel_ && !info(group_.inputs[static_cast<size_t>(g.ids)]).rowConst)
      throw Unsupported(fmt::format("group {}: embedding ids %{} vary along the rows", group_.id,
                                    group_.inputs[static_cast<size_t>(g.ids)]->id()));
  abi_.rank = rank_;
  abi_.domain = group_.domain;
  abi_.rowDims = rowKernel_ ? group_.rowDims : 0;
  abi_.numInputs = static_cast<int>(group_.inputs.size());
  for (const Value* v : group_.inputs) {
    TensorArg t;
    t.role = TensorArg::Role::kInput;
    t.valueId = v->id();
    t.dtype = v->dtype();
    t.shape = v->shape();
    const int r = static_cast<int>(v->rank());
    for (int k = 0; k < r; ++k) t.dimMap.push_back(rank_ - r + k);
    t.rowConstant = rowKernel_ && info(v).rowConst;
    const int self = static_cast<int>(abi_.tensors.size());
    if (auto g = gathers_.find(self); g != gathers_.end()) {
      t.dimMap = {kGatherDim, rank_ - 1};
      t.gatherBy = g->second.ids;
    }
    for (const auto& [table, g] : gathers_)
      if (g.ids == self) t.indexBound = std::max(t.indexBound, g.rows);
    abi_.tensors.push_back(std::move(t));
  }
  for (const Value* v : group_.outputs) {
    TensorArg t;
    t.role = TensorArg::Role::kOutput;
    t.valueId = v->id();
    t.dtype = v->dtype();
    t.shape = v->shape();
    const ValueInfo& vi = info(v);
    if (vi.tensor >= 0)
      throw Unsupported(fmt::format("group {}: input %{} is also an output", group_.id, v->id()));
    const auto& s = v->shape();
    const auto& d = group_.domain;
    if (!vi.rowConst) {
      if (s != d)
        throw Unsupported(fmt::format("group {}: output %{} of shape {} is not the domain {}",
                                      group_.id, v->id(), ir::toString(s), ir::toString(d)));
      for (int k = 0; k < rank_; ++k) t.dimMap.push_back(k);
    } else {
      t.rowConstant = true;
      bool ok = false;
      if (static_cast<int>(s.size()) == rank_) {
        ok = std::equal(s.begin(), s.begin() + outer_, d.begin()) &&
             std::all_of(s.begin() + outer_, s.end(), [](const ir::SymDim& d) { return d.isOne(); });
      } else if (static_cast<int>(s.size()) == outer_) {
        ok = std::equal(s.begin(), s.end(), d.begin());
      }
      if (!ok)
        throw Unsupported(
            fmt::format("group {}: row output %{} of shape {} does not match the "
                        "rows of {}",
                        group_.id, v->id(), ir::toString(s), ir::toString(d)));
      for (int k = 0; k < static_cast<int>(s.size()); ++k) t.dimMap.push_back(k);
    }
    abi_.tensors.push_back(std::move(t));
  }

  const int64_t maxNumel = bucket_.maxNumel(group_.domain);
  abi_.index64 = maxNumel < 0 || maxNumel > kMaxNumel32;
  for (const auto& [t, g] : gathers_) {  // a table's far rows (a large vocabulary)
    const int64_t cols = bucket_.maxOf(group_.domain.back());
    if (cols < 0 || g.rows * cols > kMaxNumel32) abi_.index64 = true;
  }
  idx_ = abi_.index64 ? "long long" : "int";

  // Vector width: a power of two dividing a static innermost size.
  int vec = std::visit([](const auto& p) { return p.vectorWidth; }, params_);
  if (rank_ == 0) vec = 1;
  if (rank_ > 0 && group_.domain.back().isConstant()) {
    const int64_t inner = group_.domain.back().constant();
    while (vec > 1 && inner % vec != 0) vec /= 2;
  }
  vec_ = vec;
  abi_.vectorWidth = vec;

  if (const auto* p = std::get_if<PointwiseParams>(&params_)) {
    pointwise_ = *p;
    launch_.blockSize = p->blockSize;
    launch_.unitsPerBlock = int64_t{p->blockSize} * vec * p->elementsPerThread;
    launch_.rows = false;
    launch_.maxBlocksPerSm = p->gridStride ? p->maxBlocksPerSm : 0;
  } else {
    const auto& r = std::get<ReductionParams>(params_);
    threadsPerRow_ = r.threadsPerRow;
    rowsPerBlock_ = r.rowsPerBlock;
    variance_ = r.variance;
    cacheRow_ = r.cacheRow;
    chunks_ = r.chunksPerThread;
    if (cacheRow_) {
      const int64_t maxRow = bucket_.maxNumel(
          std::span<const ir::SymDim>(group_.domain).subspan(static_cast<size_t>(outer_)));
      const int64_t per = int64_t{threadsPerRow_} * vec;
      const int64_t need = std::max<int64_t>(1, (maxRow + per - 1) / per);
      chunks_ = static_cast<int>(std::max<int64_t>(chunks_, need));
      // A narrower vector than planned can blow the register budget: reload instead.
      if (int64_t{chunks_} * vec > kMaxCachedChunks * 8 || chunks_ > kMaxCachedChunks)
        cacheRow_ = false;
    }
    abi_.maxRowLength = cacheRow_ ? int64_t{threadsPerRow_} * vec * chunks_ : -1;
    launch_.blockSize = r.blockSize();
    launch_.unitsPerBlock = r.rowsPerBlock;
    launch_.rows = true;
    launch_.maxBlocksPerSm = 0;
    launch_.staticSharedBytes = threadsPerRow_ > 32 ? 96 * 4 : 0;
  }
}

bool Emitter::spans(int tensor, int dim) const {
  const TensorArg& t = abi_.tensors[static_cast<size_t>(tensor)];
  for (size_t k = 0; k < t.dimMap.size(); ++k)
    if (t.dimMap[k] == dim && !t.shape[k].isOne()) return true;
  return false;
}

std::string Emitter::ref(const Value* v, CType want) const {
  if (v->producer() != nullptr && v->producer()->kind() == OpKind::kConstant &&
      values_.find(v) == values_.end())
    return literal(v->producer()->attrs().getDouble("value"), want);
  const ValueInfo& vi = info(v);
  if (auto it = valueExpr_.find(v); it != valueExpr_.end())
    return convert(it->second, CType::kFloat, want);
  std::string e = vi.name;
  if (vi.tensor >= 0 && !vi.rowConst) {
    auto it = inputExpr_.find(vi.tensor);
    e = it != inputExpr_.end() ? it->second
                               : fmt::format("{}{}{}", inPrefix_, vi.tensor, inSuffix_);
  }
  return convert(e, vi.ctype, want);
}

std::string Emitter::nodeExpr(int k) const {
  const Node* n = nodes_[static_cast<size_t>(k)];
  const CType out = ctypeOf(n->output()->dtype());
  const auto name = ir::toString(n->kind());
  auto a = [&](int i, CType t) { return ref(n->input(i), t); };
  auto needFloat = [&] {
    if (out != CType::kFloat)
      throw Unsupported(fmt::format("group {}: {} producing {}", group_.id, name,
                                    ir::toString(n->output()->dtype())));
  };
  auto needArith = [&] {
    if (out == CType::kBool)
      throw Unsupported(fmt::format("group {}: arithmetic {} on bool", group_.id, name));
  };
  auto unaryF = [&](std::string_view fn) {
    needFloat();
    return fmt::format("{}({})", fn, a(0, CType::kFloat));
  };
  auto binary = [&](std::string_view op) {
    needArith();
    return fmt::format("({} {} {})", a(0, out), op, a(1, out));
  };
  auto compare = [&](std::string_view op) {
    const auto t = ctypeOf(ir::promote(n->input(0)->dtype(), n->input(1)->dtype()));
    return fmt::format("({} {} {})", a(0, t), op, a(1, t));
  };
  switch (n->kind()) {
    case OpKind::kNeg:
      needArith();
      return fmt::format("(-{})", a(0, out));
    case OpKind::kAbs:
      needArith();
      return fmt::format("kiln_abs({})", a(0, out));
    case OpKind::kRelu:
      needArith();
      return fmt::format("kiln_relu({})", a(0, out));
    case OpKind::kExp:
      return unaryF("kiln_exp");
    case OpKind::kLog:
      return unaryF("logf");
    case OpKind::kSqrt:
      return unaryF("sqrtf");
    case OpKind::kRsqrt:
      return unaryF("rsqrtf");
    case OpKind::kTanh:
      return unaryF("tanhf");
    case OpKind::kSigmoid:
      return unaryF("kiln_sigmoid");
    case OpKind::kGelu:
      return unaryF("kiln_gelu");
    case OpKind::kGeluTanh:
      return unaryF("kiln_gelu_tanh");
    case OpKind::kSilu:
      return unaryF("kiln_silu");
    case OpKind::kErf:
      return unaryF("erff");
    case OpKind::kSin:  // IEEE sinf/cosf (no fast math): rotary angles reach thousands of radians
      return unaryF("sinf");
    case OpKind::kCos:
      return unaryF("cosf");
    case OpKind::kClamp: {
      needArith();
      std::string e = a(0, out);
      if (auto lo = n->attrs().getDoubleOpt("min"))
        e = fmt::format("kiln_clamp_min({}, {})", e, literal(*lo, out));
      if (auto hi = n->attrs().getDoubleOpt("max"))
        e = fmt::format("kiln_clamp_max({}, {})", e, literal(*hi, out));
      return e;
    }
    case OpKind::kPowScalar: {
      needFloat();
      const double p = n->attrs().getDouble("exponent");
      const std::string x = a(0, CType::kFloat);
      if (p == 1.0) return x;
      if (p == 2.0) return fmt::format("({0} * {0})", x);
      if (p == 3.0) return fmt::format("({0} * {0} * {0})", x);
      if (p == 0.5) return fmt::format("sqrtf({})", x);
      if (p == -0.5) return fmt::format("rsqrtf({})", x);
      if (p == -1.0) return fmt::format("(1.0f / {})", x);
      if (p == -2.0) return fmt::format("(1.0f / ({0} * {0}))", x);
      return fmt::format("powf({}, {})", x, floatLiteral(p));
    }
    case OpKind::kFill: {  // Note [Fills]: a literal, rounded as a cast to the dtype would
      std::string e = literal(n->attrs().getDouble("value"), out);
      if (n->output()->dtype() == DType::kFloat16) return fmt::format("kiln_round_f16({})", e);
      if (n->output()->dtype() == DType::kBFloat16) return fmt::format("kiln_round_bf16({})", e);
      return e;
    }
    case OpKind::kArange: {  // Note [Aranges in kernels]: start + step * the element's coordinate
      if (rowKernel_)
        throw Unsupported(fmt::format("group {}: an arange in a row kernel", group_.id));
      const Value* v = n->output();
      const int64_t dim = n->attrs().getInt("dim");
      const int64_t start = n->attrs().getInt("start");
      std::string e = fmt::format("{}LL", start);
      if (!v->shape()[static_cast<size_t>(dim)].isOne()) {
        const int64_t dd = rank_ - v->rank() + dim;
        const std::string c = dd == rank_ - 1 ? fmt::format("((long long)c{} + j)", dd)
                                              : fmt::format("(long long)c{}", dd);
        e = fmt::format("({}LL + {}LL * {})", start, n->attrs().getInt("step"), c);
      }
      return out == CType::kInt ? fmt::format("((int){})", e) : e;
    }
    case OpKind::kCast: {
      std::string e = a(0, out);
      if (n->output()->dtype() == DType::kFloat16) return fmt::format("kiln_round_f16({})", e);
      if (n->output()->dtype() == DType::kBFloat16) return fmt::format("kiln_round_bf16({})", e);
      return e;
    }
    case OpKind::kAdd:
      return binary("+");
    case OpKind::kSub:
      return binary("-");
    case OpKind::kMul:
      return binary("*");
    case OpKind::kDiv:
      needFloat();
      return binary("/");
    case OpKind::kMaximum:
      return fmt::format("kiln_max({}, {})", a(0, out), a(1, out));
    case OpKind::kMinimum:
      return fmt::format("kiln_min({}, {})", a(0, out), a(1, out));
    case OpKind::kPow:
      needFloat();
      return fmt::format("powf({}, {})", a(0, CType::kFloat), a(1, CType::kFloat));
    case OpKind::kEq:
      return compare("==");
    case OpKind::kNe:
      return compare("!=");
    case OpKind::kLt:
      return compare("<");
    case OpKind::kLe:
      return compare("<=");
    case OpKind::kGt:
      return compare(">");
    case OpKind::kGe:
      return compare(">=");
    case OpKind::kWhere:
      return fmt::format("({} ? {} : {})", a(0, CType::kBool), a(1, out), a(2, out));
    case OpKind::kEmbedding:  // Note [Embeddings in kernels]: the table, loaded at the id's row
      return a(0, out);
    // Elementwise results of normalizations, from their row statistics (see emitRowPath).
    case OpKind::kSoftmax:
      if (fastMath_) return fmt::format("(kiln_exp({} - mx{}) * rsm{})", a(0, CType::kFloat), k, k);
      return fmt::format("(expf({} - mx{}) / sm{})", a(0, CType::kFloat), k, k);
    case OpKind::kLogSoftmax:
      return fmt::format("(({} - mx{}) - lsm{})", a(0, CType::kFloat), k, k);
    case OpKind::kLayerNorm: {
      std::string e = fmt::format("(({} - mean{}) * rstd{})", a(0, CType::kFloat), k, k);
      if (n->inputs().size() >= 2) e = fmt::format("({} * {})", e, a(1, CType::kFloat));
      if (n->inputs().size() >= 3) e = fmt::format("({} + {})", e, a(2, CType::kFloat));
      return e;
    }
    default:
      throw Unsupported(fmt::format("group {}: op {} has no CUDA lowering", group_.id, name));
  }
}

void Emitter::closure(const std::vector<const Value*>& roots, std::vector<int>& nodes,
                      std::vector<int>& inputs, const std::vector<const Value*>& stop,
                      std::vector<const Value*>* leaves) const {
  std::set<int> nodeSet;
  std::set<int> inputSet;
  std::vector<const Value*> stack(roots.begin(), roots.end());
  while (!stack.empty()) {
    const Value* v = stack.back();
    stack.pop_back();
    auto it = values_.find(v);
    if (it == values_.end() || it->second.rowConst) continue;  // constant or row constant
    if (std::find(stop.begin(), stop.end(), v) != stop.end()) {
      if (leaves != nullptr && std::find(leaves->begin(), leaves->end(), v) == leaves->end())
        leaves->push_back(v);
      continue;
    }
    if (it->second.tensor >= 0) {
      inputSet.insert(it->second.tensor);
      continue;
    }
    if (!nodeSet.insert(it->second.node).second) continue;
    for (const Value* in : nodes_[static_cast<size_t>(it->second.node)]->inputs())
      stack.push_back(in);
  }
  nodes.assign(nodeSet.begin(), nodeSet.end());
  inputs.assign(inputSet.begin(), inputSet.end());
  if (leaves != nullptr) {
    // Deterministic order (the order of `stop`), whatever the traversal order was.
    std::vector<const Value*> ordered;
    for (const Value* v : stop)
      if (std::find(leaves->begin(), leaves->end(), v) != leaves->end()) ordered.push_back(v);
    *leaves = std::move(ordered);
  }
}

bool Emitter::rowInvariant(int t) const {
  if (info(group_.inputs[static_cast<size_t>(t)]).rowConst) return false;
  for (int d = 0; d < outer_; ++d)
    if (spans(t, d)) return false;
  return true;
}

void Emitter::emitCoords(std::string& out, const std::string& ind, const std::string& var, int from,
                         int to, const std::string& prefix) const {
  // Decomposes `var` into coordinates <prefix><d> over domain dims [from, to), innermost first.
  if (from >= to) return;
  out += fmt::format("{}{} q_ = {};\n", ind, idx_, var);
  for (int d = to - 1; d > from; --d)
    out += fmt::format("{0}const {1} {2}{3} = q_ % n{3};\n{0}q_ /= n{3};\n", ind, idx_, prefix, d);
  out += fmt::format("{}const {} {}{} = q_;\n", ind, idx_, prefix, from);
}

std::string Emitter::offsetExpr(int tensor, int from, int to, const std::string& prefix) const {
  std::vector<std::string> terms;
  for (int d = from; d < to; ++d)
    if (spans(tensor, d)) terms.push_back(fmt::format("{}{} * st{}_{}", prefix, d, tensor, d));
  if (terms.empty()) return "0";
  return fmt::format("{}", fmt::join(terms, " + "));
}

// Note [Splat loads]
// A vector load reads `vec` consecutive elements, or one element for all lanes of the vector
// (a splat) when the tensor does not extend along the innermost domain dim. Which one is known
// when the kernel is emitted: packArgs sends a tensor that extends along that dim with a stride
// other than 1 (an expanded input, stride 0) to the scalar path. A runtime choice here would
// cost every element a predicated second conversion and a move (the f16 pointwise kernel ran
// ~30 instructions per element, ~3 of them for that).
std::string Emitter::splatExpr(int tensor, int vec) const {
  if (vec == 1) return "false";
  return spans(tensor, rank_ - 1) ? "false" : "true";
}

// Note [Register budget]
// Left alone, ptxas spends registers on instruction-level parallelism: fp16 add+layernorm+gelu at
// 4096 columns took 153 of them, so one 256-thread block fit an SM (12% occupancy) and the kernel
// ran at a quarter of copy bandwidth. Row kernels therefore ask for enough resident threads to
// hide memory latency: __launch_bounds__(block, minBlocks) with a budget of 64 registers, or the
// floats a thread caches plus 32 when that is more (forcing less would spill the cache).
// Pointwise kernels stay at 32-40 registers on their own.
std::string Emitter::launchBounds() const {
  if (!rowKernel_) return fmt::format("{}", launch_.blockSize);
  const int budget = std::max(64, cachedFloats_ + 32);
  const int maxBlocks = std::max(1, 2048 / launch_.blockSize);
  const int minBlocks = std::clamp(65536 / (launch_.blockSize * budget), 1, maxBlocks);
  return fmt::format("{}, {}", launch_.blockSize, minBlocks);
}

std::string Emitter::reduceCall(std::string_view op, const std::string& acc) const {
  if (threadsPerRow_ <= 32)
    return fmt::format("kiln_warp_reduce<{}, {}>({})", op, threadsPerRow_, acc);
  return fmt::format("kiln_block_reduce<{}, {}>({}, kiln_smem)", op, threadsPerRow_, acc);
}

void Emitter::emitPointwisePath(std::string& out, int vec, int perThread,
                                const std::string& ind) const {
  const int bs = pointwise_.blockSize;
  std::vector<const Value*> roots(group_.outputs.begin(), group_.outputs.end());
  std::vector<int> nodes, inputs;
  closure(roots, nodes, inputs);
  const std::string i2 = ind + "  ";
  const std::string i3 = ind + "    ";
  const std::string i4 = ind + "      ";
  out += fmt::format(
      "{}for ({} base = ({}){} * kTile; base < numel; base += ({})gridDim.x * kTile) "
      "{{\n",
      ind, idx_, idx_, "blockIdx.x", idx_);
  out += fmt::format("#pragma unroll\n{}for (int k = 0; k < {}; ++k) {{\n", i2, perThread);
  out += fmt::format("{}const {} i = base + (({})k * {} + ({})threadIdx.x) * {};\n", i3, idx_, idx_,
                     bs, idx_, vec);
  out += fmt::format("{}if (i >= numel) break;\n", i3);
  emitCoords(out, i3, "i", 0, rank_, "c");
  // Tables last: their offsets read the ids (Note [Embeddings in kernels]).
  std::stable_partition(inputs.begin(), inputs.end(), [&](int t) { return !gathers_.count(t); });
  for (int t : inputs) {
    const auto& ta = abi_.tensors[static_cast<size_t>(t)];
    std::string offset = offsetExpr(t, 0, rank_, "c");
    if (auto g = gathers_.find(t); g != gathers_.end())
      offset = fmt::format("({})kiln_gather_row(in{}[0], {}LL) * gst{} + {}", idx_, g->second.ids,
                           g->second.rows, t, offset);
    out += fmt::format("{}{} in{}[{}];\n", i3, ctypeName(ctypeOf(ta.dtype)), t, vec);
    out += fmt::format("{}kiln_ldv<{}>(in{}, p{} + ({}), {});\n", i3, vec, t, t, offset,
                       splatExpr(t, vec));
  }
  for (size_t o = 0; o < group_.outputs.size(); ++o) {
    const int t = abi_.numInputs + static_cast<int>(o);
    out += fmt::format("{}{} out{}[{}];\n", i3, ctypeName(ctypeOf(group_.outputs[o]->dtype())), t,
                       vec);
  }
  out += fmt::format("#pragma unroll\n{}for (int j = 0; j < {}; ++j) {{\n", i3, vec);
  inPrefix_ = "in";
  inSuffix_ = "[j]";
  for (int k : nodes)
    out += fmt::format("{}const {} v{} = {};\n", i4,
                       ctypeName(ctypeOf(nodes_[static_cast<size_t>(k)]->output()->dtype())), k,
                       nodeExpr(k));
  for (size_t o = 0; o < group_.outputs.size(); ++o) {
    const Value* v = group_.outputs[o];
    const int t = abi_.numInputs + static_cast<int>(o);
    out += fmt::format("{}out{}[j] = {};\n", i4, t, ref(v, ctypeOf(v->dtype())));
  }
  out += fmt::format("{}}}\n", i3);
  for (size_t o = 0; o < group_.outputs.size(); ++o) {
    const int t = abi_.numInputs + static_cast<int>(o);
    out += fmt::format("{}kiln_stv<{}>(p{} + ({}), out{});\n", i3, vec, t,
                       offsetExpr(t, 0, rank_, "c"), t);
  }
  out += fmt::format("{}}}\n{}}}\n", i2, ind);
}

void Emitter::emitPointwise(std::string& out) const {
  const int bs = pointwise_.blockSize;
  out += fmt::format("  const {} numel = ({})args.numel;\n", idx_, idx_);
  out += fmt::format("  const {} kTile = {};\n", idx_,
                     int64_t{bs} * vec_ * pointwise_.elementsPerThread);
  if (vec_ > 1) {
    out += "  if (args.vec) {\n";
    emitPointwisePath(out, vec_, pointwise_.elementsPerThread, "    ");
    out += "  } else {\n";
    emitPointwisePath(out, 1, vec_ * pointwise_.elementsPerThread, "    ");
    out += "  }\n";
  } else {
    emitPointwisePath(out, 1, pointwise_.elementsPerThread, "  ");
  }
}

// One pass over the row: `body` is emitted inside the per-element loop with inputs loaded as
// in<t>[j] (reload) or cin<t>[k][j] (cached).
void Emitter::emitRowPath(std::string& out, int vec, int chunks, bool cache,
                          const std::string& ind) const {
  const int tpr = threadsPerRow_;
  const std::string i2 = ind + "  ";
  const std::string i3 = ind + "    ";
  const std::string i4 = ind + "      ";

  auto rowOffset = [&](int t) {
    std::string inner = offsetExpr(t, outer_, rank_, "r");
    return fmt::format("p{} + base{} + ({})", t, t, inner);
  };
  // Note [Row caching]
  // With cacheRow each thread keeps its share of the row in registers between passes, so the row
  // is read from memory once. What it keeps decides register pressure, and with it occupancy:
  //   operand mode  the row ops' operands (x + r before a layer_norm, x * s + m before a softmax)
  //                 in float, computed in one prologue pass. Used when every operand can be
  //                 computed before any row statistic and the outputs need nothing else per row
  //                 but row-invariant inputs. One float array instead of one per input.
  //   input mode    otherwise: the row-varying inputs, in float.
  // Row-invariant inputs (a layer_norm weight or bias: they vary along the row only) are never
  // cached: every row reads the same values, which stay in L1/L2, so they are loaded where used.
  // Caching everything made fp16 add+layernorm+gelu at 4096 columns take 180 registers a thread.
  inputExpr_.clear();
  valueExpr_.clear();
  std::vector<const Value*> allRoots;
  std::vector<const Value*> operands;
  for (int k : rowOps_) {
    const Value* x = nodes_[static_cast<size_t>(k)]->input(0);
    allRoots.push_back(x);
    if (std::find(operands.begin(), operands.end(), x) == operands.end()) operands.push_back(x);
  }
  std::vector<const Value*> outRoots;
  for (const Value* v : group_.outputs)
    if (!info(v).rowConst) outRoots.push_back(v);
  allRoots.insert(allRoots.end(), outRoots.begin(), outRoots.end());
  std::vector<int> allNodes, allInputs, cachedInputs;
  closure(allRoots, allNodes, allInputs);
  bool operandMode = false;
  std::vector<int> operandNodes, operandInputs;
  if (cache) {
    int rowVarying = 0;
    for (int t : allInputs) rowVarying += rowInvariant(t) ? 0 : 1;
    closure(operands, operandNodes, operandInputs);
    operandMode = static_cast<int>(operands.size()) <= rowVarying;
    for (int k : operandNodes) {  // computable before any row statistic
      const Node* n = nodes_[static_cast<size_t>(k)];
      if (isRowOp(n)) operandMode = false;
      for (const Value* in : n->inputs()) {
        auto it = values_.find(in);
        if (it != values_.end() && it->second.rowConst && it->second.node >= 0) operandMode = false;
      }
    }
    if (operandMode) {
      std::vector<int> nodes, inputs;
      closure(outRoots, nodes, inputs, operands);
      for (int t : inputs) operandMode &= rowInvariant(t);
    }
    if (!operandMode)
      for (int t : allInputs)
        if (!rowInvariant(t)) cachedInputs.push_back(t);
    const size_t arrays = operandMode ? operands.size() : cachedInputs.size();
    cachedFloats_ = std::max(cachedFloats_, static_cast<int>(arrays) * chunks * vec);
  }
  const std::vector<const Value*> noStop;
  const std::vector<const Value*>& stop = operandMode ? operands : noStop;

  // Opens a pass over the row's elements, loading those of `inputs` that are not cached.
  auto openLoop = [&](const std::vector<int>& inputs, bool needCoords) {
    std::vector<int> loads;
    for (int t : inputs)
      if (std::find(cachedInputs.begin(), cachedInputs.end(), t) == cachedInputs.end())
        loads.push_back(t);
    if (cache) {
      out += fmt::format("#pragma unroll\n{}for (int k = 0; k < {}; ++k) {{\n", ind, chunks);
      out += fmt::format("{}const {} e = (({})k * {} + lane) * {};\n", i2, idx_, idx_, tpr, vec);
      out += fmt::format("{}if (e < len) {{\n", i2);
    } else {
      out += fmt::format("{}for ({} e = ({})lane * {}; e < len; e += {}) {{\n", ind, idx_, idx_,
                         vec, tpr * vec);
      out += fmt::format("{}{{\n", i2);
    }
    if (needCoords || !loads.empty()) emitCoords(out, i3, "e", outer_, rank_, "r");
    for (int t : loads) {
      const auto& ta = abi_.tensors[static_cast<size_t>(t)];
      out += fmt::format("{}{} in{}[{}];\n", i3, ctypeName(ctypeOf(ta.dtype)), t, vec);
      out += fmt::format("{}kiln_ldv<{}>(in{}, {}, {});\n", i3, vec, t, rowOffset(t),
                         splatExpr(t, vec));
    }
  };
  auto openElem = [&] {
    out += fmt::format("#pragma unroll\n{}for (int j = 0; j < {}; ++j) {{\n", i3, vec);
  };
  auto closeElem = [&] { out += fmt::format("{}}}\n", i3); };
  auto closeLoop = [&] { out += fmt::format("{}}}\n{}}}\n", i2, ind); };
  auto emitNodes = [&](const std::vector<int>& nodes) {
    for (int k : nodes)
      out += fmt::format("{}const {} v{} = {};\n", i4,
                         ctypeName(ctypeOf(nodes_[static_cast<size_t>(k)]->output()->dtype())), k,
                         nodeExpr(k));
  };

  // Fill the cache: one pass over the row.
  inPrefix_ = "in";
  inSuffix_ = "[j]";
  if (operandMode) {
    for (size_t i = 0; i < operands.size(); ++i)
      out += fmt::format("{}float cx{}[{}][{}];\n", ind, i, chunks, vec);
    openLoop(operandInputs, false);
    openElem();
    emitNodes(operandNodes);
    for (size_t i = 0; i < operands.size(); ++i)
      out += fmt::format("{}cx{}[k][j] = {};\n", i4, i, ref(operands[i], CType::kFloat));
    closeElem();
    closeLoop();
    for (size_t i = 0; i < operands.size(); ++i)
      valueExpr_[operands[i]] = fmt::format("cx{}[k][j]", i);
  } else if (!cachedInputs.empty()) {
    for (int t : cachedInputs) {
      const auto& ta = abi_.tensors[static_cast<size_t>(t)];
      out +=
          fmt::format("{}{} cin{}[{}][{}];\n", ind, ctypeName(ctypeOf(ta.dtype)), t, chunks, vec);
    }
    out += fmt::format("#pragma unroll\n{}for (int k = 0; k < {}; ++k) {{\n", ind, chunks);
    out += fmt::format("{}const {} e = (({})k * {} + lane) * {};\n", i2, idx_, idx_, tpr, vec);
    out += fmt::format("{}if (e < len) {{\n", i2);
    emitCoords(out, i3, "e", outer_, rank_, "r");
    for (int t : cachedInputs)
      out += fmt::format("{}kiln_ldv<{}>(cin{}[k], {}, {});\n", i3, vec, t, rowOffset(t),
                         splatExpr(t, vec));
    closeLoop();
    for (int t : cachedInputs) inputExpr_[t] = fmt::format("cin{}[k][j]", t);
  }

  // Row constants become available as passes complete; emit each as soon as it can be.
  std::set<int> emitted;
  auto emitRowConsts = [&] {
    for (size_t k = 0; k < nodes_.size(); ++k) {
      const Node* n = nodes_[k];
      if (emitted.count(static_cast<int>(k)) || isRowOp(n)) continue;
      if (!values_.at(n->output()).rowConst) continue;
      bool ready = true;
      for (const Value* in : n->inputs()) {
        auto it = values_.find(in);
        if (it != values_.end() && it->second.node >= 0 && !emitted.count(it->second.node))
          ready = false;
      }
      if (!ready) continue;
      emitted.insert(static_cast<int>(k));
      out += fmt::format("{}const {} v{} = {};\n", ind, ctypeName(ctypeOf(n->output()->dtype())), k,
                         nodeExpr(static_cast<int>(k)));
    }
  };
  emitRowConsts();

  // One pass accumulating `update` over the elementwise value `x` of row op k.
  auto pass = [&](int k, const std::string& declare, const std::string& update) {
    const Value* x = nodes_[static_cast<size_t>(k)]->input(0);
    std::vector<int> nodes, inputs;
    closure({x}, nodes, inputs, stop);
    out += fmt::format("{}{}\n", ind, declare);
    openLoop(inputs, false);
    openElem();
    emitNodes(nodes);
    out += fmt::format("{}{}\n", i4,
                       fmt::format(fmt::runtime(update), fmt::arg("x", ref(x, CType::kFloat))));
    closeElem();
    closeLoop();
  };

  for (int k : rowOps_) {
    const Node* n = nodes_[static_cast<size_t>(k)];
    emitRowConsts();
    switch (n->kind()) {
      case OpKind::kSum:
      case OpKind::kMean:
        pass(k, fmt::format("float acc{} = 0.0f;", k), fmt::format("acc{} += {{x}};", k));
        out += fmt::format("{}const float v{} = {}{};\n", ind, k,
                           reduceCall("KilnSum", fmt::format("acc{}", k)),
                           n->kind() == OpKind::kMean ? " / (float)rowLen" : "");
        break;
      case OpKind::kAmax:
      case OpKind::kAmin: {
        const bool mx = n->kind() == OpKind::kAmax;
        pass(k, fmt::format("float acc{} = {};", k, mx ? "-kiln_inf()" : "kiln_inf()"),
             fmt::format("acc{0} = {1}(acc{0}, {{x}});", k, mx ? "kiln_max" : "kiln_min"));
        out += fmt::format("{}const float v{} = {};\n", ind, k,
                           reduceCall(mx ? "KilnMax" : "KilnMin", fmt::format("acc{}", k)));
        break;
      }
      case OpKind::kSoftmax:
      case OpKind::kLogSoftmax:
        pass(k, fmt::format("float accm{} = -kiln_inf();", k),
             fmt::format("accm{0} = kiln_max(accm{0}, {{x}});", k));
        out += fmt::format("{}const float mx{} = {};\n", ind, k,
                           reduceCall("KilnMax", fmt::format("accm{}", k)));
        pass(k, fmt::format("float accs{} = 0.0f;", k),
             fmt::format("accs{0} += kiln_exp({{x}} - mx{0});", k));
        out += fmt::format("{}const float sm{} = {};\n", ind, k,
                           reduceCall("KilnSum", fmt::format("accs{}", k)));
        if (fastMath_) out += fmt::format("{0}const float rsm{1} = 1.0f / sm{1};\n", ind, k);
        if (n->kind() == OpKind::kLogSoftmax)
          out += fmt::format("{0}const float lsm{1} = logf(sm{1});\n", ind, k);
        break;
      case OpKind::kLayerNorm: {
        const std::string eps = floatLiteral(n->attrs().getDouble("eps"));
        if (variance_ == VarianceAlgo::kWelford) {
          pass(k, fmt::format("KilnWelford w{} = kiln_welford_init();", k),
               fmt::format("kiln_welford_add(w{}, {{x}});", k));
          if (threadsPerRow_ <= 32)
            out += fmt::format("{0}w{1} = kiln_warp_welford<{2}>(w{1});\n", ind, k, threadsPerRow_);
          else
            out += fmt::format("{0}w{1} = kiln_block_welford<{2}>(w{1}, kiln_smem);\n", ind, k,
                               threadsPerRow_);
          out += fmt::format("{0}const float mean{1} = w{1}.mean;\n", ind, k);
          out += fmt::format("{0}const float rstd{1} = rsqrtf(w{1}.m2 / (float)rowLen + {2});\n",
                             ind, k, eps);
        } else {
          pass(k, fmt::format("float accs{} = 0.0f;", k), fmt::format("accs{} += {{x}};", k));
          out += fmt::format("{}const float mean{} = {} / (float)rowLen;\n", ind, k,
                             reduceCall("KilnSum", fmt::format("accs{}", k)));
          pass(k, fmt::format("float accv{} = 0.0f;", k),
               fmt::format("{{{{ const float d_ = {{x}} - mean{0}; accv{0} += d_ * d_; }}}}", k));
          out += fmt::format("{}const float rstd{} = rsqrtf({} / (float)rowLen + {});\n", ind, k,
                             reduceCall("KilnSum", fmt::format("accv{}", k)), eps);
        }
        break;
      }
      default:
        KILN_CHECK(false, "unexpected row op");
    }
    emitted.insert(k);
  }
  emitRowConsts();

  // Row-constant outputs: one thread a row stores them.
  bool anyRowConstOut = false;
  for (size_t o = 0; o < group_.outputs.size(); ++o)
    anyRowConstOut |= info(group_.outputs[o]).rowConst;
  if (anyRowConstOut) {
    out += fmt::format("{}if (rowValid && lane == 0) {{\n", ind);
    for (size_t o = 0; o < group_.outputs.size(); ++o) {
      const Value* v = group_.outputs[o];
      if (!info(v).rowConst) continue;
      const int t = abi_.numInputs + static_cast<int>(o);
      out += fmt::format("{}kiln_st(p{} + base{}, {});\n", i2, t, t, ref(v, ctypeOf(v->dtype())));
    }
    out += fmt::format("{}}}\n", ind);
  }

  // Elementwise outputs: a final pass.
  if (!outRoots.empty()) {
    std::vector<int> nodes, inputs;
    closure(outRoots, nodes, inputs, stop);
    openLoop(inputs, true);
    for (size_t o = 0; o < group_.outputs.size(); ++o) {
      const Value* v = group_.outputs[o];
      if (info(v).rowConst) continue;
      const int t = abi_.numInputs + static_cast<int>(o);
      out += fmt::format("{}{} out{}[{}];\n", i3, ctypeName(ctypeOf(v->dtype())), t, vec);
    }
    openElem();
    emitNodes(nodes);
    for (size_t o = 0; o < group_.outputs.size(); ++o) {
      const Value* v = group_.outputs[o];
      if (info(v).rowConst) continue;
      const int t = abi_.numInputs + static_cast<int>(o);
      out += fmt::format("{}out{}[j] = {};\n", i4, t, ref(v, ctypeOf(v->dtype())));
    }
    closeElem();
    for (size_t o = 0; o < group_.outputs.size(); ++o) {
      const Value* v = group_.outputs[o];
      if (info(v).rowConst) continue;
      const int t = abi_.numInputs + static_cast<int>(o);
      out += fmt::format("{}kiln_stv<{}>({}, out{});\n", i3, vec, rowOffset(t), t);
    }
    closeLoop();
  }
}

void Emitter::emitRow(std::string& out) const {
  const int tpr = threadsPerRow_;
  const int rpb = rowsPerBlock_;
  out += fmt::format("  const {} rowLen = {};\n", idx_,
                     outer_ < rank_ ? fmt::format("{}",
                                                  [&] {
                                                    std::vector<std::string> f;
                                                    for (int d = outer_; d < rank_; ++d)
                                                      f.push_back(fmt::format("n{}", d));
                                                    return fmt::format("{}", fmt::join(f, " * "));
                                                  }())
                                    : std::string("1"));
  {
    std::vector<std::string> f;
    for (int d = 0; d < outer_; ++d) f.push_back(fmt::format("n{}", d));
    out += fmt::format("  const {} rows = {};\n", idx_,
                       f.empty() ? std::string("1") : fmt::format("{}", fmt::join(f, " * ")));
  }
  out += fmt::format("  const int lane = (int)threadIdx.x % {};\n", tpr);
  out += fmt::format("  const int rsub = (int)threadIdx.x / {};\n", tpr);
  if (tpr > 32) out += "  __shared__ float kiln_smem[96];\n";
  out += fmt::format(
      "  for ({0} tile = ({0})blockIdx.x * {1}; tile < rows; tile += ({0})gridDim.x * "
      "{1}) {{\n",
      idx_, rpb);
  out += fmt::format("    const {} row = tile + rsub;\n", idx_);
  out += "    const bool rowValid = row < rows;\n";
  out += fmt::format("    const {} len = rowValid ? rowLen : 0;\n", idx_);
  emitCoords(out, "    ", "rowValid ? row : 0", 0, outer_, "c");
  for (size_t t = 0; t < abi_.tensors.size(); ++t)
    if (!gathers_.count(static_cast<int>(t)))
      out += fmt::format("    const {} base{} = {};\n", idx_, t,
                         offsetExpr(static_cast<int>(t), 0, outer_, "c"));
  // Row-constant inputs, loaded once a row (row 0 stands in for rows past the end).
  for (size_t t = 0; t < group_.inputs.size(); ++t) {
    const ValueInfo& vi = info(group_.inputs[t]);
    if (!vi.rowConst) continue;
    out +=
        fmt::format("    const {} in{} = kiln_ld(p{} + base{});\n", ctypeName(vi.ctype), t, t, t);
  }
  // Note [Embeddings in kernels]: a table's row base is the row its (row-constant) id picks.
  for (const auto& [t, g] : gathers_)
    out += fmt::format("    const {0} base{1} = ({0})kiln_gather_row(in{2}, {3}LL) * gst{1};\n",
                       idx_, t, g.ids, g.rows);
  if (vec_ > 1) {
    out += "    if (args.vec) {\n";
    emitRowPath(out, vec_, chunks_, cacheRow_, "      ");
    out += "    } else {\n";
    // The scalar path (unaligned or strided rows) reloads: caching vec_ times as many scalars,
    // each with its own address, would set the register budget of the whole kernel.
    emitRowPath(out, 1, chunks_ * vec_, false, "      ");
    out += "    }\n";
  } else {
    emitRowPath(out, 1, chunks_, cacheRow_, "    ");
  }
  out += "  }\n";
}

KernelSource Emitter::run() {
  if (std::string why = validateSchedule(group_, params_, bucket_); !why.empty())
    throw Unsupported(fmt::format("group {}: schedule {}: {}", group_.id, toString(params_), why));
  collect();
  analyzeRows();
  buildAbi();

  std::string body;
  body += fmt::format("// kiln generated kernel (codegen v{})\n", kCodegenVersion);
  body += fmt::format("// domain {}{}; schedule {}; {}-bit indexing\n", ir::toString(group_.domain),
                      rowKernel_ ? fmt::format(", {} row dim(s)", group_.rowDims) : "",
                      toString(params_), abi_.index64 ? 64 : 32);
  for (size_t t = 0; t < abi_.tensors.size(); ++t) {
    const auto& ta = abi_.tensors[t];
    body += fmt::format("//   arg {}: {} {}[{}]{}\n", t,
                        ta.role == TensorArg::Role::kInput ? "in " : "out", ir::toString(ta.dtype),
                        ir::toString(ta.shape).substr(1, ir::toString(ta.shape).size() - 2),
                        ta.rowConstant ? " per row" : "");
  }
  for (size_t k = 0; k < nodes_.size(); ++k) {
    const Node* n = nodes_[k];
    std::vector<std::string> ins;
    for (const Value* in : n->inputs()) {
      auto it = values_.find(in);
      ins.push_back(it != values_.end()
                        ? it->second.name
                        : literal(in->producer()->attrs().getDouble("value"), CType::kFloat));
    }
    const std::string attrs = n->attrs().toString();
    body += fmt::format("//   v{} = {}({}){}{}\n", k, ir::toString(n->kind()), fmt::join(ins, ", "),
                        attrs.empty() ? "" : " ", attrs);
  }
  if (fastMath_) body += "#define KILN_FAST_MATH 1\n";
  if (usesF16_) body += "#include <cuda_fp16.h>\n";
  if (usesBf16_) body += "#include <cuda_bf16.h>\n";
  auto helper = [&](std::string_view file) {
    const std::string_view text = helperText(file);
    KILN_CHECK(!text.empty(), "device helper {} is not embedded", file);
    body += text;
    if (!text.empty() && text.back() != '\n') body += '\n';
  };
  helper("kiln_abi.cuh");
  helper("kiln_math.cuh");
  // Storage overloads for half types come before the templates that call them (kiln_ldv).
  if (usesF16_) helper("kiln_f16.cuh");
  if (usesBf16_) helper("kiln_bf16.cuh");
  helper("kiln_load_store.cuh");
  if (!gathers_.empty()) helper("kiln_gather.cuh");
  if (rowKernel_) helper("kiln_reduce.cuh");

  std::string kernel;
  if (rowKernel_)
    emitRow(kernel);
  else
    emitPointwise(kernel);
  body += fmt::format(
      "\nextern \"C\" __global__ void __launch_bounds__({}) {}(const KilnArgs args) {{\n",
      launchBounds(), kNamePlaceholder);
  for (size_t t = 0; t < abi_.tensors.size(); ++t) {
    const auto& ta = abi_.tensors[t];
    const bool in = ta.role == TensorArg::Role::kInput;
    body += fmt::format("  {0}{1}* __restrict__ p{2} = ({0}{1}*)args.ptr[{2}];\n",
                        in ? "const " : "", storageType(ta.dtype), t);
  }
  for (int d = 0; d < rank_; ++d) {
    const auto& dim = group_.domain[static_cast<size_t>(d)];
    body += fmt::format("  const {} n{} = {};  // {}\n", idx_, d,
                        dim.isConstant() ? fmt::format("{}", dim.constant())
                                         : fmt::format("({})args.sizes[{}]", idx_, d),
                        dim.toString());
  }
  for (size_t t = 0; t < abi_.tensors.size(); ++t)
    for (int d = 0; d < rank_; ++d)
      if (spans(static_cast<int>(t), d))
        body += fmt::format("  const {0} st{1}_{2} = ({0})args.strides[{1}][{2}];\n", idx_, t, d);
  for (const auto& [t, g] : gathers_)  // Note [Embeddings in kernels]: the table's row stride
    body += fmt::format("  const {0} gst{1} = ({0})args.strides[{1}][0];\n", idx_, t);
  body += kernel;
  body += "}\n";

  KernelSource ks = finishKernelSource(std::move(body), rowKernel_ ? "kiln_row" : "kiln_pw");
  ks.abi = std::move(abi_);
  ks.launch = launch_;
  ks.fastMath = fastMath_;
  return ks;
}

}  // namespace

KernelSource emitCuda(const ir::Graph& graph, const partition::FusionGroup& group,
                      const ScheduleParams& params, const BucketInfo& bucket) {
  return Emitter(graph, group, params, bucket).run();
}

KernelSource emitTranspose(ir::DType dtype) {
  if (dtype != DType::kFloat16 && dtype != DType::kBFloat16 && dtype != DType::kFloat32)
    throw Unsupported(fmt::format("no layout conversion kernel for {}", ir::toString(dtype)));
  std::string body = fmt::format("// kiln layout conversion kernel (codegen v{}), {}\n",
                                 kCodegenVersion, ir::toString(dtype));
  if (dtype == DType::kFloat16) body += "#include <cuda_fp16.h>\n";
  if (dtype == DType::kBFloat16) body += "#include <cuda_bf16.h>\n";
  for (std::string_view file : {"kiln_abi.cuh", "kiln_transpose.cuh"}) {
    const std::string_view text = helperText(file);
    KILN_CHECK(!text.empty(), "device helper {} is not embedded", file);
    body += text;
    if (text.back() != '\n') body += '\n';
  }
  body += fmt::format(
      "\nextern \"C\" __global__ void __launch_bounds__({}) {}(const KilnArgs args) {{\n"
      "  kiln_batched_transpose<{}>(args);\n}}\n",
      kTransposeBlock, kNamePlaceholder, storageType(dtype));
  return finishKernelSource(std::move(body), fmt::format("kiln_transpose_{}", ir::toString(dtype)));
}

KernelSource emitConvBnFold(ir::DType weight, ir::DType params, ir::DType out, float eps) {
  bool f16 = false, bf16 = false;
  for (DType d : {weight, params, out}) {
    if (d != DType::kFloat16 && d != DType::kBFloat16 && d != DType::kFloat32)
      throw Unsupported(fmt::format("no batchnorm fold kernel for {}", ir::toString(d)));
    f16 = f16 || d == DType::kFloat16;
    bf16 = bf16 || d == DType::kBFloat16;
  }
  std::string body =
      fmt::format("// kiln batchnorm fold kernel (codegen v{}): {} weight, {} params, {} out\n",
                  kCodegenVersion, ir::toString(weight), ir::toString(params), ir::toString(out));
  if (f16) body += "#include <cuda_fp16.h>\n";
  if (bf16) body += "#include <cuda_bf16.h>\n";
  std::vector<std::string_view> files = {"kiln_abi.cuh"};
  if (f16) files.push_back("kiln_f16.cuh");
  if (bf16) files.push_back("kiln_bf16.cuh");
  files.push_back("kiln_load_store.cuh");
  files.push_back("kiln_fold.cuh");
  for (std::string_view file : files) {
    const std::string_view text = helperText(file);
    KILN_CHECK(!text.empty(), "device helper {} is not embedded", file);
    body += text;
    if (text.back() != '\n') body += '\n';
  }
  if (!std::isfinite(eps)) throw Unsupported(fmt::format("batchnorm eps {} is not finite", eps));
  // Nine significant digits read back as the same float.
  body += fmt::format(
      "\nextern \"C\" __global__ void __launch_bounds__({}) {}(const KilnArgs args) {{\n"
      "  kiln_fold_conv_bn<{}, {}, {}>(args, {:.8e}f);\n}}\n",
      kFoldBlock, kNamePlaceholder, storageType(weight), storageType(params), storageType(out),
      eps);
  return finishKernelSource(std::move(body), "kiln_fold_conv_bn");
}

}  // namespace kiln::codegen
