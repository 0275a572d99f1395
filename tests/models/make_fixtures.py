#!/usr/bin/env python3
"""Traces small-config versions of real architectures into TorchScript fixtures for kiln's tests.

Nobody on the project wrote these models: they are Hugging Face transformers (BERT, GPT-2, a
Llama-style decoder with RMSNorm, rotary embeddings, grouped-query attention and a SiLU-gated MLP)
and torchvision (a ResNet, a ViT), with random weights (seeded), traced with torch.jit.trace the
way users trace them, and saved in float32 (tests convert them to float16 on the GPU).

    python3 tests/models/make_fixtures.py [--out tests/models] [--device cuda] [--more]

needs torch, transformers and torchvision (the GPU machine's Python has them). It writes one
<name>.pt per model (each under 2 MB) and manifest.json, which tells the tests the inputs of each
fixture (name, dtype, example shape, which dims are dynamic) and its output structure.

A traced Hugging Face model records the device and dtype it was traced with (arange(...,
device="cpu") in its mask code, .to(float32) in GPT-2's mask and Llama's rotary embedding), so it
only runs there. --device cuda traces in float16 on the GPU into <name>.cuda.pt (run it on the
GPU machine), which the GPU tests and kiln-demo load; the CPU fixtures are <name>.pt (float32).
--device cuda --dtype float32 traces in float32 on the GPU into <name>.cuda32.pt, which the GPU
tests of Options::precision (Note [Precision]) run in float16 and bfloat16 against float32.
--more writes CPU-only fixtures of more architectures (T5's encoder, Mistral, DeBERTa-v2, XLNet,
a small MobileNetV3) and manifest_more.json: kiln ran them on the CPU host with transformers 5.17,
torchvision 0.26 and timm installed from PyPI, and each needed a lowering or capture fix.
"""
import argparse
import json
import os

import torch


def text_inputs(batch, seq, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, seq - 2:] = 0  # some padding, or the library may drop the mask path from the trace
    return ids, mask


