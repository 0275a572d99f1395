"""Probes of library-call alternatives on the GPU machine, behind kiln's choices around ATen's
GEMM and conv steps (issue 9). Eager PyTorch only; CUDA-event medians after warm-up.

1. CNN block convs (64 ch, 56x56, 3x3): NCHW as kiln runs them today (cuDNN with bias, residual
   and relu in the epilogue) against channels-last, with and without the layout conversions at
   entry and exit, and the host time per call at batch 1 (where the block is launch-bound).
2. The erf-gelu MLP (n x 1024 -> 4096 -> 1024): fc1, gelu, fc2 over the whole batch against the
   same three steps over row chunks, so that fc1's output stays in L2 for the gelu and for fc2.

Usage: probe_library.py [--only cnn,mlp]
"""
import argparse
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps=30, inner=10):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / inner)
    times.sort()
    return times[len(times) // 2]


def host_us(fn, calls=2000):
    """Host time per call when the GPU keeps up: the launch cost a small batch pays."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def probe_cnn():
    dev = torch.device("cuda")
    print("\n### CNN block convs (64 ch, 56x56, 3x3, pad 1), median ms of the two convs + epilogues\n")
    print("| dtype | batch | NCHW conv+kernel-like | NCHW cuDNN epilogue | CL in->out (both convert) "
          "| CL, no exit convert | CL only convs | NCHW host us/call | CL host us/call |")
    print("|---|---|---|---|---|---|---|---|---|")
    singles = {}
    for dt in (torch.float16, torch.float32):
        for n in (1, 32):
            torch.manual_seed(0)
            x = torch.randn(n, 64, 56, 56, device=dev, dtype=dt)
            w1 = torch.randn(64, 64, 3, 3, device=dev, dtype=dt) * 0.05
            w2 = torch.randn(64, 64, 3, 3, device=dev, dtype=dt) * 0.05
            b1 = torch.randn(64, device=dev, dtype=dt)
            b2 = torch.randn(64, device=dev, dtype=dt)
            w1c = w1.contiguous(memory_format=torch.channels_last)
            w2c = w2.contiguous(memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)
            cr = torch.ops.aten.cudnn_convolution_relu
            car = torch.ops.aten.cudnn_convolution_add_relu
            s, p, d = [1, 1], [1, 1], [1, 1]

            def plain():
                y = torch.relu(F.conv2d(x, w1, None, 1, 1) + b1.view(64, 1, 1))
                return torch.relu(F.conv2d(y, w2, None, 1, 1) + b2.view(64, 1, 1) + x)

            def nchw_epi():
                y = cr(x, w1, b1, s, p, d, 1)
                return car(y, w2, x, 1.0, b2, s, p, d, 1)

            def cl_both():
                xi = x.contiguous(memory_format=torch.channels_last)
                y = cr(xi, w1c, b1, s, p, d, 1)
                return car(y, w2c, xi, 1.0, b2, s, p, d, 1).contiguous()

            def cl_entry():
                xi = x.contiguous(memory_format=torch.channels_last)
                y = cr(xi, w1c, b1, s, p, d, 1)
                return car(y, w2c, xi, 1.0, b2, s, p, d, 1)

            def cl_only():
                y = cr(xc, w1c, b1, s, p, d, 1)
                return car(y, w2c, xc, 1.0, b2, s, p, d, 1)

            ref = plain().float()
            for f in (nchw_epi, cl_both, cl_entry, cl_only):
                err = (f().float() - ref).abs().max().item()
                assert err < (0.05 if dt == torch.float16 else 1e-2), (f.__name__, err)
            row = [median_ms(f) for f in (plain, nchw_epi, cl_both, cl_entry, cl_only)]
            hosts = [host_us(nchw_epi), host_us(cl_both)] if n == 1 else [float("nan")] * 2
            name = "fp16" if dt == torch.float16 else "fp32"
            print(f"| {name} | {n} | " + " | ".join(f"{v:.4f}" for v in row) + " | "
                  + " | ".join(f"{v:.1f}" for v in hosts) + " |")
            if n == 1:  # measured now: the lambdas read this iteration's tensors
                calls = {
                    "F.conv2d(x, w, b)": lambda: F.conv2d(x, w1, b1, 1, 1),
                    "F.conv2d(x, w) (no bias)": lambda: F.conv2d(x, w1, None, 1, 1),
                    "cudnn_convolution_relu": lambda: cr(x, w1, b1, s, p, d, 1),
                    "cudnn_convolution_add_relu": lambda: car(x, w1, x, 1.0, b1, s, p, d, 1),
                    "cudnn_convolution_relu, CL": lambda: cr(xc, w1c, b1, s, p, d, 1),
                    "torch.relu(x) (one small kernel)": lambda: torch.relu(x),
                }
                singles[name] = {call: host_us(f) for call, f in calls.items()}
    print("\n### Host time per call at batch 1 (us, Python loop, GPU keeping up)\n")
    print("| call | " + " | ".join(singles) + " |\n|---|" + "---|" * len(singles))
    for call in next(iter(singles.values())):
        print(f"| {call} | " + " | ".join(f"{singles[k][call]:.1f}" for k in singles)
              + " |")


def probe_mlp():
    dev = torch.device("cuda")
    dt = torch.float16
    n = 32768
    torch.manual_seed(0)
    x = torch.randn(n, 1024, device=dev, dtype=dt)
    w1 = torch.randn(4096, 1024, device=dev, dtype=dt) * 0.03
    b1 = torch.randn(4096, device=dev, dtype=dt)
    w2 = torch.randn(1024, 4096, device=dev, dtype=dt) * 0.015
    b2 = torch.randn(1024, device=dev, dtype=dt)

    def whole():
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)

    def chunked(rows):
        h = torch.empty(rows, 4096, device=dev, dtype=dt)
        out = torch.empty(n, 1024, device=dev, dtype=dt)

        def run():
            for r in range(0, n, rows):
                xs = x[r:r + rows]
                torch.addmm(b1, xs, w1.t(), out=h[:xs.shape[0]])
                torch.ops.aten.gelu_(h[:xs.shape[0]])
                torch.addmm(b2, h[:xs.shape[0]], w2.t(), out=out[r:r + rows])
            return out
        return run

    ref = whole().float()
    print(f"\n### erf-gelu MLP fc1 -> gelu -> fc2, fp16, n={n}, median ms\n")
    print("| variant | ms | max err vs whole |\n|---|---|---|")
    print(f"| whole batch | {median_ms(whole):.4f} | 0 |")
    for rows in (1024, 2048, 4096, 8192):
        f = chunked(rows)
        err = (f().float() - ref).abs().max().item()
        print(f"| chunks of {rows} rows | {median_ms(f):.4f} | {err:.3g} |")
    tanh = lambda: F.linear(torch.ops.aten._addmm_activation(b1, x, w1.t(), use_gelu=True), w2, b2)
    print(f"| tanh gelu in cuBLASLt's epilogue (for reference) | {median_ms(tanh):.4f} | n/a |")
    gl = F.linear(x, w1, b1)
    print(f"| fc1 alone | {median_ms(lambda: F.linear(x, w1, b1)):.4f} | |")
    print(f"| gelu alone | {median_ms(lambda: F.gelu(gl)):.4f} | |")
    print(f"| fc2 alone | {median_ms(lambda: F.linear(gl, w2, b2)):.4f} | |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="cnn,mlp")
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"cudnn {torch.backends.cudnn.version()}")
    only = args.only.split(",")
    if "cnn" in only:
        probe_cnn()
    if "mlp" in only:
        probe_mlp()


if __name__ == "__main__":
    main()
