#pragma once
// kiln's public entry point. See README.md.
#include "jit/runtime/session.h"
#include "kiln/version.h"
#include "src/support/error.h"
#include "src/support/options.h"
#include "jit/runtime/optimize.h"
