"""Training throughput: our full tiSFM vs a plain fp32 implementation written like the reference.

Both train the paper configuration (862 cisBP motifs, 300 bp, 8 outputs, batch 256) on the same
random batches. The plain model mirrors the reference code: an fp32 Conv1d, attention that
materialises the (B, heads, L, L) matrix with einsum, softmax pooling and the interaction gate by
autograd, AdamW. It gets the same weights as ours and its outputs are checked against ours first.

    python bench/train_throughput.py [--steps 6] [--batch-size 256] [--motifs PATH] [--profile]

The two models take their steps in turn, so that load from other processes falls on both alike;
each ratio comes with the range of the per-round ratios and the ratio of CPU times (less
sensitive to other processes). Emulate CPUs without AMX with ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
MKL_ENABLE_INSTRUCTIONS=AVX512`` (AVX-512 BF16, as AMD EPYC) or ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2`` (AVX2 only). MKL, which runs torch's fp32
matrix products, dispatches on its own: without its setting it keeps AVX-512 (1.8x faster
products than AVX2 here), which flatters both models under an AVX2 emulation.
Ends with one line: ``train_throughput: <ratio>x <details>``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tisfm_core.devices import (conv_precision, cpu_description, keep_freed_memory,  # noqa: E402
                                 resolve_device)
from tisfm_core import native  # noqa: E402
from tisfm_core.fused import _sorted_weights, conv_dtype, conv_plan, grouped_conv  # noqa: E402
from tisfm_core.model import TISFM, TISFMConfig  # noqa: E402
from tisfm_core.motifs import load_motifs  # noqa: E402
from tisfm_core.prox import ProxAdam  # noqa: E402
from tisfm_core.sequences import one_hot_torch  # noqa: E402
from tisfm_core.training import use_compile  # noqa: E402

CISBP = Path(__file__).resolve().parents[2] / "shared" / "data" / "motifs" / "cisBP_mouse.meme"


class ReferenceStyleTISFM(nn.Module):
    """The reference's forward pass, written as the reference writes it (fp32, plain autograd)."""

    def __init__(self, ours):
        super().__init__()
        cfg = ours.config
        self.length, self.m = cfg.length, cfg.n_features
        self.conv_motif = nn.Conv1d(4, cfg.n_channels, cfg.kernel_width, bias=False)
        self.conv_motif.weight = nn.Parameter(ours.kernels.detach().clone(), requires_grad=False)
        self.conv_scale = nn.Parameter(ours.scale.detach().clone())
        self.conv_bias = nn.Parameter(ours.bias.detach().clone().view(1, -1, 1))
        self.position_emb = nn.Embedding.from_pretrained(ours.position_emb.weight.detach().clone(),
                                                         freeze=False)
        att = ours.attention
        self.tokey, self.toquery = nn.Parameter(att.key.detach().clone()), nn.Parameter(att.query.detach().clone())
        self.tovalue = nn.Parameter(att.value.detach().clone())
        self.tovalue_bias = nn.Parameter(att.value_bias.detach().clone())
        self.unifyheads = nn.Parameter(att.unify.detach().clone())
        self.unifyheads_bias = nn.Parameter(att.unify_bias.detach().clone())
        self.attentionpooling = nn.Parameter(ours.pool_weight.detach().clone())
        self.interaction_layer = nn.Linear(self.m, self.m)
        self.interaction_layer.load_state_dict(ours.interaction.state_dict())
        self.linreg = nn.Linear(self.m, cfg.n_outputs)
        self.linreg.load_state_dict(ours.final.state_dict())

    def attention(self, x):
        k = torch.einsum("hed,bdl->bhel", self.tokey, x)
        q = torch.einsum("hed,bdl->bhel", self.toquery, x)
        v = torch.einsum("hed,bdl->bhel", self.tovalue, x) + self.tovalue_bias
        dot = torch.einsum("bhei,bhej->bhij", k, q) / math.sqrt(k.shape[2])
        dot = F.softmax(dot, dim=-1)
        out = torch.einsum("bhij,bhei->bhej", dot, v)
        return torch.einsum("hde,bhel->bdl", self.unifyheads, out) + self.unifyheads_bias

    def forward(self, x):
        i = torch.arange(self.length, device=x.device)
        idx = torch.where(i < self.length // 2, i, self.length - 1 - i)
        p = self.position_emb(idx).view(1, 1, -1)
        x = x + self.attention(x + p)
        z = torch.sigmoid(self.conv_motif(x) * self.conv_scale.view(1, -1, 1) + self.conv_bias)
        z = z.view(z.shape[0], self.m, -1)
        w = F.softmax(z * self.attentionpooling.view(1, -1, 1), dim=-1)
        y = (w * z).sum(-1)
        y = y * torch.sigmoid(self.interaction_layer(y))
        return self.linreg(y)


def train_step(model, optimizer, autocast, batch):
    x, y = batch
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        pred = model(x)
    loss = F.mse_loss(pred.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()


def interleaved(ways, batches, steps):
    """Steps of every way in turn (the order flips every round), so that load from other
    processes falls on both alike. Returns {name: (wall seconds, CPU seconds) per step}."""
    out = {name: ([], []) for name in ways}
    for r in range(steps):
        for name in (list(ways) if r % 2 == 0 else list(reversed(ways))):
            w0, c0 = time.perf_counter(), time.process_time()
            train_step(*ways[name], batches[1 + r % (len(batches) - 1)])
            out[name][0].append(time.perf_counter() - w0)
            out[name][1].append(time.process_time() - c0)
    return out


def med(values):
    return float(np.median(values))


def ratios(run):
    """Median ratio plain/ours of wall time, the range of the per-round ratios, CPU-time ratio."""
    pairs = [p / o for p, o in zip(run["plain"][0], run["ours"][0])]
    return (med(run["plain"][0]) / med(run["ours"][0]), min(pairs), max(pairs),
            med(run["plain"][1]) / med(run["ours"][1]))


def conv_description(model):
    """Which convolution kernels ran: precision, groups and the share of a dense product."""
    dtype, device = conv_dtype(model.precision), model.kernels.device
    k = model.kernels.shape[2]
    if dtype == torch.float32 and device.type == "cpu" and native.library() is not None:
        motifs = torch.arange(model.kernels.shape[0] // 2)
        spans = native.column_spans(_sorted_weights(model.kernels, motifs, torch.float32, pairs=True)[0])
        work = float((spans[1] - spans[0]).sum()) / (len(spans[0]) * k)
        return (f"fp32 convolution and its input gradient inside the native kernels, each motif "
                f"over its own columns ({100 * work:.0f}% of the dense multiply-adds)")
    order, groups = conv_plan(model.kernels, grouped=grouped_conv(dtype, device))
    work = sum((m1 - m0) * (hi - lo) for m0, m1, lo, hi in groups) / (len(order) * k)
    products = sum(hi > lo for *_, lo, hi in groups)
    return (f"{model.precision} matmul convolution in {products} column group(s) "
            f"({100 * work:.0f}% of the dense multiply-adds)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each way per allocator")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--motifs", default=str(CISBP) if CISBP.exists() else "jaspar:2024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (ours then trains as "
                        "training.fit runs it there: bf16 autocast)")
    parser.add_argument("--profile", action="store_true", help="print where our step spends its time")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    motifs = load_motifs(args.motifs)
    cfg = TISFMConfig.for_variant("full", n_motifs=len(motifs), n_outputs=8, length=300,
                                  kernel_width=motifs.max_width, era="paper")
    ours = TISFM(cfg, motifs.kernels(era="paper"), random_state=0).to(device)
    plain = ReferenceStyleTISFM(ours).to(device)
    g = torch.Generator().manual_seed(0)
    batches = [(one_hot_torch(torch.randint(0, 4, (args.batch_size, 300), generator=g)).to(device),
                torch.randn(args.batch_size, 8, generator=g).to(device)) for _ in range(4)]

    with torch.no_grad():
        x = batches[0][0][:32]
        ref = plain(x)
        ours.precision, exact = "fp32", ours(x)
        ours.precision = conv_precision(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            fast = ours(x).float()
    err_exact = float((exact - ref).abs().max())
    err_fast = float((fast - ref).abs().max() / ref.abs().max())
    assert err_exact < 1e-4, f"our fp32 forward differs from the plain one by {err_exact}"
    assert err_fast < 1e-2, f"our fast forward differs by {err_fast} relative"

    ways = {"plain": (plain, torch.optim.AdamW([p for p in plain.parameters() if p.requires_grad],
                                               lr=0.01), False),
            "ours": (ours, ProxAdam([p for p in ours.parameters() if p.requires_grad], lr=0.01,
                                    weight_decay=0.01), cuda)}
    ours.compiled = use_compile("auto", ours, device)
    t0 = time.perf_counter()
    train_step(*ways["ours"], batches[0])    # warm-up: compilation, oneDNN primitive caches
    warmup = time.perf_counter() - t0
    train_step(*ways["plain"], batches[0])
    if cuda:
        run = interleaved(ways, batches, args.steps)
        r = ratios(run)
        name = torch.cuda.get_device_name(device)
        print(f"ours: {conv_description(ours)} under bf16 autocast, first step {warmup:.1f} s")
        print(f"train_throughput: {r[0]:.1f}x ours {args.batch_size / med(run['ours'][0]):.0f} seq/s "
              f"vs plain fp32 {args.batch_size / med(run['plain'][0]):.0f} seq/s (per round "
              f"{r[1]:.1f}-{r[2]:.1f}x), {len(motifs)} motifs, batch {args.batch_size}, "
              f"{args.steps} interleaved steps, medians; GPU {name}; host {cpu_description()}")
        return
    # 1) default glibc allocator: how the reference runs
    default = interleaved(ways, batches, args.steps)
    # 2) allocator that keeps freed blocks, as tisfm_core.training.fit sets it on CPU (irreversible,
    #    so measured second, after one untimed step each: the heap grows once)
    tuned = keep_freed_memory()
    interleaved(ways, batches, 1)
    same = interleaved(ways, batches, args.steps)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            train_step(*ways["ours"], batches[0])
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    bs, cpu = args.batch_size, cpu_description()

    def line(label, times):
        wall, cpu_s = times
        print(f"{label}: median {med(wall):.2f} s/step = {bs / med(wall):.0f} seq/s "
              f"(steps {min(wall):.2f}-{max(wall):.2f} s; CPU time {med(cpu_s):.2f} s/step)")

    print(f"CPU: {cpu}")
    line("plain fp32 (reference style), default allocator", default["plain"])
    line("ours, default allocator", default["ours"])
    line(f"plain fp32, allocator keeping freed blocks{'' if tuned else ' (NOT available here)'}",
         same["plain"])
    line("ours as training runs it (same allocator)", same["ours"])
    print(f"ours: {conv_description(ours)}, fused motif block (chunk {ours.chunk_size}) and "
          f"attention with {native.description()}; torch.compile={ours.compiled}, first step "
          f"{warmup:.1f} s")
    print(f"forward agreement: fp32 max |diff| {err_exact:.1e}, fast max relative diff {err_fast:.1e}")
    r1, r2 = ratios(default), ratios(same)
    # r1: both on glibc's default allocator, r2: both on the one training sets, each timed in turn.
    # "as each runs" is what a user sees, the reference as it runs against ours as
    # tisfm_core.training.fit runs it; its two timings come from the two phases
    each = med(default["plain"][0]) / med(same["ours"][0])
    print(f"as each runs: {each:.1f}x, plain on the default allocator {bs / med(default['plain'][0]):.0f} "
          f"seq/s vs ours as training runs it {bs / med(same['ours'][0]):.0f} seq/s")
    print(f"train_throughput: {r1[0]:.1f}x ours {bs / med(default['ours'][0]):.0f} seq/s vs plain "
          f"{bs / med(default['plain'][0]):.0f} seq/s, both on the default allocator as the "
          f"reference runs (per round "
          f"{r1[1]:.1f}-{r1[2]:.1f}x, CPU time {r1[3]:.1f}x); same allocator for both: "
          f"{r2[0]:.1f}x vs {bs / med(same['plain'][0]):.0f} seq/s (per round {r2[1]:.1f}-{r2[2]:.1f}x, "
          f"CPU time {r2[3]:.1f}x); as each runs {each:.1f}x; {len(motifs)} motifs, batch {bs}, "
          f"{args.steps} interleaved steps, medians; {cpu}")


if __name__ == "__main__":
    main()
