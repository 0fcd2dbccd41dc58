#!/usr/bin/python3
"""ref_selector.py — an independent PyTorch model of the MoDA domain selector (common/selector.h),
written from the method's description, with autograd for the gradients. Used by
test_selector_ref (tests/selector/CMakeLists.txt, test selector_grad_ref).

  ref_selector.py WORKDIR
      reads WORKDIR/cfg.txt, blocks.bin, taps.bin, params.bin (raw little-endian float32,
      layouts below) and writes WORKDIR/out.bin: for each case of cfg.txt, in order,
      [loss, probs (n_dom), d loss / d params (same flat layout as params.bin)] as float32.
      Exit 77 when torch is missing.

cfg.txt: "n_patch n_tok head_dim dim0 dim1 depth0 depth1 n_dom n_case" then n_case lines
"label weight"; loss = weight * cross_entropy(logits, label).
blocks.bin: per block (stage-0 blocks then stage-1 blocks), PyTorch layouts:
  ln1.w [C], ln1.b [C], qkv.w [3C, C], qkv.b [3C], proj.w [C, C], proj.b [C],
  ln2.w [C], ln2.b [C], fc1.w [4C, C], fc1.b [4C], fc2.w [C, 4C], fc2.b [C].
  qkv rows are TinyViT's per-head layout: head h owns rows h*3d .. h*3d+3d as [q | k | v].
taps.bin: per block [n_patch, 2C] rows = [k (C) | v (C)], head h at columns h*d.
params.bin: tokens [n_tok, C0], merge.weight [C1, C0], merge.bias [C1],
  keys.weight [n_dom, C1], keys.bias [n_dom].

Model: the learned tokens run through the frozen blocks next to the (constant) patch tokens.
Per block, token rows only: pre-norm attention whose queries are the tokens and whose keys and
values are the patch k/v (taps) followed by the tokens' own k/v (the patches never see the
tokens), then a pre-norm GELU (erf) MLP; LayerNorm eps 1e-5, scale 1/sqrt(d), no position bias.
Between the stages the tokens go through the learned merge linear; the first token's final
state through the keys linear gives one logit per domain. Computed in float64.
"""
import math
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as ex:  # the C test reports this as a skip
    print("ref_selector: %s" % ex, file=sys.stderr)
    sys.exit(77)

DT = torch.float64
NAMES = ["ln1_w", "ln1_b", "qkv_w", "qkv_b", "proj_w", "proj_b",
         "ln2_w", "ln2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b"]


def shapes(C):
    return [(C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,),
            (C,), (C,), (4 * C, C), (4 * C,), (C, 4 * C), (C,)]


class Reader:
    def __init__(self, path):
        self.a = np.fromfile(path, dtype="<f4")
        self.off = 0

    def take(self, *shape):
        n = int(np.prod(shape))
        if self.off + n > self.a.size:
            raise ValueError("file too short")
        t = torch.from_numpy(self.a[self.off:self.off + n].astype(np.float64)).reshape(shape)
        self.off += n
        return t

    def done(self):
        return self.off == self.a.size


def token_block(t, w, kv_patch, C, d):
    """One frozen block on the token rows t [T, C]; kv_patch [P, 2C] constant."""
    T, H = t.shape[0], C // d
    x = F.layer_norm(t, (C,), w["ln1_w"], w["ln1_b"], eps=1e-5)
    qkv = F.linear(x, w["qkv_w"], w["qkv_b"]).view(T, H, 3, d)  # per head [q | k | v]
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    P = kv_patch.shape[0]
    keys = torch.cat([kv_patch[:, :C].reshape(P, H, d), k], dim=0)  # [P+T, H, d]
    vals = torch.cat([kv_patch[:, C:].reshape(P, H, d), v], dim=0)
    att = torch.softmax(torch.einsum("thd,nhd->htn", q, keys) / math.sqrt(d), dim=-1)
    o = torch.einsum("htn,nhd->thd", att, vals).reshape(T, C)
    t = t + F.linear(o, w["proj_w"], w["proj_b"])
    y = F.layer_norm(t, (C,), w["ln2_w"], w["ln2_b"], eps=1e-5)
    y = F.linear(F.gelu(F.linear(y, w["fc1_w"], w["fc1_b"])), w["fc2_w"], w["fc2_b"])
    return t + y


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    wd = sys.argv[1]
    with open(os.path.join(wd, "cfg.txt")) as f:
        lines = f.read().split("\n")
    P, T, d, C0, C1, D0, D1, ND, NC = (int(x) for x in lines[0].split())
    cases = [(int(l.split()[0]), float(l.split()[1])) for l in lines[1:1 + NC]]
    dims = [C0] * D0 + [C1] * D1

    rb = Reader(os.path.join(wd, "blocks.bin"))
    blocks = []
    for C in dims:
        blocks.append({n: rb.take(*s) for n, s in zip(NAMES, shapes(C))})
    rt = Reader(os.path.join(wd, "taps.bin"))
    taps = [rt.take(P, 2 * C) for C in dims]
    rp = Reader(os.path.join(wd, "params.bin"))
    par = {"tokens": rp.take(T, C0), "merge_w": rp.take(C1, C0), "merge_b": rp.take(C1),
           "keys_w": rp.take(ND, C1), "keys_b": rp.take(ND)}
    if not (rb.done() and rt.done() and rp.done()):
        print("ref_selector: input sizes do not match cfg.txt", file=sys.stderr)
        return 1
    order = ["tokens", "merge_w", "merge_b", "keys_w", "keys_b"]

    out = []
    for label, weight in cases:
        p = {k: v.clone().requires_grad_(True) for k, v in par.items()}
        t = p["tokens"]
        for i, (C, w, tap) in enumerate(zip(dims, blocks, taps)):
            if i == D0:
                t = F.linear(t, p["merge_w"], p["merge_b"])
            t = token_block(t, w, tap, C, d)
        logits = F.linear(t[0], p["keys_w"], p["keys_b"])
        loss = weight * F.cross_entropy(logits[None], torch.tensor([label]))
        loss.backward()
        out.append(loss.detach().reshape(1))
        out.append(torch.softmax(logits.detach(), dim=0))
        for k in order:
            out.append(p[k].grad.reshape(-1))
    np.concatenate([o.numpy() for o in out]).astype("<f4").tofile(os.path.join(wd, "out.bin"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
