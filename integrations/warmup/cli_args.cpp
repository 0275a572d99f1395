#include "integrations/warmup/cli_args.h"

#include <filesystem>
#include <string_view>

#include <fmt/format.h>

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

}  // namespace

WarmupArgs parseWarmupArgs(const std::vector<std::string>& args) {
  WarmupArgs out;
  std::vector<std::string> inputTexts;
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
    } else if (flag == "--quiet" || flag == "-q") {
      if (inlineValue) throw UsageError(fmt::format("{} takes no value", flag));
      out.quiet = true;
    } else if (flag == "--tune") {
      if (inlineValue) throw UsageError(fmt::format("{} takes no value", flag));
      out.tune = true;
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
  // Note [Tracing in float32] (jit/capture/capture.h): the retype is graph-wide.
  for (const InputSpec& in : out.inputs) {
    const InputSpec& first = out.inputs.front();
    if (in.dtype != first.dtype)
      throw UsageError(fmt::format(
          "--input {} is {} but --input {} is {}: kiln-warmup traces in float32 and retypes the "
          "whole graph, so every input needs the same dtype",
          in.name, dtypeName(in.dtype), first.name, dtypeName(first.dtype)));
  }
  try {
    out.symbols = assignSymbols(out.inputs);
  } catch (const UsageError&) {
    throw;
  } catch (const UserError& e) {
    throw UsageError(e.what());
  }
  for (const Symbol& sym : out.symbols) {
    if (bucketEdgesIn(sym.lo, sym.hi).empty()) {
      const InputSpec& in = out.inputs[static_cast<size_t>(sym.uses.front().input)];
      throw UsageError(fmt::format(
          "--input {}: dim {} ({}..{}) has no bucket to warm up (dynamic sizes must reach 2; "
          "write a static size instead)",
          in.name, sym.uses.front().dim, sym.lo, sym.hi));
    }
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(out.model, ec))
    throw UsageError(fmt::format(
        "--model {}: {}", out.model,
        std::filesystem::exists(out.model, ec) ? "not a regular file" : "no such file"));
  if (out.cacheDir) {
    std::filesystem::path dir(*out.cacheDir);
    if (std::filesystem::exists(dir, ec) && !std::filesystem::is_directory(dir, ec))
      throw UsageError(fmt::format("--cache-dir {}: exists and is not a directory", *out.cacheDir));
  }
  return out;
}

}  // namespace kiln::warmup
