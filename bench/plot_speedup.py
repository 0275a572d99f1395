"""Plots kiln's speedup per workload and size from the newest section of bench/RESULTS.md that
has kiln, eager and peer figures.

Reads the "kiln vs eager LibTorch" tables (kiln ms, eager ms) and the peer's tables of the same
section (AOTInductor's "aoti ms" where the section has them, else "torch.compile ms"), and writes a
PNG with two panels: kiln vs eager LibTorch and kiln vs the peer, one bar per (workload, dtype, n). Only measured figures are plotted (the tables are the source).
Usage: plot_speedup.py [RESULTS.md] [OUT.png]   (needs matplotlib: pip install matplotlib)
"""
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def tables(section):
    """Markdown tables of a section: list of (header cells, rows of cells)."""
    out, cur = [], None
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = ([c.lower() for c in cells], [])  # "AOTI ms" (kiln-real-bench) or "aoti ms"
            elif not set(line.replace("|", "").strip()) <= set("-: "):
                cur[1].append(cells)
        elif cur is not None:
            out.append(cur)
            cur = None
    if cur is not None:
        out.append(cur)
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "bench/RESULTS.md"
    dst = sys.argv[2] if len(sys.argv) > 2 else "bench/speedup.png"
    text = open(src).read()
    sections = re.split(r"\n## ", text)[1:]
    # The newest dated section with kiln-vs-eager and peer figures (a section may measure other
    # things, such as precision against a hand-converted model).
    for section in sections:
        found = tables(section)
        peer_column = next((c for c in ("aoti ms", "torch.compile ms")
                            if any(c in header for header, _ in found)), None)
        if peer_column and any("kiln ms" in h and "eager ms" in h for h, _ in found):
            break
    else:
        sys.exit("no section with kiln ms, eager ms and a peer's figures")
    title = section.splitlines()[0]
    kiln, peer = {}, {}
    peer_name = {"aoti ms": "AOTInductor", "torch.compile ms": "torch.compile"}.get(peer_column)
    # The first table of a section holds its newest figures: the first row of a key wins. A row
    # that has the peer's column gives kiln's and the peer's figures of one run together.
    for header, rows in found:
        i = {h: n for n, h in enumerate(header)}
        for r in rows:
            key = (r[0], r[1], r[2])
            if "kiln ms" in i and "eager ms" in i and key not in kiln:
                try:
                    kiln[key] = (float(r[i["eager ms"]]), float(r[i["kiln ms"]]))
                except ValueError:
                    continue  # an error or "-" instead of a figure
                if peer_column in i:
                    try:
                        peer[key] = float(r[i[peer_column]])
                    except ValueError:
                        pass
            elif peer_column in i and key not in peer and "kiln ms" not in i:
                try:
                    peer[key] = float(r[i[peer_column]])
                except ValueError:
                    pass
    keys = [k for k in kiln if k in peer]
    # The workload's first word, plus what tells the MLP variants apart.
    labels = [f"{w.split(' ')[0]}{'-tanh' if 'tanh gelu' in w else ''} {d} n={n}" for w, d, n in keys]
    vs_eager = [kiln[k][0] / kiln[k][1] for k in keys]
    vs_peer = [peer[k] / kiln[k][1] for k in keys]
    fig, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for ax, values, name in ((axes[0], vs_eager, "eager LibTorch"),
                             (axes[1], vs_peer, peer_name)):
        ax.bar(range(len(values)), values, color=["#2a7" if v >= 1 else "#c44" for v in values])
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"kiln speedup vs {name}")
        for x, v in enumerate(values):
            ax.text(x, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    axes[1].set_xticks(range(len(labels)))
    axes[1].set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst} ({len(keys)} bars)")


if __name__ == "__main__":
    main()
