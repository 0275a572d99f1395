#!/usr/bin/env python3
"""A breadth sweep: many architectures nobody on the project wrote, small configs, fp32, traced on
the CPU with random weights, for `kiln-real-bench DIR --device cpu` with KILN_STRICT=1 (a capture,
lowering or plan failure then fails the row instead of falling back).

    python3 bench/breadth_models.py OUT_DIR [name,name,...]
    for m in $(tail -n +2 OUT_DIR/models.tsv | cut -f1); do
      KILN_STRICT=1 KILN_ARCH=sm_90 build/bench/kiln-real-bench OUT_DIR --device cpu --models $m \
        --batches 1,3 --seq 33 --reps 2; done

Needs transformers, timm and torchvision beside the project's torch (the GPU machine's Python has
them; on a CPU host: pip install --target DIR transformers==5.17.* timm torchvision==0.26.*
--no-deps, plus transformers' own dependencies, and PYTHONPATH=DIR). Text models take (ids, mask)
with the end of row 0 padded and return the last hidden state; images take [b, 3, 224, 224].
Writes OUT_DIR/<name>.pt and models.tsv (the columns kiln-real-bench reads); a model that fails
to trace is printed with its error and left out. bench/RESULTS.md (2026-12-07) has what it found.
"""
import os, sys, time, warnings
import torch
out = sys.argv[1]
only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
os.makedirs(out, exist_ok=True)
import transformers as tf

class TextWrapper(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, ids, mask):
        return self.m(input_ids=ids, attention_mask=mask, return_dict=False)[0]

small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000, max_position_embeddings=128)
def text(cls, cfgcls, **kw):
    args = dict(small); args.update(kw)
    return lambda: TextWrapper(cls(cfgcls(**args)))
TEXT = {
  "distilbert": lambda: TextWrapper(tf.DistilBertModel(tf.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128, vocab_size=1000, max_position_embeddings=128))),
  "roberta": text(tf.RobertaModel, tf.RobertaConfig, max_position_embeddings=140),
  "albert": text(tf.AlbertModel, tf.AlbertConfig, embedding_size=32),
  "electra": text(tf.ElectraModel, tf.ElectraConfig, embedding_size=32),
  "deberta_v2": text(tf.DebertaV2Model, tf.DebertaV2Config),
  "t5_encoder": lambda: TextWrapper(tf.T5EncoderModel(tf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=1000))),
  "mistral": text(tf.MistralModel, tf.MistralConfig, num_key_value_heads=2),
  "qwen2": text(tf.Qwen2Model, tf.Qwen2Config, num_key_value_heads=2),
  "gemma": text(tf.GemmaModel, tf.GemmaConfig, num_key_value_heads=2, head_dim=16),
  "gpt_neox": text(tf.GPTNeoXModel, tf.GPTNeoXConfig),
  "opt": lambda: TextWrapper(tf.OPTModel(tf.OPTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128, vocab_size=1000, max_position_embeddings=128, word_embed_proj_dim=64))),
  "phi": text(tf.PhiModel, tf.PhiConfig),
  "bloom": lambda: TextWrapper(tf.BloomModel(tf.BloomConfig(hidden_size=64, n_layer=2, n_head=4, vocab_size=1000))),
  "mpnet": text(tf.MPNetModel, tf.MPNetConfig, max_position_embeddings=140),
  "xlnet": lambda: TextWrapper(tf.XLNetModel(tf.XLNetConfig(d_model=64, n_layer=2, n_head=4, d_inner=128, vocab_size=1000))),
  "bart": lambda: TextWrapper(tf.BartModel(tf.BartConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, vocab_size=1000, max_position_embeddings=128))),
  "mobilebert": lambda: TextWrapper(tf.MobileBertModel(tf.MobileBertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, embedding_size=32, intra_bottleneck_size=32, true_hidden_size=32, vocab_size=1000, max_position_embeddings=128))),
  "falcon": lambda: TextWrapper(tf.FalconModel(tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000))),
  "gptj": lambda: TextWrapper(tf.GPTJModel(tf.GPTJConfig(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, vocab_size=1000, n_positions=128))),
  "gpt_bigcode": lambda: TextWrapper(tf.GPTBigCodeModel(tf.GPTBigCodeConfig(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=128))),
  "clip_text": lambda: TextWrapper(tf.CLIPTextModel(tf.CLIPTextConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000, max_position_embeddings=128))),
}

class ImageWrapper(torch.nn.Module):
    def __init__(self, m):
        super().__init__(); self.m = m
    def forward(self, x):
        return self.m(pixel_values=x, return_dict=False)[0]

HF_IMAGE = {
  "hf_vit": lambda: ImageWrapper(tf.ViTModel(tf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128))),
  "hf_dinov2": lambda: ImageWrapper(tf.Dinov2Model(tf.Dinov2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2))),
  "hf_segformer": lambda: ImageWrapper(tf.SegformerModel(tf.SegformerConfig())),
  "hf_convnext": lambda: ImageWrapper(tf.ConvNextModel(tf.ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128]))),
  "hf_swin": lambda: ImageWrapper(tf.SwinModel(tf.SwinConfig(embed_dim=32, depths=[1, 1, 2, 1], num_heads=[2, 2, 4, 4]))),
}
import torchvision.models as tvm, timm
IMAGE = {
  "mobilenet_v3_small": lambda: tvm.mobilenet_v3_small(),
  "efficientnet_b0": lambda: tvm.efficientnet_b0(),
  "convnext_tiny": lambda: tvm.convnext_tiny(),
  "swin_t": lambda: tvm.swin_t(),
  "densenet121": lambda: tvm.densenet121(),
  "regnet_y_400mf": lambda: tvm.regnet_y_400mf(),
  "squeezenet": lambda: tvm.squeezenet1_1(),
  "shufflenet": lambda: tvm.shufflenet_v2_x0_5(),
  "timm_deit_tiny": lambda: timm.create_model("deit_tiny_patch16_224"),
  "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0"),
  "timm_convnext_atto": lambda: timm.create_model("convnext_atto"),
  "timm_mobilevit_xxs": lambda: timm.create_model("mobilevit_xxs"),
  "timm_levit_128s": lambda: timm.create_model("levit_128s"),
}
IMAGE.update(HF_IMAGE)
rows = []
for name, make in list(TEXT.items()) + list(IMAGE.items()):
    if only and name not in only: continue
    kind = "text" if name in TEXT else "image"
    err = ""; check = ""; t = 0
    try:
        torch.manual_seed(0)
        m = make().eval()
        if kind == "text":
            def ex(b, s):
                ids = torch.randint(0, 1000, (b, s)); mask = torch.ones(b, s, dtype=torch.int64); mask[0, -2:] = 0
                return ids, mask
        else:
            def ex(b, s):
                return (torch.randn(b, 3, 224, 224),)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            tr = torch.jit.trace(m, ex(3, 7), strict=False, check_trace=False)
            t = time.perf_counter() - t0
            tr.save(f"{out}/{name}.pt")
            c = ex(2, 16)
            check = "%.3g" % (torch.jit.load(f"{out}/{name}.pt")(*c).float() - m(*c).float()).abs().max().item()
    except Exception as e:
        err = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    print(name, kind, check, err, flush=True)
    rows.append((name, f"{name}.pt", kind, "ids,mask" if kind == "text" else "x", "float32", "cpu", "%.1f" % t, check, err))
with open(f"{out}/models.tsv", "w") as f:
    f.write("name\tfile\tkind\tinputs\tdtype\tdevice\ttrace_s\tcheck\terror\n")
    for r in rows:
        if not r[-1]: f.write("\t".join(r) + "\n")
