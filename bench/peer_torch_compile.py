"""Peer numbers for kiln-bench's workloads: torch.compile (Inductor) from the GPU machine's PyTorch.

Same workloads, sizes and dtypes as bench/kiln_bench.cpp; steady-state medians with CUDA events
after warm-up, inputs rotated. Prints a markdown table. Usage: peer_torch_compile.py [--quick]
"""
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps=20, batch=10):
    """Median per-call time of `batch` back-to-back calls between CUDA events (as kiln-bench)."""
    times = []
    for i in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for b in range(batch):
            fn(i * batch + b)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / batch)
    times.sort()
    return times[len(times) // 2]


def main():
    sizes = [128, 4096] if "--quick" in sys.argv else [128, 4096, 32768]
    workloads = [
        ("pointwise gelu(x*w+b)*sigmoid(x)+x", 4096, 1, 2,
         lambda x, w, b: F.gelu(x * w + b) * torch.sigmoid(x) + x),
        ("add+layernorm+gelu", 4096, 2, 2,
         lambda x, r, w, b: F.gelu(F.layer_norm(x + r, [4096], w, b, 1e-5))),
        ("masked softmax", 1024, 2, 0, lambda x, m: torch.softmax(x * 0.125 + m, -1)),
    ]
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| workload | dtype | n | eager ms | torch.compile ms | first call s |")
    print("|---|---|---|---|---|---|")
    with torch.no_grad():
        for name, cols, n_in, n_par, fn in workloads:
            for dt in (torch.float16, torch.float32):
                for n in sizes:
                    params = [torch.randn(cols, device="cuda", dtype=dt) for _ in range(n_par)]
                    per_set = n * cols * (n_in + 1) * torch.finfo(dt).bits // 8
                    sets = max(1, min(8, (256 << 20) // per_set))
                    inputs = [[torch.randn(n, cols, device="cuda", dtype=dt) for _ in range(n_in)]
                              for _ in range(sets)]
                    torch._dynamo.reset()
                    compiled = torch.compile(fn)
                    t0 = time.perf_counter()
                    compiled(*inputs[0], *params)
                    torch.cuda.synchronize()
                    first = time.perf_counter() - t0
                    for i in range(5):
                        fn(*inputs[i % sets], *params)
                        compiled(*inputs[i % sets], *params)
                    eager = median_ms(lambda i: fn(*inputs[i % sets], *params))
                    comp = median_ms(lambda i: compiled(*inputs[i % sets], *params))
                    label = "fp16" if dt == torch.float16 else "fp32"
                    print(f"| {name} | {label} | {n} | {eager:.4f} | {comp:.4f} | {first:.1f} |",
                          flush=True)


if __name__ == "__main__":
    main()
