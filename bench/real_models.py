"""Real architectures for kiln-real-bench (bench/real_bench.cpp): traces, AOTI, torch.compile.

Random weights (seed 0; no network, so one model's traces in every dtype share weights), fp16 on
cuda (--dtype float32: fp32 on cuda, for kiln-real-bench --precision; fp32 on cpu with --device
cpu, for testing), eval, no_grad:
  bert      transformers BertModel(BertConfig()), no pooler
  gpt2      transformers GPT2Model(GPT2Config())
  llama     transformers LlamaModel: hidden 2048, 4 layers, 32 heads, 4 KV heads, MLP 5632,
            vocab 32000
  resnet50  torchvision resnet50()
  vit       torchvision vit_b_16() (its zero-initialised head re-drawn, so logits are not all 0)
Text models take (ids int64 [b, s], mask int64 [b, s]) and return the last hidden state; the
mask pads the end of row 0 (without padding the library drops the mask path from the trace).
Images take x [b, 3, 224, 224] and return logits. nn.MultiheadAttention's fused fast path is off
(as scripts/export_models.py), so ViT's attention is traced as scaled_dot_product_attention.

For each model, into OUT_DIR:
  <name>.pt      torch.jit.trace at batch 3, seq 7 (distinct sizes >= 2, which kiln's symbolic
                 shape recovery needs), then reloaded and checked against the eager model at
                 batch 2, seq 16 (models.tsv `check`: max abs error; a trace that baked a size in
                 fails there).
  <name>.pt2     AOTInductor package (unless --no-aoti): torch.export with a dynamic batch
                 (1..64) and seq (2..512), example at the middle benchmark batch and --seq
                 (Inductor uses the example sizes as hints), then aoti_compile_and_package, one
                 spawned process per model with a fresh Inductor cache (seconds: export + compile,
                 the peer's cold cost). Where the seq range fails export's constraint check (the
                 Llama model does) it is retried as Dim.AUTO within the same range; where every
                 dynamic export fails, one static package per benchmark batch, <name>_b<B>.pt2
                 (aoti_manifest.tsv `shapes` says which).
Tables (tab-separated, with a header), also printed as markdown:
  models.tsv          name, file, kind (text|image), inputs, dtype, device, trace_s, check, error
  aoti_manifest.tsv   name, file, seconds, error, shapes
  torch_compile.tsv   model, batch, seq, first_call_ms, median_ms, eager_ms, error: torch.compile
                      (default mode, dynamic=False: each batch compiles its own graph), one spawned
                      process per model with a fresh Inductor cache; first_call_ms is the cold first
                      call at that batch (compile included), median_ms the median per-call time of
                      50 back-to-back calls between CUDA events after 10 warm-up calls; eager_ms the
                      same for the eager nn.Module.
A model that fails at any stage is a row with its error, never the end of the run.

Usage: real_models.py OUT_DIR [--models bert,gpt2,llama,resnet50,vit] [--no-aoti] [--no-compile]
                      [--batches 1,8,32] [--seq 128] [--device cuda|cpu] [--dtype float16|float32]
                      [--jobs N]
"""
import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import warnings

import torch

MODELS = ["bert", "gpt2", "llama", "resnet50", "vit"]
TEXT = {"bert", "gpt2", "llama"}
VOCAB = 1000  # ids drawn below every model's vocabulary (bert 30522, gpt2 50257, llama 32000)
TRACE_BATCH, TRACE_SEQ = 3, 7
CHECK_BATCH, CHECK_SEQ = 2, 16
MAX_BATCH, MIN_SEQ, MAX_SEQ = 64, 2, 512  # BERT's and GPT-2's position tables end at 512 / 1024


