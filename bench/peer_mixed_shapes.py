"""Peer numbers for kiln-mixed-bench: torch.compile(dynamic=True) on the same mixed-shape stream.

Same two workloads (add+layernorm+gelu on [batch*seq, 4096]; the encoder block, rebuilt from
scripts/export_models.py with the same seed), fp16 on CUDA, and the same (batch, seq) stream: the
LCG of Note [Mixed-shape stream] in bench/mixed_shapes.cpp. Every call is timed on the host with
torch.cuda.synchronize() after it, compiles included; steady state = the second half of the stream.
Eager PyTorch is printed beside it as the baseline. Prints a markdown table.
Usage: peer_mixed_shapes.py [--quick] [--calls N] [--seed S]
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from export_models import EncoderBlock  # noqa: E402

MASK64 = (1 << 64) - 1


def make_stream(calls, seed):
    """(batch, seq) pairs; must match makeStream in bench/mixed_shapes.cpp exactly."""
    state = seed

    def uniform(lo, hi):
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) & MASK64
        return (state >> 33) % (hi - lo + 1) + lo

    stream = []
    for _ in range(calls):
        batch = uniform(1, 32)
        seq = uniform(16, 512)
        stream.append((batch, seq))
    return stream


def percentile(values, p):
    """Nearest rank, as in bench/mixed_shapes.cpp."""
    v = sorted(values)
    return v[max(math.ceil(p * len(v)), 1) - 1]


def unique_graphs():
    try:
        return torch._dynamo.utils.counters["stats"]["unique_graphs"]
    except Exception:  # noqa: BLE001 - internal counters move between releases
        return None


def run_stream(fn, make_inputs, stream):
    torch.manual_seed(1)
    ms = []
    last_in, last_out = None, None
    for call in stream:
        inputs = make_inputs(*call)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*inputs)
        torch.cuda.synchronize()
        ms.append((time.perf_counter() - t0) * 1e3)
        last_in, last_out = inputs, out
    return ms, last_in, last_out


def print_row(workload, contender, ms, compiles, notes):
    steady = ms[len(ms) // 2:]
    total = sum(ms) * 1e-3
    print(f"| {workload} | {contender} | {len(ms)} | {total:.3f} | {percentile(ms, 0.5):.3f} | "
          f"{percentile(ms, 0.99):.3f} | {percentile(steady, 0.5):.3f} | "
          f"{percentile(steady, 0.99):.3f} | {compiles} | {notes} |", flush=True)


def workloads():
    half = dict(device="cuda", dtype=torch.float16)
    torch.manual_seed(0)
    w, b = torch.randn(4096, **half), torch.randn(4096, **half)

    def add_ln_gelu(x, r):
        return F.gelu(F.layer_norm(x + r, [4096], w, b, 1e-5))

    def add_ln_gelu_inputs(batch, seq):
        n = batch * seq
        return torch.randn(n, 4096, **half), torch.randn(n, 4096, **half)

    # Same weights as models/encoder_block.pt: export_models.py seeds 0 and builds this first.
    torch.backends.mha.set_fastpath_enabled(False)
    torch.manual_seed(0)
    encoder = EncoderBlock().cuda().half().eval()

    def encoder_inputs(batch, seq):
        return (torch.randn(batch, seq, 768, **half),
                torch.zeros(batch, 1, seq, seq, **half))

    return [
        ("add+layernorm+gelu [batch*seq, 4096]", add_ln_gelu, add_ln_gelu_inputs),
        ("encoder block [batch, seq, 768]", encoder, encoder_inputs),
    ]


def main():
    calls, seed = 300, 1
    args = sys.argv[1:]
    i = 0
    while i < len(args):
        if args[i] == "--quick":
            calls = 100
        elif args[i] == "--calls" and i + 1 < len(args):
            i += 1
            calls = max(2, int(args[i]))
        elif args[i] == "--seed" and i + 1 < len(args):
            i += 1
            seed = int(args[i])
        else:
            print("usage: peer_mixed_shapes.py [--quick] [--calls N] [--seed S]", file=sys.stderr)
            return 2
        i += 1
    if not torch.cuda.is_available():
        print("peer_mixed_shapes.py: needs a GPU", file=sys.stderr)
        return 1
    stream = make_stream(calls, seed)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    first = " ".join(f"({b}, {s})" for b, s in stream[:5])
    print(f"stream: LCG seed {seed}, {calls} calls, batch 1..32, seq 16..512; "
          f"first (batch, seq): {first}\n")
    print("| workload | contender | calls | total s | p50 ms | p99 ms | steady p50 ms | "
          "steady p99 ms | compiles | notes |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with torch.no_grad():
        a = torch.randn(256, 256, device="cuda", dtype=torch.float16)
        torch.matmul(a, a)  # CUDA context and cuBLAS warm-up outside any contender's numbers
        torch.cuda.synchronize()
        for name, fn, make_inputs in workloads():
            ms, _, _ = run_stream(fn, make_inputs, stream)
            print_row(name, "eager PyTorch", ms, "-", "")

            torch._dynamo.reset()
            before = unique_graphs()
            compiled = torch.compile(fn, dynamic=True)
            ms, last_in, last_out = run_stream(compiled, make_inputs, stream)
            after = unique_graphs()
            compiles = "n/a" if before is None or after is None else str(after - before)
            err = (last_out.float() - fn(*last_in).float()).abs().max().item()
            print_row(name, "torch.compile(dynamic=True)", ms, compiles,
                      f"compiles = dynamo unique_graphs; last call max err {err:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
