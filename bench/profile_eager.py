"""Kernel-level profile of the eager models (torch.profiler, CUDA activities) on the GPU machine:
which cuBLAS/SDPA kernels eager LibTorch runs and for how long. kiln's library steps make the same
ATen calls, so this names the kernels behind kiln-bench --profile's "library" lines.

Usage: profile_eager.py MODELS_DIR [--n 32768] [--dtype fp16]
"""
import argparse
import os

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models_dir")
    ap.add_argument("--n", type=int, default=32768)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "fp32"])
    args = ap.parse_args()
    dt = torch.float16 if args.dtype == "fp16" else torch.float32
    dev = torch.device("cuda")
    b = args.n // 128
    cases = {
        "mlp.pt": (torch.randn(b, 128, 1024, device=dev, dtype=dt),),
        "encoder_block.pt": (torch.randn(b, 128, 768, device=dev, dtype=dt),
                             torch.zeros(b, 1, 128, 128, device=dev, dtype=dt)),
    }
    for name, inputs in cases.items():
        m = torch.jit.load(os.path.join(args.models_dir, name)).to(dev, dt).eval()
        with torch.no_grad():
            for _ in range(5):
                m(*inputs)
            torch.cuda.synchronize()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                for _ in range(10):
                    m(*inputs)
                torch.cuda.synchronize()
        print(f"\n### eager {name}, {args.dtype}, n={args.n} (10 calls)\n```")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=20, max_name_column_width=90))
        print("```")
    bare_gemms(args.n, dt)


def bare_gemms(n, dt):
    """The MLP's two GEMMs alone (F.linear with bias), CUDA-event medians of 10 back-to-back
    calls: what the library steps of kiln-bench --profile and eager's kernels can be held to."""
    dev = torch.device("cuda")
    print(f"\n### bare F.linear, {dt}, n={n}\n\n| GEMM | ms |\n|---|---|")
    for name, (k, m) in {"fc1 1024->4096": (1024, 4096), "fc2 4096->1024": (4096, 1024)}.items():
        x = torch.randn(n, k, device=dev, dtype=dt)
        w = torch.randn(m, k, device=dev, dtype=dt)
        b = torch.randn(m, device=dev, dtype=dt)
        for _ in range(5):
            torch.nn.functional.linear(x, w, b)
        times = []
        for _ in range(20):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                torch.nn.functional.linear(x, w, b)
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop) / 10)
        times.sort()
        print(f"| {name} | {times[len(times) // 2]:.4f} |")


if __name__ == "__main__":
    main()
