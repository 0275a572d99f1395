#pragma once
// What the CPU and GPU tests of the real-architecture fixtures (tests/models, make_fixtures.py)
// share: the fixture table, their optimize() options, and their inputs.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/script.h>
#include <torch/torch.h>

#include <kiln/kiln.h>

namespace kiln::testing {

struct Fixture {
  const char* name;
  bool text;              // token ids and an attention mask; else one image batch
  int64_t imageSize = 0;  // images: height = width
};

inline constexpr Fixture kFixtures[] = {
    {"hf_bert", true},        {"hf_gpt2", true},     {"hf_llama", true},
    {"tv_resnet", false, 40}, {"tv_vit", false, 32},
};

// CPU-only fixtures of more architectures (make_fixtures.py --more): T5's encoder, Mistral,
// DeBERTa-v2, XLNet and a small MobileNetV3, each of which needed a lowering or capture fix.
inline constexpr Fixture kMoreFixtures[] = {
    {"hf_t5", true},    {"hf_mistral", true},        {"hf_deberta", true},
    {"hf_xlnet", true}, {"tv_mobilenet", false, 48},
};

// `suffix`: ".pt" for the CPU fixtures (fp32), ".cuda.pt" for the GPU ones (fp16).
inline torch::jit::Module loadFixture(const std::string& dir, const Fixture& f,
                                      const std::string& suffix) {
  auto m = torch::jit::load(dir + "/" + f.name + suffix);
  m.eval();
  return m;
}

// Dynamic batch (and sequence for text), as a server would declare them.
inline kiln::jit::Options fixtureOptions(const Fixture& f, kiln::Session& session) {
  kiln::jit::Options o;
  o.session = &session;
  if (f.text) {
    o.inputNames = {"ids", "mask"};
    o.dynamicDims = {
        {"ids", 0, "batch"}, {"mask", 0, "batch"}, {"ids", 1, "seq"}, {"mask", 1, "seq"}};
  } else {
    o.inputNames = {"x"};
    o.dynamicDims = {{"x", 0, "batch"}};
  }
  return o;
}

// Text: token ids below every fixture's vocabulary and a mask with the last two positions of row 0
// padded. Images: normal noise in `imageType`.
inline std::vector<torch::IValue> fixtureInputs(const Fixture& f, int64_t batch, int64_t seq,
                                                uint64_t seed, torch::Device device,
                                                torch::ScalarType imageType) {
  torch::manual_seed(seed);
  auto on = torch::TensorOptions().device(device);
  if (!f.text) return {torch::randn({batch, 3, f.imageSize, f.imageSize}, on.dtype(imageType))};
  torch::Tensor ids = torch::randint(0, 1000, {batch, seq}, on.dtype(torch::kLong));
  torch::Tensor mask = torch::ones({batch, seq}, on.dtype(torch::kLong));
  if (seq > 2) mask.index_put_({0, torch::indexing::Slice(seq - 2)}, 0);
  return {ids, mask};
}

}  // namespace kiln::testing
