// A user's program: links kiln::kiln through find_package(kiln).
#include <kiln/kiln.h>

#include <cstdio>

int main() {
  kiln::Session session;
  std::printf("kiln consumer: %s\n", session.cudaEnvironment().describe().c_str());
  return session.options().maxPlans > 0 ? 0 : 1;
}