class TextWrapper(torch.nn.Module):
    """Returns the last hidden state, as the shared device README recommends."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask, return_dict=False)[0]


def hf_model(kind):
    import transformers as tf

    common = dict(vocab_size=1000, use_cache=False)
    if kind == "bert":
        cfg = tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=256, max_position_embeddings=128, **common)
        return tf.BertModel(cfg, add_pooling_layer=False)
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, **common)
        return tf.GPT2Model(cfg)
    if kind == "llama":
        cfg = tf.LlamaConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=8,
                             num_key_value_heads=2, intermediate_size=256,
                             max_position_embeddings=128, **common)
        return tf.LlamaModel(cfg)
    # More architectures (--more, CPU only): what the first three do not cover.
    small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=128, **common)
    if kind == "t5":  # relative position buckets (min, full_like, log), no position embeddings
        cfg = tf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, **common)
        return tf.T5EncoderModel(cfg)
    if kind == "mistral":  # sliding-window causal mask, grouped-query attention
        return tf.MistralModel(tf.MistralConfig(num_key_value_heads=2, **small))
    if kind == "deberta":  # disentangled attention, ~mask, torch.tensor in the graph
        return tf.DebertaV2Model(tf.DebertaV2Config(**small))
    if kind == "xlnet":  # relative attention: arange(klen, -qlen, -1.0), einsum
        cfg = tf.XLNetConfig(d_model=64, n_layer=2, n_head=4, d_inner=128, **common)
        return tf.XLNetModel(cfg)
    raise ValueError(kind)


def vision_model(kind):
    import torchvision

    if kind == "resnet":
        # torchvision's ResNet code (BasicBlock, stem, downsample, pooling) cut after layer2 so
        # that the fixture stays small: conv/bn/relu, residuals, strided 1x1 downsamples, maxpool.
        m = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1],
                                             num_classes=10)
        m.layer3 = torch.nn.Identity()
        m.layer4 = torch.nn.Identity()
        m.fc = torch.nn.Linear(128, 10)
        return m
    if kind == "vit":
        m = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                                 num_heads=4, hidden_dim=64, mlp_dim=128,
                                                 num_classes=10)
        # torchvision zero-initializes the classifier head: every logit would be 0.
        torch.nn.init.normal_(m.heads.head.weight, std=0.5)
        torch.nn.init.normal_(m.heads.head.bias, std=0.5)
        return m
    if kind == "mobilenet":
        # torchvision's MobileNetV3 code with a small setting (--more, CPU only): hardswish,
        # hardsigmoid squeeze-and-excitation with global pooling, depthwise convs.
        from torchvision.models.mobilenetv3 import InvertedResidualConfig as C, MobileNetV3
        setting = [C(16, 3, 16, 16, True, "RE", 2, 1, 1.0),
                   C(16, 3, 32, 24, False, "HS", 2, 1, 1.0),
                   C(24, 5, 48, 24, True, "HS", 1, 1, 1.0)]
        return MobileNetV3(setting, last_channel=64, num_classes=10)
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default=None, choices=["float16", "float32"],
                    help="default: float32 on the CPU, float16 on the GPU")
    ap.add_argument("--more", action="store_true",
                    help="the CPU-only fixtures of more architectures (hf_t5, hf_mistral, "
                         "hf_deberta, hf_xlnet, tv_mobilenet) into manifest_more.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype or ("float32" if args.device == "cpu" else "float16"))
    if args.device == "cpu" and dtype != torch.float32:
        ap.error("the CPU fixtures are float32")
    suffix = "" if args.device == "cpu" else (".cuda" if dtype == torch.float16 else ".cuda32")
    if args.more and args.device != "cpu":
        ap.error("--more fixtures are CPU only")
    texts = ["t5", "mistral", "deberta", "xlnet"] if args.more else ["bert", "gpt2", "llama"]
    visions = ["mobilenet"] if args.more else ["resnet", "vit"]
    torch.manual_seed(0)
    manifest = {}
    # Example sizes follow Note [Symbolic dims in captured graphs]: distinct, >= 2.
    for kind in texts:
        torch.manual_seed(1)
        model = TextWrapper(hf_model(kind)).eval().to(dev, dtype)
        ids, mask = (t.to(dev) for t in text_inputs(3, 7, 1000, seed=2))
        with torch.no_grad():
            traced = torch.jit.trace(model, (ids, mask), strict=False, check_trace=False)
        path = os.path.join(args.out, f"hf_{kind}{suffix}.pt")
        traced.save(path)
        manifest[f"hf_{kind}"] = {
            "file": f"hf_{kind}{suffix}.pt",
            "inputs": [
                {"name": "ids", "dtype": "int64", "shape": [3, 7], "dynamic": {"0": "batch", "1": "seq"}},
                {"name": "mask", "dtype": "int64", "shape": [3, 7], "dynamic": {"0": "batch", "1": "seq"}},
            ],
            "vocab": 1000,
            "max_seq": 128,
        }
    for kind in visions:
        torch.manual_seed(1)
        model = vision_model(kind).eval().to(dev, dtype)
        size = {"vit": 32, "resnet": 40, "mobilenet": 48}[kind]
        x = torch.randn(3, 3, size, size).to(dev, dtype)
        with torch.no_grad():
            traced = torch.jit.trace(model, (x,), check_trace=False)
        path = os.path.join(args.out, f"tv_{kind}{suffix}.pt")
        traced.save(path)
        manifest[f"tv_{kind}"] = {
            "file": f"tv_{kind}{suffix}.pt",
            "inputs": [{"name": "x", "dtype": str(dtype).replace("torch.", ""), "shape": [3, 3, size, size],
                        "dynamic": {"0": "batch"}}],
        }
    for name, entry in manifest.items():
        size = os.path.getsize(os.path.join(args.out, entry["file"]))
        assert size < 2 * 1024 * 1024, f"{name}: {size} bytes, fixtures must stay under 2 MB"
        print(f"{name}: {size / 1024:.0f} KiB")
    with open(os.path.join(args.out, f"manifest{'_more' if args.more else suffix}.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
