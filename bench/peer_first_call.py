"""torch.compile's first call, one process per measurement (the peer of kiln-first-call).

    peer_first_call.py --model encoder|mlp [--batch 32] [--seq 128]

Prints one markdown row: process start -> model on the GPU, and the first compiled call until its
result is synchronized. Run it twice over one TORCHINDUCTOR_CACHE_DIR (bench/run_gpu.sh does):
the first run is cold, the second warm (Inductor's FX graph and kernel caches).
"""
import time

T0 = time.perf_counter()

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from export_models import EncoderBlock, Mlp  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["encoder", "mlp"], default="encoder")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        if a.model == "encoder":
            m = EncoderBlock().cuda().half().eval()
            inputs = (torch.randn(a.batch, a.seq, 768, device="cuda", dtype=torch.half),
                      torch.zeros(a.batch, 1, a.seq, a.seq, device="cuda", dtype=torch.half))
        else:
            m = Mlp().cuda().half().eval()
            inputs = (torch.randn(a.batch, a.seq, 1024, device="cuda", dtype=torch.half),)
        torch.cuda.synchronize()
        loaded = (time.perf_counter() - T0) * 1e3
        t = time.perf_counter()
        compiled = torch.compile(m, dynamic=True)
        compiled(*inputs)
        torch.cuda.synchronize()
        first = (time.perf_counter() - t) * 1e3
    cache = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default")
    print(f"| {a.model} [{a.batch}, {a.seq}] fp16 | torch.compile(dynamic=True) | {loaded:.0f} | "
          f"{first:.1f} | {loaded + first:.0f} | TORCHINDUCTOR_CACHE_DIR={os.path.basename(cache)} |",
          flush=True)


if __name__ == "__main__":
    main()
