"""Exports the reference models kiln's demo, integration tests and benchmarks load, as TorchScript.

Run at build time (CMake target `kiln_models`); nothing is downloaded: the architectures are
PyTorch's own module code (torch.nn.TransformerEncoderLayer, ...), with random weights from a fixed
seed. Usage: export_models.py OUT_DIR
"""
import os
import sys

import torch


class EncoderBlock(torch.nn.Module):
    """A pre-norm BERT-base-sized encoder layer (hidden 768, 12 heads, 4x MLP, GELU)."""

    def __init__(self, hidden=768, heads=12):
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(
            hidden, heads, dim_feedforward=4 * hidden, dropout=0.1, activation="gelu",
            batch_first=True, norm_first=True)

    def forward(self, x, mask):
        # mask: additive float mask [batch, 1, seq, seq] broadcast over heads.
        b, s, _ = x.shape
        m = mask.expand(b, self.layer.self_attn.num_heads, s, s).reshape(-1, s, s)
        return self.layer(x, src_mask=m)


class Mlp(torch.nn.Module):
    """layer_norm(x + fc2(gelu(fc1(x)))), hidden 1024, 4x expansion. approximate="tanh" is GPT-2's
    gelu ("gelu_new"), which kiln runs in the GEMM's epilogue."""

    def __init__(self, hidden=1024, approximate="none"):
        super().__init__()
        self.approximate = approximate
        self.fc1 = torch.nn.Linear(hidden, 4 * hidden)
        self.fc2 = torch.nn.Linear(4 * hidden, hidden)
        self.norm = torch.nn.LayerNorm(hidden)

    def forward(self, x):
        return self.norm(
            x + self.fc2(torch.nn.functional.gelu(self.fc1(x), approximate=self.approximate)))


class CnnBlock(torch.nn.Module):
    """A ResNet basic block (torchvision's BasicBlock layout): conv3x3 + batchnorm + relu, twice,
    with the identity residual before the last relu. 64 channels."""

    def __init__(self, channels=64):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        for bn in (self.bn1, self.bn2):  # eval-mode statistics that are not the identity
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.data.uniform_(0.5, 1.5)
            bn.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + x)


class CnnStage(torch.nn.Module):
    """Three CNN blocks in a row, like the first stage of a ResNet-34 (conv2_x): 6 convs, 64
    channels. Deep enough that kiln runs its convs channels-last on CUDA (Note [Channels-last
    convolutions]), where the single block stays NCHW."""

    def __init__(self, blocks=3):
        super().__init__()
        self.blocks = torch.nn.Sequential(*[CnnBlock() for _ in range(blocks)])

    def forward(self, x):
        return self.blocks(x)


def export(module, example, path):
    module.eval()
    # PyTorch's fused "fast path" for encoder layers would trace as one opaque op.
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(path)
    print(f"exported {path}")


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    export(EncoderBlock(), (torch.randn(2, 16, 768), torch.zeros(2, 1, 16, 16)),
           os.path.join(out, "encoder_block.pt"))
    export(Mlp(), (torch.randn(2, 16, 1024),), os.path.join(out, "mlp.pt"))
    export(Mlp(approximate="tanh"), (torch.randn(2, 16, 1024),), os.path.join(out, "mlp_tanh.pt"))
    export(CnnBlock(), (torch.randn(2, 64, 14, 14),), os.path.join(out, "cnn_block.pt"))
    export(CnnStage(), (torch.randn(2, 64, 14, 14),), os.path.join(out, "cnn_stage.pt"))


if __name__ == "__main__":
    main()
