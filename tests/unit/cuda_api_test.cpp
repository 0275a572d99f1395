#include <gtest/gtest.h>

#include "jit/cuda_api.h"
#include "src/support/error.h"

namespace kiln::cuda {
namespace {

TEST(CudaSeam, MissingLibraryIsReportedNotThrown) {
  DriverLoad load = loadDriver("libkiln_no_such_driver.so.1");
  EXPECT_EQ(load.api, nullptr);
  EXPECT_NE(load.reason.find("no CUDA driver"), std::string::npos) << load.reason;
  EXPECT_NE(load.reason.find("libkiln_no_such_driver.so.1"), std::string::npos) << load.reason;
}

TEST(CudaSeam, LibraryWithoutDriverSymbolsIsRejected) {
  // libm is a real shared library without any cu* symbol: the loader must say which are missing.
  DriverLoad load = loadDriver("libm.so.6");
  EXPECT_EQ(load.api, nullptr);
  EXPECT_NE(load.reason.find("lacks cuInit"), std::string::npos) << load.reason;
}

TEST(CudaSeam, ProbeWithoutDriverStillKnowsNvrtc) {
  CudaEnvironment env = probeCuda(nullptr);
  EXPECT_FALSE(env.driverLoaded);
  EXPECT_TRUE(env.devices.empty());
  EXPECT_GE(env.nvrtcVersion, 12000);  // the toolkit kiln builds against is CUDA 12 or newer
  EXPECT_NE(env.describe().find("no GPU"), std::string::npos);
  EXPECT_FALSE(targetArch("", env).has_value());
  EXPECT_EQ(targetArch("sm_90", env).value(), "sm_90");
}

TEST(CudaSeam, ProcessDriverMatchesMachine) {
  // On a machine with a GPU this finds it; without one it reports why. Either way: no throw.
  const DriverApi* api = driver();
  if (api == nullptr) {
    EXPECT_FALSE(driverUnavailableReason().empty());
    EXPECT_FALSE(deviceInfo().has_value());
    GTEST_SKIP() << "no CUDA driver here: " << driverUnavailableReason();
  }
  auto devices = listDevices(*api);
  ASSERT_FALSE(devices.empty());
  EXPECT_GE(devices[0].major, 7);
  EXPECT_EQ(devices[0].arch(), "sm_" + std::to_string(devices[0].major) +
                                   std::to_string(devices[0].minor));
  CudaEnvironment env = probeCuda(api);
  std::printf("kiln device: %s\n", env.describe().c_str());
  EXPECT_EQ(targetArch("", env).value(), devices[0].arch());
}

TEST(CudaSeam, CheckThrowsNamedError) {
  DriverApi fake;  // no functions resolved: names fall back to a generic one
  try {
    check(fake, CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc(&p, n)");
    FAIL();
  } catch (const CudaError& e) {
    EXPECT_EQ(e.call(), "cuMemAlloc(&p, n)");
    EXPECT_EQ(e.code(), static_cast<int>(CUDA_ERROR_OUT_OF_MEMORY));
  }
}

}  // namespace
}  // namespace kiln::cuda
