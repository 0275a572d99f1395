// A user's program: links kiln::kiln through find_package(kiln).
#include <kiln/kiln.h>

#include <cstdio>
#include <string_view>

int main() {
  kiln::Session session;
  // kiln/version.h is generated at build time and installed beside kiln.h (Note [Versions]).
  const std::string_view version = kiln::version();
  std::printf("kiln consumer: %.*s, %s\n", static_cast<int>(version.size()), version.data(),
              session.cudaEnvironment().describe().c_str());
  return session.options().maxPlans > 0 ? 0 : 1;
}
