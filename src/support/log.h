#pragma once
// Logging through fmt. The level comes from Options (KILN_LOG=off|error|warn|info|debug|trace).
// logOnce() deduplicates by key so that per-call paths (eager fallbacks, cache warnings) say a thing
// once per process instead of once per request.
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace kiln {

enum class LogLevel { kOff = 0, kError, kWarn, kInfo, kDebug, kTrace };

std::string_view toString(LogLevel level);
// Parses "off", "error", "warn", "info", "debug", "trace" (case-insensitive). Throws UserError.
LogLevel parseLogLevel(std::string_view text);

void setLogLevel(LogLevel level);
LogLevel logLevel();

// Where log lines go; tests install a sink to capture them. nullptr restores stderr.
using LogSink = void (*)(LogLevel, std::string_view);
void setLogSink(LogSink sink);

void logMessage(LogLevel level, std::string_view message);
// Returns true if this key had not been logged before (and logs it).
bool logOnce(LogLevel level, std::string_view key, std::string_view message);

template <typename... Args>
void log(LogLevel level, fmt::format_string<Args...> f, Args&&... args) {
  if (level <= logLevel() && level != LogLevel::kOff)
    logMessage(level, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace kiln

#define KILN_LOG_WARN(...) ::kiln::log(::kiln::LogLevel::kWarn, __VA_ARGS__)
#define KILN_LOG_INFO(...) ::kiln::log(::kiln::LogLevel::kInfo, __VA_ARGS__)
#define KILN_LOG_DEBUG(...) ::kiln::log(::kiln::LogLevel::kDebug, __VA_ARGS__)
