#pragma once
// Errors by cause (Note [Error kinds]).
//
// Note [Error kinds]
//   UserError      bad model or input; names the input, expected vs got. Never retried.
//   Unsupported    something kiln cannot lower/fuse/compile yet; caught by the partitioner or plan
//                  builder, which falls back to eager for that piece and logs once.
//   CompileError   NVRTC rejected generated source; carries source, options and log.
//   CudaError      a driver call failed; carries the CUresult name and the call.
//   InternalError  a bug in kiln. KILN_CHECK raises it with file:line.
// No error path may return a wrong tensor: whoever catches Unsupported/CompileError must run the
// affected work eagerly or rethrow.
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

namespace kiln {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class UserError : public Error {
 public:
  using Error::Error;
};

class Unsupported : public Error {
 public:
  using Error::Error;
};

class CompileError : public Error {
 public:
  CompileError(std::string what, std::string source, std::vector<std::string> options,
               std::string log)
      : Error(std::move(what)),
        source_(std::move(source)),
        options_(std::move(options)),
        log_(std::move(log)) {}
  const std::string& source() const { return source_; }
  const std::vector<std::string>& options() const { return options_; }
  const std::string& log() const { return log_; }

 private:
  std::string source_;
  std::vector<std::string> options_;
  std::string log_;
};

class CudaError : public Error {
 public:
  CudaError(std::string call, int code, std::string codeName, std::string detail = {})
      : Error(fmt::format("CUDA driver call {} failed: {} ({}){}{}", call, codeName, code,
                          detail.empty() ? "" : ": ", detail)),
        call_(std::move(call)),
        code_(code),
        codeName_(std::move(codeName)) {}
  const std::string& call() const { return call_; }
  int code() const { return code_; }
  const std::string& codeName() const { return codeName_; }

 private:
  std::string call_;
  int code_;
  std::string codeName_;
};

class InternalError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throwInternal(const char* file, int line, const char* cond, const std::string& msg);

}  // namespace kiln

// KILN_CHECK(cond, "fmt {}", args...): an invariant of kiln itself; failure is an InternalError.
#define KILN_CHECK(cond, ...)                                                          \
  do {                                                                                 \
    if (!(cond)) ::kiln::throwInternal(__FILE__, __LINE__, #cond, fmt::format(__VA_ARGS__)); \
  } while (0)

// KILN_USER_CHECK(cond, "fmt {}", args...): a precondition on what the user passed in.
#define KILN_USER_CHECK(cond, ...)                                        \
  do {                                                                    \
    if (!(cond)) throw ::kiln::UserError(fmt::format(__VA_ARGS__));       \
  } while (0)
