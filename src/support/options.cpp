#include "src/support/options.h"

#include <cctype>
#include <charconv>
#include <cstdlib>
#include <limits>

#include "src/support/error.h"

namespace kiln {
namespace {

std::string lowerTrim(std::string_view text) {
  size_t b = 0, e = text.size();
  while (b < e && std::isspace(static_cast<unsigned char>(text[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
  std::string out;
  for (size_t i = b; i < e; ++i)
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(text[i]))));
  return out;
}

}  // namespace

std::string_view toString(TuneMode mode) {
  switch (mode) {
    case TuneMode::kOff: return "off";
    case TuneMode::kBackground: return "background";
    case TuneMode::kEager: return "eager";
  }
  return "?";
}

std::string_view toString(ConvLayout layout) {
  switch (layout) {
    case ConvLayout::kAuto: return "auto";
    case ConvLayout::kChannelsLast: return "channels_last";
    case ConvLayout::kContiguous: return "contiguous";
  }
  return "?";
}

std::string_view toString(Precision precision) {
  switch (precision) {
    case Precision::kModule: return "module";
    case Precision::kFloat16: return "fp16";
    case Precision::kBFloat16: return "bf16";
    case Precision::kFp8: return "fp8";
    case Precision::kInt8: return "int8";
  }
  return "?";
}

EnvLookup processEnvironment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

bool parseBool(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  if (t == "1" || t == "true" || t == "on" || t == "yes") return true;
  if (t == "0" || t == "false" || t == "off" || t == "no") return false;
  throw UserError(fmt::format("{}: expected 0/1, true/false, on/off or yes/no, got '{}'", what, text));
}

int64_t parseInt(std::string_view what, std::string_view text, int64_t min, int64_t max) {
  std::string t = lowerTrim(text);
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size())
    throw UserError(fmt::format("{}: expected an integer, got '{}'", what, text));
  if (v < min || v > max)
    throw UserError(fmt::format("{}: expected a value in [{}, {}], got {}", what, min, max, v));
  return v;
}

double parseFraction(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  double v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size() || !(v > 0 && v <= 1))
    throw UserError(fmt::format("{}: expected a number in (0, 1], got '{}'", what, text));
  return v;
}

uint64_t parseByteSize(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  if (!t.empty() && t.back() == 'b') t.pop_back();  // "512MB" -> "512M"
  uint64_t mult = 1;
  if (!t.empty()) {
    switch (t.back()) {
      case 'k': mult = 1ull << 10; break;
      case 'm': mult = 1ull << 20; break;
      case 'g': mult = 1ull << 30; break;
      case 't': mult = 1ull << 40; break;
      default: break;
    }
    if (mult != 1) t.pop_back();
  }
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size())
    throw UserError(fmt::format("{}: expected a byte size such as 1048576, 512M or 2G, got '{}'",
                                what, text));
  if (v > std::numeric_limits<uint64_t>::max() / mult)
    throw UserError(fmt::format("{}: byte size '{}' is too large", what, text));
  return v * mult;
}

bool parseAutoOff(std::string_view what, std::string_view text) {
  const std::string t = lowerTrim(text);
  if (t != "auto" && t != "off")
    throw UserError(fmt::format("{}: expected auto or off, got '{}'", what, text));
  return t == "auto";
}

TuneMode parseTuneMode(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  for (TuneMode m : {TuneMode::kOff, TuneMode::kBackground, TuneMode::kEager})
    if (t == toString(m)) return m;
  throw UserError(fmt::format("{}: expected off, background or eager, got '{}'", what, text));
}

ConvLayout parseConvLayout(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  for (ConvLayout l : {ConvLayout::kAuto, ConvLayout::kChannelsLast, ConvLayout::kContiguous})
    if (t == toString(l)) return l;
  throw UserError(
      fmt::format("{}: expected auto, channels_last or contiguous, got '{}'", what, text));
}

Precision parsePrecision(std::string_view what, std::string_view text) {
  std::string t = lowerTrim(text);
  if (t == "module") return Precision::kModule;
  if (t == "fp16" || t == "float16" || t == "half") return Precision::kFloat16;
  if (t == "bf16" || t == "bfloat16") return Precision::kBFloat16;
  if (t == "fp8" || t == "float8" || t == "e4m3") return Precision::kFp8;
  if (t == "int8") return Precision::kInt8;
  throw UserError(
      fmt::format("{}: expected module, fp16, bf16, fp8 or int8, got '{}'", what, text));
}