class TextWrapper(torch.nn.Module):
    """forward(ids, mask) -> the model's last hidden state, the calling convention kiln sees."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, ids, mask):
        return self.m(input_ids=ids, attention_mask=mask, return_dict=False)[0]


def make_model(name):
    """The model in fp32 on the CPU with seed-0 random weights (same in every process)."""
    torch.manual_seed(0)
    if name in TEXT:
        import transformers as tf
        if name == "bert":
            model = tf.BertModel(tf.BertConfig(use_cache=False), add_pooling_layer=False)
        elif name == "gpt2":
            model = tf.GPT2Model(tf.GPT2Config(use_cache=False))
        else:
            model = tf.LlamaModel(tf.LlamaConfig(
                hidden_size=2048, num_hidden_layers=4, num_attention_heads=32,
                num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
                max_position_embeddings=2048, use_cache=False))
        return TextWrapper(model)
    import torchvision
    if name == "resnet50":
        return torchvision.models.resnet50()
    model = torchvision.models.vit_b_16()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    return model


def load_model(name, device, dtype, weights=None):
    """make_model on the device in eval mode; `weights`: a saved trace whose weights it takes."""
    model = make_model(name).eval()
    if weights:
        state = torch.jit.load(weights, map_location="cpu").state_dict()
        missing, _ = model.load_state_dict(state, strict=False)
        if missing:
            raise RuntimeError(f"{weights} lacks {len(missing)} weights, e.g. {missing[0]}")
    return model.to(device=device, dtype=dtype)


def example_inputs(name, batch, seq, device, dtype):
    if name in TEXT:
        ids = torch.randint(0, VOCAB, (batch, seq), device=device)
        mask = torch.ones(batch, seq, dtype=torch.int64, device=device)
        mask[0, -2:] = 0
        return ids, mask
    return (torch.randn(batch, 3, 224, 224, device=device, dtype=dtype),)


def input_spec(name, dtype):
    if name in TEXT:
        return "ids:int64:[batch,seq] mask:int64:[batch,seq]"
    return f"x:{str(dtype).removeprefix('torch.')}:[batch,3,224,224]"


def one_line(e):
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]


def fresh_inductor_cache():
    """A cold Inductor cache for this process (read at compile time, so setting it here works)."""
    path = tempfile.mkdtemp(prefix="kiln-real-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return path


# ---- tracing (in the main process) ----

def trace(name, out_dir, device, dtype):
    """Traces `name` into out_dir/<name>.pt; returns (seconds, check error)."""
    model = load_model(name, device, dtype)
    path = os.path.join(out_dir, f"{name}.pt")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the check below is what tells
        torch.manual_seed(0)
        example = example_inputs(name, TRACE_BATCH, TRACE_SEQ, device, dtype)
        t0 = time.perf_counter()
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
        seconds = time.perf_counter() - t0
        traced.save(path)
        check = example_inputs(name, CHECK_BATCH, CHECK_SEQ, device, dtype)
        got = torch.jit.load(path, map_location=device)(*check)
        want = model(*check)
        err = (got.float() - want.float()).abs().max().item()
    return seconds, err


# ---- AOTInductor (one spawned process per model) ----

def export(model, example, dynamic_shapes):
    with torch.no_grad():
        return torch.export.export(model, example, dynamic_shapes=dynamic_shapes)


def aoti_build(name, out_dir, device, dtype, batches, seq):
    """Exports and packages `name`. Returns [(file, seconds, shapes)] (one per package)."""
    cache = fresh_inductor_cache()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        model = load_model(name, device, dtype, os.path.join(out_dir, f"{name}.pt"))
        mid = sorted(b for b in batches if b >= 2)
        torch.manual_seed(0)
        example = example_inputs(name, mid[len(mid) // 2] if mid else 2, seq, device, dtype)
        batch = torch.export.Dim("batch", min=1, max=max(MAX_BATCH, *batches))
        attempts = []
        if name in TEXT:
            s = torch.export.Dim("seq", min=MIN_SEQ, max=max(MAX_SEQ, seq))
            auto = torch.export.Dim.AUTO(min=MIN_SEQ, max=max(MAX_SEQ, seq))
            attempts = [("dynamic batch, seq", {"ids": {0: batch, 1: s}, "mask": {0: batch, 1: s}}),
                        ("dynamic batch, seq (AUTO)",
                         {"ids": {0: batch, 1: auto}, "mask": {0: batch, 1: auto}})]
        else:
            attempts = [("dynamic batch", {"x": {0: batch}})]
        t0 = time.perf_counter()
        errors = []
        for shapes, dynamic in attempts:
            try:
                ep = export(model, example, dynamic)
            except Exception as e:  # noqa: BLE001 -- try the next, looser spec
                errors.append(f"{shapes}: {one_line(e)}")
                continue
            file = f"{name}.pt2"
            torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(out_dir, file))
            note = shapes + (f" (after {'; '.join(e[:150] for e in errors)})" if errors else "")
            return [(file, time.perf_counter() - t0, note)]
        out = []  # static: one package per benchmark batch
        for b in batches:
            t0 = time.perf_counter()
            ep = export(model, example_inputs(name, b, seq, device, dtype), None)
            file = f"{name}_b{b}.pt2"
            torch._inductor.aoti_compile_and_package(ep, package_path=os.path.join(out_dir, file))
            out.append((file, time.perf_counter() - t0,
                        f"static b={b} s={seq} (dynamic failed: {'; '.join(errors)})"[:300]))
        return out
    finally:
        shutil.rmtree(cache, ignore_errors=True)


# ---- torch.compile (one spawned process per model) ----

def per_call_ms(fn, device, warmup=10, iters=50):
    """Median per-call time of `iters` back-to-back calls (CUDA events between calls)."""
    for _ in range(warmup):
        fn()
    if device == "cuda":
        events = [torch.cuda.Event(enable_timing=True) for _ in range(iters + 1)]
        events[0].record()
        for i in range(iters):
            fn()
            events[i + 1].record()
        events[-1].synchronize()
        times = [events[i].elapsed_time(events[i + 1]) for i in range(iters)]
    else:
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def compile_bench(name, out_dir, device, dtype, batches, seq, iters):
    """torch.compile rows for `name`: [(batch, seq, first_call_ms, median_ms, eager_ms, error)]."""
    cache = fresh_inductor_cache()
    torch.backends.mha.set_fastpath_enabled(False)
    rows = []
    try:
        model = load_model(name, device, dtype, os.path.join(out_dir, f"{name}.pt"))
        compiled = torch.compile(model, dynamic=False)
        s = seq if name in TEXT else 224
        for b in batches:
            try:
                torch.manual_seed(0)
                inputs = example_inputs(name, b, seq, device, dtype)
                with torch.no_grad():
                    sync(device)
                    t0 = time.perf_counter()
                    compiled(*inputs)
                    sync(device)
                    first = (time.perf_counter() - t0) * 1e3
                    med = per_call_ms(lambda: compiled(*inputs), device, iters=iters)
                    eager = per_call_ms(lambda: model(*inputs), device, iters=iters)
                rows.append((b, s, first, med, eager, ""))
            except Exception as e:  # noqa: BLE001 -- the next batch may still work
                rows.append((b, s, 0.0, 0.0, 0.0, one_line(e)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return rows


def spawn_pool(jobs):
    return cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), max_tasks_per_child=1)


def write_tsv(path, header, rows):
    with open(path, "w") as f:
        f.write("\t".join(header) + "\n")
        for row in rows:
            f.write("\t".join(str(c) for c in row) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--no-aoti", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--iters", type=int, default=50, help="timed torch.compile calls per batch")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: trace in fp32 on the CPU (testing without a GPU)")
    p.add_argument("--dtype", choices=["float16", "float32"], default=None,
                   help="trace dtype (default: float16 on cuda, float32 on cpu); float32 on cuda "
                        "feeds kiln-real-bench --precision, which runs it in fp16/bf16")
    p.add_argument("--jobs", type=int, default=1,
                   help="AOTI packages compiled at once (> 1 overlaps them: seconds inflate)")
    args = p.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        p.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    batches = [int(b) for b in args.batches.split(",") if b]
    device = args.device
    dtype = getattr(torch, args.dtype or ("float16" if device == "cuda" else "float32"))
    if device == "cpu" and dtype != torch.float32:
        p.error("--device cpu traces in float32")
    os.makedirs(args.out_dir, exist_ok=True)
    torch.backends.mha.set_fastpath_enabled(False)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS",
                          str(max(1, (os.cpu_count() or 1) // max(1, args.jobs))))
    print(f"torch {torch.__version__}, device {device}, dtype {dtype}, models {', '.join(names)}\n")

    print("| model | kind | trace s | check max err (batch 2, seq 16) | error |")
    print("|---|---|---|---|---|", flush=True)
    models, traced = [], []
    for name in names:
        kind = "text" if name in TEXT else "image"
        try:
            seconds, err = trace(name, args.out_dir, device, dtype)
            models.append((name, f"{name}.pt", kind, input_spec(name, dtype),
                           str(dtype).removeprefix("torch."), device, f"{seconds:.1f}",
                           f"{err:.3g}", ""))
            traced.append(name)
            print(f"| {name} | {kind} | {seconds:.1f} | {err:.3g} | |", flush=True)
        except Exception as e:  # noqa: BLE001 -- a model that fails is a row
            models.append((name, "", kind, input_spec(name, dtype), "", device, "", "",
                           one_line(e)))
            print(f"| {name} | {kind} | | | {one_line(e)} |", flush=True)
        write_tsv(os.path.join(args.out_dir, "models.tsv"), ["name", "file", "kind", "inputs",
                  "dtype", "device", "trace_s", "check", "error"], models)
        if device == "cuda":
            torch.cuda.empty_cache()

    if not args.no_aoti:
        print("\n| package | file | export + AOTI compile s | shapes | error |")
        print("|---|---|---|---|---|", flush=True)
        manifest = []
        with spawn_pool(args.jobs) as pool:
            futures = {pool.submit(aoti_build, name, args.out_dir, device, dtype, batches,
                                   args.seq): name for name in traced}
            for fut in cf.as_completed(futures):
                name = futures[fut]
                try:
                    for file, seconds, shapes in fut.result():
                        manifest.append((name, file, f"{seconds:.1f}", "", shapes))
                        print(f"| {name} | {file} | {seconds:.1f} | {shapes} | |", flush=True)
                except Exception as e:  # noqa: BLE001
                    manifest.append((name, "", "0.0", one_line(e), ""))
                    print(f"| {name} | | | | {one_line(e)} |", flush=True)
                write_tsv(os.path.join(args.out_dir, "aoti_manifest.tsv"),
                          ["name", "file", "seconds", "error", "shapes"], sorted(manifest))

    if not args.no_compile:
        print("\n| model | batch | seq | torch.compile first call ms | torch.compile ms | "
              "eager (nn.Module) ms | error |")
        print("|---|---|---|---|---|---|---|", flush=True)
        rows = []
        for name in traced:  # one at a time: the timings must not share the card
            with spawn_pool(1) as pool:
                try:
                    result = pool.submit(compile_bench, name, args.out_dir, device, dtype, batches,
                                         args.seq, args.iters).result()
                except Exception as e:  # noqa: BLE001
                    result = [(b, "", 0.0, 0.0, 0.0, one_line(e)) for b in batches]
            for b, s, first, med, eager, error in result:
                rows.append((name, b, s, f"{first:.1f}", f"{med:.4f}", f"{eager:.4f}", error))
                print(f"| {name} | {b} | {s} | {first:.1f} | {med:.4f} | {eager:.4f} | {error} |",
                      flush=True)
            write_tsv(os.path.join(args.out_dir, "torch_compile.tsv"),
                      ["model", "batch", "seq", "first_call_ms", "median_ms", "eager_ms", "error"],
                      rows)


if __name__ == "__main__":
    main()
