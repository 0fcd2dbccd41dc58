#!/usr/bin/python3
"""ref_grads.py — PyTorch autograd goldens for the kernel tests (tests/kernels).

Run at test time with Debian's /usr/bin/python3 (torch 1.13):
    ref_grads.py OUT.bin
Writes named float32 tensors (inputs, forward outputs, gradients) that test_kn_grad_ref.c
reads and compares with the kn_* CPU ops. Fixed seeds; everything is computed in float32
by torch's own ops and autograd (no hand-written gradients here).

File format (little endian): b"KNG1", then records of
    u32 name_len, name bytes (ASCII), u32 count, count float32 values.
"""
import struct
import sys

import torch
import torch.nn.functional as F

torch.manual_seed(1234)
torch.set_num_threads(1)
OUT = {}


def put(name, t):
    OUT[name] = t.detach().to(torch.float32).reshape(-1).clone()  # a snapshot, not a view


def rnd(*shape, lo=-1.0, hi=1.0):
    return (torch.rand(*shape) * (hi - lo) + lo).requires_grad_(True)


def conv_case(tag, cin, h, w, cout, k, s, p, g):
    x, wt, b = rnd(cin, h, w), rnd(cout, cin // g, k, k), rnd(cout)
    y = F.conv2d(x[None], wt, b, stride=s, padding=p, groups=g)[0]
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", wt), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", wt.grad), ("db", b.grad)):
        put(f"{tag}.{n}", t)


def layernorm2d(x, w, b, eps):  # SAM's LayerNorm2d, on [C, H*W]
    u = x.mean(0, keepdim=True)
    s = (x - u).pow(2).mean(0, keepdim=True)
    return (x - u) / torch.sqrt(s + eps) * w[:, None] + b[:, None]


def point_sample(x, pts):  # detectron2 point_sample on x[C,H,W], pts[P,2] in [0,1]
    grid = (2.0 * pts - 1.0)[None, None]  # [1,1,P,2]
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)[0, :, 0, :]  # [C,P]


def sigmoid_ce_loss(inputs, targets, num_masks):  # HQ-SAM / Mask2Former
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(inputs, targets, num_masks):
    inputs = inputs.sigmoid().flatten(1)
    numerator = 2 * (inputs * targets).sum(-1)
    denominator = inputs.sum(-1) + targets.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    return loss.sum() / num_masks


M64 = (1 << 64) - 1


class SplitMix64:  # the generator of kn_rng_next / kn_rng_uniform
    def __init__(self, seed):
        self.s = seed & M64

    def next(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next() >> 40) / 16777216.0


