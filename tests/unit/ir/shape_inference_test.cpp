#include <gtest/gtest.h>

#include "src/ir/shape_inference.h"
#include "src/support/error.h"

namespace kiln::ir {
namespace {

class ShapeInference : public ::testing::Test {
 protected:
  Value* in(DType d, Shape s) { return g.addInput(fmt::format("i{}", n++), {d, std::move(s)}); }
  std::string infer(OpKind k, std::vector<Value*> ins, Attrs attrs = {}) {
    return inferType(k, ins, attrs).toString();
  }
  std::string error(OpKind k, std::vector<Value*> ins, Attrs attrs = {}) {
    try {
      inferType(k, ins, attrs);
    } catch (const UserError& e) {
      return e.what();
    }
    return "no error";
  }
  Graph g;
  int n = 0;
  SymDim s0 = g.newSymbol();
  SymDim s1 = g.newSymbol();
};

TEST_F(ShapeInference, Broadcasting) {
  auto* a = in(DType::kFloat16, {s0, 1, 64});
  auto* b = in(DType::kFloat16, {s1, 64});
  EXPECT_EQ(infer(OpKind::kAdd, {a, b}), "f16[s0, s1, 64]");
  EXPECT_EQ(infer(OpKind::kMul, {a, in(DType::kFloat16, {})}), "f16[s0, 1, 64]");
  auto* c = in(DType::kFloat16, {s1, 32});
  std::string err = error(OpKind::kAdd, {a, c});
  EXPECT_NE(err.find("add("), std::string::npos) << err;
  EXPECT_NE(err.find("64 vs 32"), std::string::npos) << err;
  // Different symbols never broadcast against each other or constants other than 1.
  EXPECT_NE(error(OpKind::kSub, {in(DType::kFloat32, {s0}), in(DType::kFloat32, {s1})}),
            "no error");
  EXPECT_NE(error(OpKind::kSub, {in(DType::kFloat32, {s0}), in(DType::kFloat32, {5})}), "no error");
}

TEST_F(ShapeInference, Promotion) {
  auto* h = in(DType::kFloat16, {4});
  auto* f0 = g.addConstant(2.0, DType::kFloat32);
  auto* i = in(DType::kInt64, {4});
  auto* bf = in(DType::kBFloat16, {4});
  EXPECT_EQ(infer(OpKind::kMul, {h, f0}), "f16[4]");  // rank-0 does not widen
  EXPECT_EQ(infer(OpKind::kMul, {i, f0}), "f32[4]");  // but does cross categories
  EXPECT_EQ(infer(OpKind::kAdd, {h, bf}), "f32[4]");
  EXPECT_EQ(infer(OpKind::kDiv, {i, i}), "f32[4]");
  EXPECT_EQ(infer(OpKind::kLt, {h, f0}), "bool[4]");
  EXPECT_EQ(infer(OpKind::kExp, {i}), "f32[4]");
  EXPECT_EQ(infer(OpKind::kNeg, {i}), "i64[4]");
  auto* cond = in(DType::kBool, {1});
  EXPECT_EQ(infer(OpKind::kWhere, {cond, h, f0}), "f16[4]");
  EXPECT_NE(error(OpKind::kWhere, {h, h, h}).find("condition must be bool"), std::string::npos);
}

TEST_F(ShapeInference, ReductionsAndNormalizations) {
  auto* x = in(DType::kFloat32, {s0, 12, 64});
  EXPECT_EQ(infer(OpKind::kSum, {x}, {{"dims", std::vector<int64_t>{2}}}), "f32[s0, 12]");
  EXPECT_EQ(infer(OpKind::kMean, {x}, {{"dims", std::vector<int64_t>{-1}}, {"keepdim", true}}),
            "f32[s0, 12, 1]");
  EXPECT_EQ(infer(OpKind::kAmax, {x}, {{"dims", std::vector<int64_t>{0, 2}}}), "f32[12]");
  EXPECT_EQ(infer(OpKind::kSum, {x}), "f32[]");
  EXPECT_EQ(infer(OpKind::kSum, {in(DType::kBool, {3})}), "i64[]");
  EXPECT_NE(error(OpKind::kSum, {x}, {{"dims", std::vector<int64_t>{3}}}).find("out of range"),
            std::string::npos);
  EXPECT_EQ(infer(OpKind::kSoftmax, {x}, {{"dim", int64_t{-1}}}), "f32[s0, 12, 64]");
  EXPECT_NE(error(OpKind::kSoftmax, {x}), "no error");  // dim missing
  auto* w = in(DType::kFloat32, {64});
  EXPECT_EQ(infer(OpKind::kLayerNorm, {x, w, w}, {{"normalized_ndim", int64_t{1}}, {"eps", 1e-5}}),
            "f32[s0, 12, 64]");
  EXPECT_NE(
      error(OpKind::kLayerNorm, {x, in(DType::kFloat32, {32})}, {{"normalized_ndim", int64_t{1}}})
          .find("weight must have shape [64]"),
      std::string::npos);
}

TEST_F(ShapeInference, Library) {
  auto* x = in(DType::kFloat16, {s0, s1, 768});
  auto* w = in(DType::kFloat16, {3072, 768});
  auto* b = in(DType::kFloat16, {3072});
  EXPECT_EQ(infer(OpKind::kLinear, {x, w, b}), "f16[s0, s1, 3072]");
  EXPECT_NE(error(OpKind::kLinear, {x, in(DType::kFloat16, {768, 3072})}).find("in_features"),
            std::string::npos);
  auto* q = in(DType::kFloat16, {s0, 12, s1, 64});
  auto* kt = in(DType::kFloat16, {s0, 12, 64, s1});
  EXPECT_EQ(infer(OpKind::kMatMul, {q, kt}), "f16[s0, 12, s1, s1]");
  EXPECT_EQ(infer(OpKind::kMatMul, {in(DType::kFloat16, {64}), in(DType::kFloat16, {64})}),
            "f16[]");
  EXPECT_EQ(infer(OpKind::kMatMul, {q, in(DType::kFloat16, {64})}), "f16[s0, 12, s1]");
  EXPECT_EQ(infer(OpKind::kMatMul, {in(DType::kFloat16, {64}), kt}), "f16[s0, 12, s1]");
  EXPECT_NE(error(OpKind::kMatMul, {q, in(DType::kFloat32, {64, 8})}).find("same dtype"),
            std::string::npos);
  auto* a2 = in(DType::kFloat32, {s0, 16});
  auto* b2 = in(DType::kFloat32, {16, 8});
  EXPECT_EQ(infer(OpKind::kAddmm, {in(DType::kFloat32, {8}), a2, b2}), "f32[s0, 8]");
  auto* a3 = in(DType::kFloat32, {4, s0, 16});
  auto* b3 = in(DType::kFloat32, {4, 16, 8});
  EXPECT_EQ(infer(OpKind::kBmm, {a3, b3}), "f32[4, s0, 8]");
  EXPECT_EQ(infer(OpKind::kBaddbmm, {in(DType::kFloat32, {1, 8}), a3, b3}), "f32[4, s0, 8]");
  auto* v = in(DType::kFloat16, {s0, 12, s1, 32});
  auto* mask = in(DType::kBool, {s1, s1});
  EXPECT_EQ(infer(OpKind::kSdpa, {q, q, v, mask}), "f16[s0, 12, s1, 32]");
  EXPECT_NE(error(OpKind::kSdpa, {q, q, v, in(DType::kBool, {3, s1})}).find("mask"),
            std::string::npos);
}

// Note [Embeddings in kernels]: table [V, H] by ids [..., 1] gives [..., H] in the table's dtype.
TEST_F(ShapeInference, Embedding) {
  auto* w = in(DType::kFloat16, {30522, 768});
  EXPECT_EQ(infer(OpKind::kEmbedding, {w, in(DType::kInt64, {s0, s1, 1})}), "f16[s0, s1, 768]");
  EXPECT_EQ(infer(OpKind::kEmbedding, {w, in(DType::kInt32, {1})}), "f16[768]");
  EXPECT_NE(error(OpKind::kEmbedding, {in(DType::kFloat16, {768}), in(DType::kInt64, {s0, 1})})
                .find("rank 2"),
            std::string::npos);
  EXPECT_NE(error(OpKind::kEmbedding, {w, in(DType::kFloat32, {s0, 1})}).find("int64 or int32"),
            std::string::npos);
  EXPECT_NE(error(OpKind::kEmbedding, {w, in(DType::kInt64, {s0, s1})}).find("size 1"),
            std::string::npos);
  EXPECT_EQ(categoryOf(OpKind::kEmbedding), OpCategory::kGather);
}

TEST_F(ShapeInference, Conv2d) {
  auto* x = in(DType::kFloat32, {s0, 3, 32, 32});
  auto* w = in(DType::kFloat32, {16, 3, 3, 3});
  EXPECT_EQ(
      infer(OpKind::kConv2d, {x, w},
            {{"stride", std::vector<int64_t>{2, 2}}, {"padding", std::vector<int64_t>{1, 1}}}),
      "f32[s0, 16, 16, 16]");
  EXPECT_EQ(infer(OpKind::kConv2d, {x, w, in(DType::kFloat32, {16})}), "f32[s0, 16, 30, 30]");
  auto* xs = in(DType::kFloat32, {1, 3, s1, 8});
  EXPECT_EQ(infer(OpKind::kConv2d, {xs, w}, {{"padding", std::vector<int64_t>{1}}}),
            "f32[1, 16, s1, 8]");
  EXPECT_NE(error(OpKind::kConv2d, {x, in(DType::kFloat32, {16, 4, 3, 3})}).find("input channels"),
            std::string::npos);
}

TEST_F(ShapeInference, ViewsAndExplicitTypes) {
  auto* x = in(DType::kFloat32, {s0, 12, 64});
  EXPECT_EQ(infer(OpKind::kPermute, {x}, {{"perm", std::vector<int64_t>{0, 2, 1}}}),
            "f32[s0, 64, 12]");
  EXPECT_NE(error(OpKind::kPermute, {x}, {{"perm", std::vector<int64_t>{0, 0, 1}}}), "no error");
  EXPECT_EQ(infer(OpKind::kCat, {x, in(DType::kFloat32, {s1, 12, 64})}, {{"dim", int64_t{0}}}),
            "f32[s0+s1, 12, 64]");
  EXPECT_NE(error(OpKind::kCat, {x, in(DType::kFloat32, {s0, 11, 64})}, {{"dim", int64_t{0}}}),
            "no error");
  for (OpKind k :
       {OpKind::kCast, OpKind::kReshape, OpKind::kExpand, OpKind::kSlice, OpKind::kEager})
    EXPECT_NE(error(k, {x}).find("explicitly"), std::string::npos) << toString(k);
  EXPECT_NE(error(OpKind::kAdd, {x}).find("expected 2 operand"), std::string::npos);
}

}  // namespace
}  // namespace kiln::ir