Options applyEnvironment(Options o, const EnvLookup& env) {
  if (auto v = env("KILN_LOG")) o.logLevel = parseLogLevel(*v);
  if (auto v = env("KILN_DISABLE")) o.disable = parseBool("KILN_DISABLE", *v);
  if (auto v = env("KILN_CACHE_DIR")) {
    // Set but empty is a mistake (an unset variable in a unit file), not a request for the default.
    if (v->empty())
      throw UserError(
          "KILN_CACHE_DIR: set but empty; unset it to use the default cache directory");
    o.cacheDir = *v;
  }
  if (auto v = env("KILN_DISK_CACHE")) o.diskCache = parseBool("KILN_DISK_CACHE", *v);
  if (auto v = env("KILN_CACHE_MAX_BYTES"))
    o.cacheMaxBytes = parseByteSize("KILN_CACHE_MAX_BYTES", *v);
  if (auto v = env("KILN_ARCH")) {
    std::string a = lowerTrim(*v);
    bool ok = a.size() >= 5 && a.rfind("sm_", 0) == 0;
    for (size_t i = 3; ok && i < a.size(); ++i)
      ok = std::isdigit(static_cast<unsigned char>(a[i])) || (i + 1 == a.size() && a[i] == 'a');
    if (!ok) throw UserError(fmt::format("KILN_ARCH: expected an arch such as sm_90, got '{}'", *v));
    o.arch = a;
  }
  if (auto v = env("KILN_COMPILE_THREADS"))
    o.compileThreads = static_cast<int>(parseInt("KILN_COMPILE_THREADS", *v, 0, 1024));
  if (auto v = env("KILN_MAX_PLANS"))
    o.maxPlans = static_cast<int>(parseInt("KILN_MAX_PLANS", *v, 1, 1 << 20));
  if (auto v = env("KILN_BACKGROUND_COMPILE"))
    o.backgroundCompile = parseBool("KILN_BACKGROUND_COMPILE", *v);
  if (auto v = env("KILN_SHAPE_CACHE")) o.shapeOnlyCache = parseBool("KILN_SHAPE_CACHE", *v);
  if (auto v = env("KILN_CUDA_GRAPHS")) o.cudaGraphs = parseAutoOff("KILN_CUDA_GRAPHS", *v);
  if (auto v = env("KILN_COMPARE_MODULE"))
    o.compareModule = parseAutoOff("KILN_COMPARE_MODULE", *v);
  if (auto v = env("KILN_PREWARM")) o.libraryPrewarm = parseAutoOff("KILN_PREWARM", *v);
  if (auto v = env("KILN_FOLD_KERNEL")) o.foldKernel = parseAutoOff("KILN_FOLD_KERNEL", *v);
  if (auto v = env("KILN_MERGE_LINEARS"))
    o.mergeLinears = parseAutoOff("KILN_MERGE_LINEARS", *v);
  if (auto v = env("KILN_TUNE")) o.tune = parseTuneMode("KILN_TUNE", *v);
  if (auto v = env("KILN_TUNE_THRESHOLD"))
    o.tuneThreshold = static_cast<int>(parseInt("KILN_TUNE_THRESHOLD", *v, 1, 1 << 30));
  if (auto v = env("KILN_TUNE_MAX_VARIANTS"))
    o.tuneMaxVariants = static_cast<int>(parseInt("KILN_TUNE_MAX_VARIANTS", *v, 0, 4096));
  if (auto v = env("KILN_TUNE_SECONDS"))
    o.tuneSeconds = static_cast<int>(parseInt("KILN_TUNE_SECONDS", *v, 1, 24 * 3600));
  if (auto v = env("KILN_CONV_LAYOUT")) o.convLayout = parseConvLayout("KILN_CONV_LAYOUT", *v);
  if (auto v = env("KILN_PRECISION")) o.precision = parsePrecision("KILN_PRECISION", *v);
  if (auto v = env("KILN_QUANT_CALIBRATION_CALLS"))
    o.quantCalibrationCalls =
        static_cast<int>(parseInt("KILN_QUANT_CALIBRATION_CALLS", *v, 1, 1 << 20));
  if (auto v = env("KILN_QUANT_MAX_ERROR"))
    o.quantMaxError = parseFraction("KILN_QUANT_MAX_ERROR", *v);
  if (auto v = env("KILN_QUANT_EMULATE")) o.quantEmulate = parseBool("KILN_QUANT_EMULATE", *v);
  if (auto v = env("KILN_GEMM")) o.kilnGemm = parseBool("KILN_GEMM", *v);
  if (auto v = env("KILN_FIRST_CALL_GEMM"))
    o.firstCallGemm = parseAutoOff("KILN_FIRST_CALL_GEMM", *v);
  if (auto v = env("KILN_POISON_OUTPUTS")) o.poisonOutputs = parseBool("KILN_POISON_OUTPUTS", *v);
  if (auto v = env("KILN_STRICT")) o.strict = parseBool("KILN_STRICT", *v);
  return o;
}

}  // namespace kiln
