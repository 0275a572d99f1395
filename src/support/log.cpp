#include "src/support/log.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <mutex>
#include <set>

#include "src/support/error.h"

namespace kiln {
namespace {
std::atomic<LogLevel> gLevel{LogLevel::kWarn};
std::atomic<LogSink> gSink{nullptr};
std::mutex gOnceMutex;
// Leaked: background jobs may log while static destructors run at exit (Note [Background jobs
// at exit] in jit/runtime/session.cpp).
std::set<std::string, std::less<>>& onceKeys() {
  static auto* keys = new std::set<std::string, std::less<>>();
  return *keys;
}
}  // namespace

std::string_view toString(LogLevel level) {
  switch (level) {
    case LogLevel::kOff: return "off";
    case LogLevel::kError: return "error";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
    case LogLevel::kTrace: return "trace";
  }
  return "?";
}

LogLevel parseLogLevel(std::string_view text) {
  std::string lower;
  for (char c : text) lower.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  for (LogLevel l : {LogLevel::kOff, LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo,
                     LogLevel::kDebug, LogLevel::kTrace})
    if (lower == toString(l)) return l;
  if (lower == "warning") return LogLevel::kWarn;
  throw UserError(fmt::format("KILN_LOG: expected one of off|error|warn|info|debug|trace, got '{}'",
                              text));
}

void setLogLevel(LogLevel level) { gLevel.store(level); }
LogLevel logLevel() { return gLevel.load(); }
void setLogSink(LogSink sink) { gSink.store(sink); }

void logMessage(LogLevel level, std::string_view message) {
  if (LogSink sink = gSink.load()) {
    sink(level, message);
    return;
  }
  std::fprintf(stderr, "[kiln %s] %.*s\n", std::string(toString(level)).c_str(),
               static_cast<int>(message.size()), message.data());
}

bool logOnce(LogLevel level, std::string_view key, std::string_view message) {
  {
    std::lock_guard<std::mutex> lock(gOnceMutex);
    if (!onceKeys().emplace(key).second) return false;
  }
  if (level <= logLevel() && level != LogLevel::kOff) logMessage(level, message);
  return true;
}

}  // namespace kiln
