#include <gtest/gtest.h>

#include "src/ir/sym_dim.h"
#include "src/support/error.h"

namespace kiln::ir {
namespace {

const SymDim s0 = SymDim::symbol(0);
const SymDim s1 = SymDim::symbol(1);

TEST(SymDim, ConstantsAndSymbols) {
  EXPECT_TRUE(SymDim(128).isConstant());
  EXPECT_EQ(SymDim(128).constant(), 128);
  EXPECT_EQ(SymDim().constant(), 0);
  EXPECT_FALSE(s0.isConstant());
  EXPECT_EQ(s0.asSymbol(), 0);
  EXPECT_EQ((s0 * SymDim(2)).asSymbol(), std::nullopt);
  EXPECT_THROW(s0.constant(), InternalError);
  EXPECT_EQ((s1 * s0 + s1).symbols(), (std::vector<int>{0, 1}));
}

TEST(SymDim, ArithmeticIsCanonical) {
  EXPECT_EQ(s0 + s1, s1 + s0);
  EXPECT_EQ(s0 * s1, s1 * s0);
  EXPECT_EQ((s0 + SymDim(1)) * (s0 - SymDim(1)), s0 * s0 - SymDim(1));
  EXPECT_EQ(s0 - s0, SymDim(0));
  EXPECT_TRUE((s0 - s0).isConstant());
  EXPECT_NE(s0, s1);
  EXPECT_EQ((s0 * SymDim(3)).hash(), (SymDim(3) * s0).hash());
  EXPECT_NE(s0.hash(), s1.hash());
}

TEST(SymDim, Print) {
  EXPECT_EQ(SymDim(128).toString(), "128");
  EXPECT_EQ(SymDim(-4).toString(), "-4");
  EXPECT_EQ(SymDim(0).toString(), "0");
  EXPECT_EQ(s0.toString(), "s0");
  EXPECT_EQ((s1 * s0).toString(), "s0*s1");
  EXPECT_EQ((s0 * SymDim(128) + SymDim(1)).toString(), "128*s0+1");
  EXPECT_EQ((SymDim(2) * s0 - SymDim(3)).toString(), "2*s0-3");
  EXPECT_EQ((SymDim(0) - s0).toString(), "-s0");
  EXPECT_EQ((s0 * s1 + SymDim(2) * s0 - SymDim(3)).toString(), "s0*s1+2*s0-3");
  EXPECT_EQ((s0 * s0).toString(), "s0*s0");
  EXPECT_EQ(s1.toString([](int id) { return id == 1 ? std::string("seq") : std::string("b"); }),
            "seq");
  EXPECT_EQ(toString(Shape{s0, 128, 768}), "[s0, 128, 768]");
}

TEST(SymDim, ParseRoundTrip) {
  for (SymDim d : {SymDim(7), s0, s0 * s1, s0 * SymDim(128) + SymDim(1), SymDim(2) * s0 - SymDim(3),
                   SymDim(0) - s0 * s1 + s1, SymDim(-5)}) {
    EXPECT_EQ(SymDim::parse(d.toString()), d) << d.toString();
  }
  EXPECT_EQ(SymDim::parse(" s0 * 128 + 1 "), s0 * SymDim(128) + SymDim(1));
  EXPECT_EQ(SymDim::parse("s1*s0"), s0 * s1);
  EXPECT_EQ(SymDim::parse("(s0+1)*2"), SymDim(2) * s0 + SymDim(2));
  EXPECT_EQ(SymDim::parse("batch*2", [](std::string_view n) { return n == "batch" ? 3 : -1; }),
            SymDim::symbol(3) * SymDim(2));
}

TEST(SymDim, ParseErrors) {
  EXPECT_THROW(SymDim::parse(""), UserError);
  EXPECT_THROW(SymDim::parse("s0+"), UserError);
  EXPECT_THROW(SymDim::parse("x0"), UserError);
  EXPECT_THROW(SymDim::parse("(s0"), UserError);
  EXPECT_THROW(SymDim::parse("3 3"), UserError);
  try {
    SymDim::parse("s0 + ?");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("column 6"), std::string::npos) << e.what();
  }
}

TEST(SymDim, DivExact) {
  EXPECT_EQ(SymDim(12).divExact(4), SymDim(3));
  EXPECT_EQ(SymDim(12).divExact(5), std::nullopt);
  EXPECT_EQ(SymDim(12).divExact(0), std::nullopt);
  EXPECT_EQ((s0 * s1 * SymDim(768)).divExact(s0 * s1), SymDim(768));
  EXPECT_EQ((s0 * s1 * SymDim(768)).divExact(SymDim(64)), s0 * s1 * SymDim(12));
  EXPECT_EQ((s0 * SymDim(6)).divExact(s1), std::nullopt);
  EXPECT_EQ((s0 * SymDim(6)).divExact(SymDim(4)), std::nullopt);
  // (s0*s1 + s0) / (s1 + 1) = s0
  EXPECT_EQ((s0 * s1 + s0).divExact(s1 + SymDim(1)), s0);
  EXPECT_EQ((s0 * s0 - SymDim(1)).divExact(s0 - SymDim(1)), s0 + SymDim(1));
  EXPECT_EQ((s0 * s1 + SymDim(1)).divExact(s1), std::nullopt);
}

TEST(SymDim, Evaluate) {
  std::vector<int64_t> vals{3, 5};
  EXPECT_EQ((s0 * s1 + SymDim(2) * s0 - SymDim(1)).evaluate(vals), 20);
  EXPECT_EQ(numel(Shape{s0, 4, s1}).evaluate(vals), 60);
  EXPECT_EQ(numel(Shape{}).evaluate(vals), 1);
  EXPECT_THROW(SymDim::symbol(2).evaluate(vals), UserError);
}

}  // namespace
}  // namespace kiln::ir
