"""AOTInductor peer for kiln-bench: exports and packages every kiln-bench workload for C++.

For each workload and dtype (fp16, fp32), torch.export with a dynamic row/batch dim, then
torch._inductor.aoti_compile_and_package into OUT_DIR/<name>_<dtype>.pt2; bench/aoti_bench.cpp
(kiln-aoti-bench) loads and times them. The memory-bound workloads are peer_torch_compile.py's math
with [cols] params w, b as buffers (seed 0; kiln-aoti-bench reads them back from the package for its
reference); the models are scripts/export_models.py's classes with the weights of the TorchScript
files in --models-dir (the build's models/), so kiln-aoti-bench can compare against them.
Packages compile in parallel, one spawned process each, into a fresh Inductor cache: the seconds
printed per package are the peer's cold cost before its first call (with --jobs > 1 they overlap
and are inflated; --jobs 1 gives serial times). OUT_DIR/manifest.tsv lists name, dtype, file,
seconds and the error of a package that failed (the others are still built).

Usage: peer_aoti.py OUT_DIR [--quick] [--device cuda|cpu] [--jobs N] [--models-dir DIR]
--quick is accepted like the other benches' (packages do not depend on the sizes timed).
"""
import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from export_models import CnnBlock, CnnStage, EncoderBlock, Mlp  # noqa: E402

# Upper bounds of the dynamic dims: the largest sizes kiln-bench times. Inductor picks 32-bit
# indexing only when every tensor provably fits, so a larger bound could slow the kernels.
MAX_ROWS = 32768
MAX_BATCH = 256  # MLP/encoder: 32768 tokens of 128; CNN: kiln-bench times up to 32 images


class Pointwise(torch.nn.Module):
    def __init__(self, cols=4096):
        super().__init__()
        self.register_buffer("w", torch.randn(cols))
        self.register_buffer("b", torch.randn(cols))

    def forward(self, x):
        return F.gelu(x * self.w + self.b) * torch.sigmoid(x) + x


class AddLayerNormGelu(Pointwise):
    def forward(self, x, r):
        return F.gelu(F.layer_norm(x + r, [4096], self.w, self.b, 1e-5))


class MaskedSoftmax(torch.nn.Module):
    def forward(self, x, m):
        return torch.softmax(x * 0.125 + m, -1)


def rows(cols, count):
    return lambda dt, dev: tuple(torch.randn(8, cols, dtype=dt, device=dev) for _ in range(count))


# name -> (module factory, TorchScript weights file or None, example inputs); dim 0 is dynamic.
WORKLOADS = {
    "pointwise": (Pointwise, None, rows(4096, 1)),
    "add_layernorm_gelu": (AddLayerNormGelu, None, rows(4096, 2)),
    "masked_softmax": (MaskedSoftmax, None, rows(1024, 2)),
    "mlp": (Mlp, "mlp.pt", lambda dt, dev: (torch.randn(2, 128, 1024, dtype=dt, device=dev),)),
    "mlp_tanh": (lambda: Mlp(approximate="tanh"), "mlp_tanh.pt",
                 lambda dt, dev: (torch.randn(2, 128, 1024, dtype=dt, device=dev),)),
    "encoder_block": (EncoderBlock, "encoder_block.pt",
                      lambda dt, dev: (torch.randn(2, 128, 768, dtype=dt, device=dev),
                                       torch.zeros(2, 1, 128, 128, dtype=dt, device=dev))),
    "cnn_block": (CnnBlock, "cnn_block.pt",
                  lambda dt, dev: (torch.randn(2, 64, 56, 56, dtype=dt, device=dev),)),
    "cnn_stage": (CnnStage, "cnn_stage.pt",
                  lambda dt, dev: (torch.randn(2, 64, 56, 56, dtype=dt, device=dev),)),
}
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


def build(name, dtype, device, out_dir, models_dir):
    """Exports and packages one workload (in its own process). Returns (export s, compile s)."""
    factory, weights, example = WORKLOADS[name]
    torch.manual_seed(0)
    torch.backends.mha.set_fastpath_enabled(False)  # as export_models.py: no opaque fused layer
    model = factory()
    if weights:
        path = os.path.join(models_dir, weights)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} (build the kiln_models target or pass --models-dir)")
        model.load_state_dict(torch.jit.load(path, map_location="cpu").state_dict())
    model = model.eval().to(device=device, dtype=DTYPES[dtype])
    inputs = example(DTYPES[dtype], device)
    if weights:  # a model: the batch dim
        dim = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    else:
        dim = torch.export.Dim("rows", min=2, max=MAX_ROWS)
    with torch.no_grad():
        t0 = time.perf_counter()
        ep = torch.export.export(model, inputs, dynamic_shapes=tuple({0: dim} for _ in inputs))
        t1 = time.perf_counter()
        torch._inductor.aoti_compile_and_package(
            ep, package_path=os.path.join(out_dir, f"{name}_{dtype}.pt2"))
    return t1 - t0, time.perf_counter() - t1


def write_manifest(out_dir, results):
    with open(os.path.join(out_dir, "manifest.tsv"), "w") as f:
        f.write("name\tdtype\tfile\tseconds\terror\n")
        for (name, dtype), (seconds, error) in sorted(results.items()):
            f.write(f"{name}\t{dtype}\t{name}_{dtype}.pt2\t{seconds:.1f}\t{error}\n")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--only", default="", help="comma-separated workload names (default: all)")
    p.add_argument("--models-dir", default=os.environ.get(
        "KILN_MODELS_DIR", os.path.join(here, "..", "build", "models")))
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n] or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        p.error(f"--only: unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    # Cold compiles (a fresh cache, unless one is given), and the cores shared between packages.
    fresh_cache = None
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        fresh_cache = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="kiln-aoti-")
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS",
                          str(max(1, (os.cpu_count() or 1) // args.jobs)))

    print(f"torch {torch.__version__}, device {args.device}, {args.jobs} jobs, "
          f"models from {args.models_dir}\n")
    print("| package | dtype | export s | AOTI compile s | error |")
    print("|---|---|---|---|---|", flush=True)
    results = {}
    pool = cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"),
                                  max_tasks_per_child=1)
    with pool:
        futures = {pool.submit(build, name, dtype, args.device, args.out_dir, args.models_dir):
                   (name, dtype) for name in names for dtype in DTYPES}
        for fut in cf.as_completed(futures):
            name, dtype = futures[fut]
            try:
                export_s, compile_s = fut.result()
                results[(name, dtype)] = (export_s + compile_s, "")
                print(f"| {name} | {dtype} | {export_s:.1f} | {compile_s:.1f} | |", flush=True)
            except Exception as e:  # noqa: BLE001 -- a failed package is a result, not the end
                error = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                results[(name, dtype)] = (0.0, error)
                print(f"| {name} | {dtype} | | | {error} |", flush=True)
            write_manifest(args.out_dir, results)
    if fresh_cache:
        shutil.rmtree(fresh_cache, ignore_errors=True)
    failed = sum(1 for _, error in results.values() if error)
    print(f"\n{len(results) - failed} packages in {args.out_dir}, {failed} failed", flush=True)


if __name__ == "__main__":
    main()