def main():
    out_path = sys.argv[1]

    # ---- conv2d: dense, strided, 1x1, grouped, depthwise; convT 2x2 ----
    conv_case("conv_k3s1", 5, 7, 9, 4, 3, 1, 1, 1)
    conv_case("conv_k3s2", 5, 7, 9, 4, 3, 2, 1, 1)
    conv_case("conv_k1", 5, 7, 9, 4, 1, 1, 0, 1)
    conv_case("conv_g2", 6, 7, 9, 4, 3, 1, 0, 2)
    conv_case("conv_dw", 5, 7, 9, 5, 3, 2, 1, 5)
    conv_case("conv_big", 32, 24, 20, 16, 3, 1, 1, 1)  # enough work for the threads
    x, wt, b = rnd(5, 7, 9), rnd(5, 3, 2, 2), rnd(3)
    y = F.conv_transpose2d(x[None], wt, b, stride=2)[0]
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", wt), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", wt.grad), ("db", b.grad)):
        put(f"convt.{n}", t)

    # ---- LayerNorm2d [5, 7*29] (several 64-pixel blocks, last one partial), eps 1e-6;
    #      row LayerNorm [63, 5], eps 1e-5 ----
    x, w, b = rnd(5, 203, lo=-2, hi=2), rnd(5, lo=0.5, hi=1.5), rnd(5, lo=-0.5, hi=0.5)
    y = layernorm2d(x, w, b, 1e-6)
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", w), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", w.grad), ("db", b.grad)):
        put(f"ln2d.{n}", t)
    x, w, b = rnd(63, 5, lo=-2, hi=2), rnd(5, lo=0.5, hi=1.5), rnd(5, lo=-0.5, hi=0.5)
    y = F.layer_norm(x, (5,), w, b, 1e-5)
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", w), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", w.grad), ("db", b.grad)):
        put(f"ln.{n}", t)

    # ---- linear, gelu (exact), relu, sigmoid, softmax ----
    x, W, b = rnd(5, 7), rnd(3, 7), rnd(3)
    y = F.linear(x, W, b)
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", W), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", W.grad), ("db", b.grad)):
        put(f"linear.{n}", t)
    for name, fn in (("gelu", F.gelu), ("relu", F.relu), ("sigmoid", torch.sigmoid),
                     ("softmax", lambda t: torch.softmax(t, dim=1))):
        x = rnd(5, 9, lo=-4, hi=4)
        y = fn(x)
        dy = torch.rand_like(y) * 2 - 1
        y.backward(dy)
        for n, t in (("x", x), ("y", y), ("dy", dy), ("dx", x.grad)):
            put(f"{name}.{n}", t)

    # ---- attention: heads 3, d 4, Nq 5, Nk 11, additive bias, scale 1/sqrt(d) ----
    H, D, NQ, NK = 3, 4, 5, 11
    q, k, v = rnd(NQ, H * D, lo=-1.5, hi=1.5), rnd(NK, H * D, lo=-1.5, hi=1.5), rnd(NK, H * D)
    bias = rnd(H, NQ, NK)
    qh = q.reshape(NQ, H, D).transpose(0, 1)
    kh = k.reshape(NK, H, D).transpose(0, 1)
    vh = v.reshape(NK, H, D).transpose(0, 1)
    att = torch.softmax(qh @ kh.transpose(1, 2) * (D ** -0.5) + bias, dim=-1)
    o = (att @ vh).transpose(0, 1).reshape(NQ, H * D)
    do = torch.rand_like(o) * 2 - 1
    o.backward(do)
    for n, t in (("q", q), ("k", k), ("v", v), ("bias", bias), ("out", o), ("dout", do),
                 ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
        put(f"attn.{n}", t)

    # ---- point_sample (grid_sample align_corners=False), some points past the border ----
    x = rnd(5, 7, 9)
    pts = torch.rand(29, 2) * 1.16 - 0.08
    o = point_sample(x, pts)
    do = torch.rand_like(o) * 2 - 1
    o.backward(do)
    for n, t in (("x", x), ("pts", pts), ("out", o), ("dout", do), ("dx", x.grad)):
        put(f"ps.{n}", t)

    # ---- BCE + Dice on 2 masks x 37 points, num_masks 2 ----
    logits = rnd(2, 37, lo=-6, hi=6)
    tgt = torch.rand(2, 37)
    tgt[:, ::3] = (torch.arange(0, 37, 3) % 2).float()
    loss = sigmoid_ce_loss(logits, tgt, 2.0) + dice_loss(logits, tgt, 2.0)
    loss.backward()
    for n, t in (("logits", logits), ("tgt", tgt), ("loss", loss.reshape(1)),
                 ("dlogits", logits.grad)):
        put(f"bce.{n}", t)

    # ---- softmax cross-entropy, batch 4 x 7 classes, mean reduction ----
    logits = rnd(4, 7, lo=-3, hi=3)
    labels = torch.tensor([0, 6, 3, 3])
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for n, t in (("logits", logits), ("labels", labels.float()), ("loss", loss.reshape(1)),
                 ("dlogits", logits.grad)):
        put(f"ce.{n}", t)

    # ---- row LayerNorm with C = 32 (vectorised fast path where built with AVX-512) ----
    x, w, b = rnd(9, 32, lo=-2, hi=2), rnd(32, lo=0.5, hi=1.5), rnd(32, lo=-0.5, hi=0.5)
    y = F.layer_norm(x, (32,), w, b, 1e-5)
    dy = torch.rand_like(y) * 2 - 1
    y.backward(dy)
    for n, t in (("x", x), ("w", w), ("b", b), ("y", y), ("dy", dy), ("dx", x.grad),
                 ("dw", w.grad), ("db", b.grad)):
        put(f"ln32.{n}", t)

    # ---- uncertainty point selection (detectron2 get_uncertain_point_coords_with_randomness
    #      with uncertainty -|logit|), candidates drawn from the same splitmix64 stream ----
    Hm, Wm, P, OV, IMP = 16, 20, 28, 3, 0.75
    lm = torch.randn(1, Hm, Wm)
    rng = SplitMix64(42)
    M = P * OV
    cand = torch.tensor([rng.uniform() for _ in range(2 * M)], dtype=torch.float32).reshape(M, 2)
    unc = -point_sample(lm, cand)[0].abs()
    n_imp = int(IMP * P)
    idx = torch.topk(unc, k=n_imp).indices
    rand = torch.tensor([rng.uniform() for _ in range(2 * (P - n_imp))],
                        dtype=torch.float32).reshape(-1, 2)
    put("unc.logits", lm)
    put("unc.imp", cand[idx])
    put("unc.rand", rand)

    # ---- chain: the adapter's mask_feature branch end to end, as the trainer composes it:
    #      fused = up + conv3(gelu(ln2d(conv3(up)))), logits = hyper · fused,
    #      loss = BCE + Dice at 60 points (targets point-sampled from a 0/1 mask) ----
    C, Hc, Wc, P = 8, 24, 20, 60
    up = torch.rand(C, Hc, Wc) * 2 - 1
    w1, b1 = rnd(16, C, 3, 3, lo=-0.3, hi=0.3), rnd(16, lo=-0.1, hi=0.1)
    lw, lb = rnd(16, lo=0.5, hi=1.5), rnd(16, lo=-0.5, hi=0.5)
    w2, b2 = rnd(C, 16, 3, 3, lo=-0.3, hi=0.3), rnd(C, lo=-0.1, hi=0.1)
    hyper = rnd(C)
    h1 = F.conv2d(up[None], w1, b1, padding=1)[0]
    h2 = F.gelu(layernorm2d(h1.reshape(16, -1), lw, lb, 1e-6)).reshape(16, Hc, Wc)
    fused = up + F.conv2d(h2[None], w2, b2, padding=1)[0]
    logits = (hyper @ fused.reshape(C, -1)).reshape(1, Hc, Wc)
    mask = (torch.rand(1, Hc, Wc) > 0.6).float()
    pts = torch.rand(P, 2)
    pl = point_sample(logits, pts)  # [1, P]
    tg = point_sample(mask, pts)
    loss = sigmoid_ce_loss(pl, tg, 1.0) + dice_loss(pl, tg, 1.0)
    loss.backward()
    for n, t in (("up", up), ("w1", w1), ("b1", b1), ("lw", lw), ("lb", lb), ("w2", w2),
                 ("b2", b2), ("hyper", hyper), ("mask", mask), ("pts", pts),
                 ("loss", loss.reshape(1)), ("dw1", w1.grad), ("db1", b1.grad),
                 ("dlw", lw.grad), ("dlb", lb.grad), ("dw2", w2.grad), ("db2", b2.grad),
                 ("dhyper", hyper.grad)):
        put(f"chain.{n}", t)

    # ---- Adam: 5 steps on 50 params, torch.optim.Adam, wd 0 and wd 0.01 ----
    for tag, wd in (("adam0", 0.0), ("adam1", 0.01)):
        p = torch.nn.Parameter(torch.rand(50) * 2 - 1)
        put(f"{tag}.p0", p)
        opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
        grads, ps = [], []
        for _ in range(5):
            g = torch.randn(50) * 0.1
            p.grad = g.clone()
            opt.step()
            grads.append(g)
            ps.append(p.detach().clone())
        put(f"{tag}.g", torch.stack(grads))
        put(f"{tag}.p", torch.stack(ps))

    with open(out_path, "wb") as f:
        f.write(b"KNG1")
        for name, t in OUT.items():
            nb = name.encode("ascii")
            f.write(struct.pack("<I", len(nb)) + nb + struct.pack("<I", t.numel()))
            f.write(t.numpy().astype("<f4").tobytes())
    print(f"ref_grads: wrote {len(OUT)} tensors to {out_path}")


if __name__ == "__main__":
    main()
