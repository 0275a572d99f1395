#include "integrations/warmup/cli_args.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace kiln::warmup {
namespace {

bool isArch(std::string_view s) {
  // sm_XX or sm_XXa (arch-specific features, e.g. sm_90a).
  if (s.size() < 5 || s.substr(0, 3) != "sm_") return false;
  std::string_view num = s.substr(3);
  if (num.back() == 'a') num.remove_suffix(1);
  if (num.size() < 2) return false;
  for (char c : num)
    if (c < '0' || c > '9') return false;
  return true;
}

// --summary-json is written after all the work, so a path that cannot be written is refused
// before any: an existing file must be a writable regular file, a new one needs a writable dir.
void checkSummaryPath(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path p(path);
  if (std::filesystem::exists(p, ec)) {
    if (!std::filesystem::is_regular_file(p, ec))
      throw UsageError(fmt::format("--summary-json {}: exists and is not a regular file", path));
    if (::access(path.c_str(), W_OK) != 0)
      throw UsageError(
          fmt::format("--summary-json {}: not writable ({})", path, std::strerror(errno)));
    return;
  }
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : ".";
  if (!std::filesystem::is_directory(dir, ec))
    throw UsageError(
        fmt::format("--summary-json {}: directory {} does not exist", path, dir.string()));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    throw UsageError(fmt::format("--summary-json {}: cannot create files in {} ({})", path,
                                 dir.string(), std::strerror(errno)));
}

// --buckets NAME=E1,E2,...: edges strictly increasing, >= 1, of a symbol some --input defines.
void parseBucketEdges(const std::string& text, WarmupArgs& out) {
  const size_t eq = text.find('=');
  const std::string name = text.substr(0, eq);
  auto known = std::find_if(out.symbols.begin(), out.symbols.end(),
                            [&](const Symbol& s) { return s.name == name; });
  if (eq == std::string::npos || known == out.symbols.end()) {
    std::vector<std::string> names;
    for (const Symbol& s : out.symbols) names.push_back(s.name);
    throw UsageError(
        fmt::format("--buckets \"{}\": expected NAME=E1,E2,... with NAME one of the "
                    "dynamic dims' symbols [{}]",
                    text, fmt::join(names, ", ")));
  }
  if (out.bucketEdges.count(name)) throw UsageError(fmt::format("--buckets {} given twice", name));
  std::vector<int64_t> edges;
  std::string_view rest = std::string_view(text).substr(eq + 1);
  while (true) {
    const size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    int64_t v = 0;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || end != item.data() + item.size() || v < 1 ||
        v > kMaxWarmupSize || (!edges.empty() && v <= edges.back()))
      throw UsageError(fmt::format(
          "--buckets \"{}\": edge \"{}\" must be an integer in 1..{} above the edge before it",
          text, item, kMaxWarmupSize));
    edges.push_back(v);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  out.bucketEdges[name] = std::move(edges);
}

}  // namespace

