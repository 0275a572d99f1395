#pragma once
// A temporary directory for tests that link LibTorch. Removed with `rm -rf`, not
// std::filesystem::remove_all: libtorch.so exports its own remove_all, which the dynamic linker
// binds in such binaries and which crashes on this toolchain (see tests/integration/warmup).
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <stdlib.h>

namespace kiln::testing {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& prefix = "kiln-test") {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~ScratchDir() { (void)std::system(("rm -rf '" + path_ + "'").c_str()); }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace kiln::testing
