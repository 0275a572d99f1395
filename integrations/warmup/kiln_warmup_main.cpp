// kiln-warmup: fill kiln's kernel cache for a TorchScript model ahead of time, so that a fresh
// process's first forward() compiles nothing. See kWarmupUsage (cli_args.h) for the options.
// Exit status: 0 done, 1 the model could not be warmed up, a linear could not be calibrated
// (--calibrate) or the cache did not keep what was compiled, 2 bad usage.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include "integrations/warmup/cli_args.h"
#include "integrations/warmup/warmup.h"
#include "src/support/version_flag.h"

namespace {

using kiln::warmup::ComboEvent;

// A bar redrawn in place on a terminal; one line per bucket combination otherwise (logs, CI).
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet), tty_(::isatty(STDERR_FILENO) == 1) {}

  void operator()(const ComboEvent& ev) {
    if (quiet_) return;
    if (tty_) {
      constexpr int kWidth = 30;
      int done = ev.index + (ev.done ? 1 : 0);
      int filled = ev.total > 0 ? done * kWidth / ev.total : kWidth;
      compiled_ += ev.kernelsCompiled;
      cached_ += ev.kernelsCached;
      std::string label = ev.label.size() > 40 ? ev.label.substr(0, 37) + "..." : ev.label;
      fmt::print(stderr, "\r\033[K[{}{}] {}/{} buckets, {} compiled, {} cached  {}",
                 std::string(static_cast<size_t>(filled), '#'),
                 std::string(static_cast<size_t>(kWidth - filled), '.'), done, ev.total, compiled_,
                 cached_, ev.done ? "" : label);
      if (ev.done && done == ev.total) fmt::print(stderr, "\n");
      std::fflush(stderr);
    } else if (ev.done) {
      fmt::print(stderr, "kiln-warmup: [{}/{}] {}: {} groups, {} compiled, {} cached{}, {:.2f} s\n",
                 ev.index + 1, ev.total, ev.label, ev.groups, ev.kernelsCompiled, ev.kernelsCached,
                 ev.variantsTried > 0 ? fmt::format(", {} variants tried, {} kernels tuned",
                                                    ev.variantsTried, ev.kernelsTuned)
                                      : std::string(),
                 ev.seconds);
    }
  }

  void abandon() {
    if (tty_ && !quiet_) fmt::print(stderr, "\n");
  }

 private:
  bool quiet_;
  bool tty_;
  int compiled_ = 0;
  int cached_ = 0;
};

std::string firstLine(const std::string& s) {
  return s.substr(0, s.find('\n'));
}

int usageError(const std::string& message) {
  fmt::print(stderr, "kiln-warmup: {} (try --help)\n", message);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> argList(argv + 1, argv + argc);
  kiln::warmup::WarmupArgs args;
  try {
    args = kiln::warmup::parseWarmupArgs(argList);
  } catch (const kiln::UserError& e) {
    return usageError(e.what());
  }
  if (args.help) {
    fmt::print("{}", kiln::warmup::kWarmupUsage);
    return 0;
  }
  if (args.version) {
    kiln::printVersion();
    return 0;
  }
  Progress progress(args.quiet);
  kiln::warmup::WarmupSummary summary;
  try {
    summary = kiln::warmup::runWarmup(args, [&](const ComboEvent& ev) { progress(ev); });
  } catch (const kiln::warmup::UsageError& e) {
    progress.abandon();
    return usageError(e.what());
  } catch (const std::bad_alloc&) {
    progress.abandon();
    fmt::print(stderr, "kiln-warmup: error: out of memory\n");
    return 1;
  } catch (const c10::OutOfMemoryError& e) {
    progress.abandon();
    fmt::print(stderr, "kiln-warmup: error: out of memory: {}\n",
               firstLine(e.what_without_backtrace()));
    return 1;
  } catch (const std::exception& e) {
    progress.abandon();
    fmt::print(stderr, "kiln-warmup: error: {}\n", e.what());
    return 1;
  }
  fmt::print(stderr, "{}", kiln::warmup::toText(summary));
  const std::optional<std::string> problem = kiln::warmup::cacheProblem(summary);
  if (problem) fmt::print(stderr, "kiln-warmup: error: {}\n", *problem);
  const std::optional<std::string> uncalibrated = kiln::warmup::calibrationProblem(summary);
  if (uncalibrated) fmt::print(stderr, "kiln-warmup: error: {}\n", *uncalibrated);
  if (args.summaryJson) {
    std::ofstream out(*args.summaryJson, std::ios::trunc);
    out << kiln::warmup::toJson(summary);
    out.close();
    if (!out) {
      fmt::print(stderr, "kiln-warmup: error: cannot write --summary-json {}\n", *args.summaryJson);
      return 1;
    }
  }
  return problem || uncalibrated ? 1 : 0;
}
