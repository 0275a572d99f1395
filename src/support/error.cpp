#include "src/support/error.h"

namespace kiln {

void throwInternal(const char* file, int line, const char* cond, const std::string& msg) {
  throw InternalError(fmt::format("kiln internal error at {}:{}: check '{}' failed{}{}", file,
                                  line, cond, msg.empty() ? "" : ": ", msg));
}

}  // namespace kiln