WarmupArgs parseWarmupArgs(const std::vector<std::string>& args) {
  WarmupArgs out;
  std::vector<std::string> inputTexts;
  std::vector<std::string> bucketTexts;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::optional<std::string> inlineValue;
    if (flag.rfind("--", 0) == 0) {
      if (size_t eq = flag.find('='); eq != std::string::npos) {
        inlineValue = flag.substr(eq + 1);
        flag = flag.substr(0, eq);
      }
    }
    auto value = [&]() -> std::string {
      if (inlineValue) {
        if (inlineValue->empty()) throw UsageError(fmt::format("{}: empty value", flag));
        return *inlineValue;
      }
      if (i + 1 >= args.size() || args[i + 1].empty())
        throw UsageError(fmt::format("{}: missing value", flag));
      return args[++i];
    };
    auto once = [&](auto& slot) {
      if (slot.has_value()) throw UsageError(fmt::format("{} given twice", flag));
      slot = value();
    };
    if (flag == "--help" || flag == "-h") {
      out.help = true;
      return out;
    } else if (flag == "--version") {
      out.version = true;
      return out;
    } else if (flag == "--model") {
      std::optional<std::string> model;
      if (!out.model.empty()) throw UsageError("--model given twice");
      once(model);
      out.model = *model;
    } else if (flag == "--input") {
      inputTexts.push_back(value());
    } else if (flag == "--cache-dir") {
      once(out.cacheDir);
    } else if (flag == "--arch") {
      once(out.arch);
      if (!isArch(*out.arch))
        throw UsageError(
            fmt::format("--arch \"{}\": expected sm_XX (e.g. sm_80, sm_90, sm_90a)", *out.arch));
    } else if (flag == "--summary-json") {
      once(out.summaryJson);
    } else if (flag == "--buckets") {
      bucketTexts.push_back(value());
    } else if (flag == "--device") {
      once(out.device);
      if (*out.device != "cpu" && *out.device != "cuda")
        throw UsageError(fmt::format("--device \"{}\": expected cpu or cuda", *out.device));
    } else if (flag == "--quiet" || flag == "-q") {
      if (inlineValue) throw UsageError(fmt::format("{} takes no value", flag));
      out.quiet = true;
    } else if (flag == "--tune") {
      if (inlineValue) throw UsageError(fmt::format("{} takes no value", flag));
      out.tune = true;
    } else if (flag == "--precision") {
      if (out.precision) throw UsageError("--precision given twice");
      try {
        out.precision = parsePrecision("--precision", value());
      } catch (const UsageError&) {
        throw;
      } catch (const UserError& e) {
        throw UsageError(e.what());
      }
    } else if (flag == "--calibrate") {
      once(out.calibrate);
    } else if (flag.rfind("-", 0) == 0) {
      throw UsageError(fmt::format("unknown flag {}", flag));
    } else {
      throw UsageError(fmt::format("unexpected argument \"{}\"", flag));
    }
  }
  if (out.model.empty()) throw UsageError("--model is required");
  if (inputTexts.empty()) throw UsageError("at least one --input is required");
  for (const std::string& text : inputTexts) {
    try {
      out.inputs.push_back(parseInputSpec(text));
    } catch (const UsageError&) {
      throw;
    } catch (const UserError& e) {
      throw UsageError(e.what());
    }
  }
  // Note [Tracing in float32] (jit/capture/capture.h): the retype is graph-wide, so the floating
  // inputs share one dtype (integer and bool inputs keep theirs).
  const InputSpec* firstFloat = nullptr;
  for (const InputSpec& in : out.inputs) {
    if (!ir::isFloating(in.dtype)) continue;
    if (firstFloat == nullptr) firstFloat = &in;
    if (in.dtype != firstFloat->dtype)
      throw UsageError(fmt::format(
          "--input {} is {} but --input {} is {}: the floating inputs of a model need one dtype",
          in.name, dtypeName(in.dtype), firstFloat->name, dtypeName(firstFloat->dtype)));
  }
  try {
    out.symbols = assignSymbols(out.inputs);
  } catch (const UsageError&) {
    throw;
  } catch (const UserError& e) {
    throw UsageError(e.what());
  }
  for (const std::string& text : bucketTexts) parseBucketEdges(text, out);
  // Note [Absurd warmup ranges]: the combination count is checked before anything is built.
  int64_t combos = 1;
  for (const Symbol& sym : out.symbols) {
    auto edges = out.bucketEdges.find(sym.name);
    const size_t buckets =
        bucketsIn(sym.lo, sym.hi,
                  edges == out.bucketEdges.end() ? std::vector<int64_t>{} : edges->second)
            .size();
    const InputSpec& in = out.inputs[static_cast<size_t>(sym.uses.front().input)];
    if (buckets == 0)
      throw UsageError(fmt::format(
          "--input {}: dim {} ({}..{}) has no bucket to warm up (dynamic sizes must reach 2; "
          "write a static size instead)",
          in.name, sym.uses.front().dim, sym.lo, sym.hi));
    combos *= static_cast<int64_t>(buckets);
    if (combos > kMaxWarmupCombos)
      throw UsageError(fmt::format(
          "the dynamic dims give more than {} bucket combinations (symbol {} = {}..{} has {} "
          "buckets); narrow the ranges or give --buckets",
          kMaxWarmupCombos, sym.name, sym.lo, sym.hi, buckets));
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(out.model, ec))
    throw UsageError(fmt::format(
        "--model {}: {}", out.model,
        std::filesystem::exists(out.model, ec) ? "not a regular file" : "no such file"));
  if (out.summaryJson) checkSummaryPath(*out.summaryJson);
  if (out.calibrate) {
    if (!std::filesystem::is_regular_file(*out.calibrate, ec))
      throw UsageError(fmt::format(
          "--calibrate {}: {}", *out.calibrate,
          std::filesystem::exists(*out.calibrate, ec) ? "not a regular file" : "no such file"));
    if (out.precision && *out.precision != Precision::kFp8 && *out.precision != Precision::kInt8)
      throw UsageError(
          fmt::format("--calibrate calibrates 8-bit linears: it needs --precision "
                      "fp8 or int8, not {}",
                      toString(*out.precision)));
  }
  if (out.cacheDir) {
    std::filesystem::path dir(*out.cacheDir);
    if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec))
      throw UsageError(fmt::format("--cache-dir {}: exists and is not a directory", *out.cacheDir));
  }
  return out;
}

}  // namespace kiln::warmup
