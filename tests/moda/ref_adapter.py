#!/usr/bin/python3
"""ref_adapter.py — an independent PyTorch model of SAM's mask decoder with the MoDA hq token
and adapter head, written from the SAM / HQ-SAM semantics (plain attention, no re-association,
autograd for gradients). Used by tests/moda and by `moda bench train --vs-torch`.

  ref_adapter.py grad  WEIGHTS IN.safetensors OUT.safetensors
      IN holds emb [256,64,64], early [Ce,64,64], pts [n,3] (1024 frame, label), G [256,256]
      and the adapter parameters (adapter.h names, prefixed "a."). Writes logits (adapter
      mask), sam0 (SAM's mask-0 logits) and "grad.<param>" = d sum(logits*G) / d param.
  ref_adapter.py bench WEIGHTS [--early C] [--batch B] [--reps R] [--threads T]
      times one training step (batch B: decoder + hq token + head, 12,544-point BCE+Dice on
      uncertain points, backward, Adam) and prints {"torch_step_ms": ...} as JSON.

The hq token is one-way: it is a query in every token attention but never a key/value of
the SAM tokens or the image, and it does not attend to itself.
"""
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DT = {"F32": np.float32, "U8": np.uint8, "I64": np.int64, "I32": np.int32}


def st_read(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    hdr = json.loads(buf[8:8 + n])
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        a = np.frombuffer(buf[8 + n + b:8 + n + e], dtype=DT[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.copy())
    return out


def st_write(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy().astype(np.float32))
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Sam:
    def __init__(self, w):
        self.w = w
        g = w["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
        ys, xs = torch.meshgrid(torch.arange(64, dtype=torch.float32),
                                torch.arange(64, dtype=torch.float32), indexing="ij")
        c = torch.stack([(xs + 0.5) / 64, (ys + 0.5) / 64], -1) * 2 - 1
        v = 2 * math.pi * (c @ g)
        self.pe = torch.cat([torch.sin(v), torch.cos(v)], -1).reshape(4096, 256)

    def attn(self, p, q, k, v, heads=8, kmask=None):
        w = self.w
        q = F.linear(q, w[p + ".q_proj.weight"], w[p + ".q_proj.bias"])
        k = F.linear(k, w[p + ".k_proj.weight"], w[p + ".k_proj.bias"])
        v = F.linear(v, w[p + ".v_proj.weight"], w[p + ".v_proj.bias"])
        d = q.shape[-1] // heads
        q = q.reshape(-1, heads, d).transpose(0, 1)
        k = k.reshape(-1, heads, d).transpose(0, 1)
        v = v.reshape(-1, heads, d).transpose(0, 1)
        a = q @ k.transpose(1, 2) / math.sqrt(d)
        if kmask is not None:
            a = a.masked_fill(kmask, float("-inf"))
        o = (a.softmax(-1) @ v).transpose(0, 1).reshape(-1, heads * d)
        return F.linear(o, w[p + ".out_proj.weight"], w[p + ".out_proj.bias"])

    def ln(self, p, x, eps=1e-5):
        return F.layer_norm(x, (x.shape[-1],), self.w[p + ".weight"], self.w[p + ".bias"], eps)

    def mlp3(self, p, x):
        w = self.w
        for i in range(3):
            x = F.linear(x, w[f"{p}.layers.{i}.weight"], w[f"{p}.layers.{i}.bias"])
            if i < 2:
                x = F.relu(x)
        return x

    def sparse(self, pts):
        w = self.w
        g = w["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
        out = []
        for x, y, lab in pts.tolist():
            if lab == -1:
                out.append(w["prompt_encoder.not_a_point_embed.weight"][0])
                continue
            c = torch.tensor([(x + 0.5) / 1024, (y + 0.5) / 1024]) * 2 - 1
            v = 2 * math.pi * (c @ g)
            e = torch.cat([torch.sin(v), torch.cos(v)])
            out.append(e + w[f"prompt_encoder.point_embeddings.{int(lab)}.weight"][0])
        return torch.stack(out)

    def decode(self, emb, pts, hq_token):
        """emb [256,64,64], pts [n,3]; returns (sam mask-0 logits, hq_out [256], up [32,256,256])"""
        w = self.w
        tr = "mask_decoder.transformer"
        toks = torch.cat([w["mask_decoder.iou_token.weight"], w["mask_decoder.mask_tokens.weight"],
                          self.sparse(pts)], 0)
        nt = toks.shape[0]
        T0 = torch.cat([toks, hq_token.reshape(1, 256)], 0)  # hq is the last row
        kmask = torch.zeros(nt + 1, dtype=torch.bool)
        kmask[nt] = True  # nobody attends to hq (itself included)
        keys = (emb.reshape(256, 4096).t() + w["prompt_encoder.no_mask_embed.weight"][0])
        Q = T0
        for l in range(2):
            p = f"{tr}.layers.{l}"
            if l == 0:
                Q = self.attn(p + ".self_attn", Q, Q, Q, kmask=kmask)
            else:
                q = Q + T0
                Q = Q + self.attn(p + ".self_attn", q, q, Q, kmask=kmask)
            Q = self.ln(p + ".norm1", Q)
            Q = Q + self.attn(p + ".cross_attn_token_to_image", Q + T0, keys + self.pe, keys)
            Q = self.ln(p + ".norm2", Q)
            h = F.relu(F.linear(Q, w[p + ".mlp.lin1.weight"], w[p + ".mlp.lin1.bias"]))
            Q = Q + F.linear(h, w[p + ".mlp.lin2.weight"], w[p + ".mlp.lin2.bias"])
            Q = self.ln(p + ".norm3", Q)
            qs = (Q + T0)[:nt]  # image->token: the SAM tokens only
            keys = keys + self.attn(p + ".cross_attn_image_to_token", keys + self.pe, qs, Q[:nt])
            keys = self.ln(p + ".norm4", keys)
        Q = Q + self.attn(f"{tr}.final_attn_token_to_image", Q + T0, keys + self.pe, keys)
        Q = self.ln(f"{tr}.norm_final_attn", Q)
        src = keys.t().reshape(1, 256, 64, 64)
        u = F.conv_transpose2d(src, w["mask_decoder.output_upscaling.0.weight"],
                               w["mask_decoder.output_upscaling.0.bias"], stride=2)
        u = ln2d(u, w["mask_decoder.output_upscaling.1.weight"], w["mask_decoder.output_upscaling.1.bias"])
        u = F.gelu(u)
        u = F.gelu(F.conv_transpose2d(u, w["mask_decoder.output_upscaling.3.weight"],
                                      w["mask_decoder.output_upscaling.3.bias"], stride=2))[0]
        hyp0 = self.mlp3("mask_decoder.output_hypernetworks_mlps.0", Q[1])
        sam0 = (hyp0 @ u.reshape(32, -1)).reshape(256, 256)
        return sam0, Q[nt], u


def ln2d(x, w, b, eps=1e-6):
    m = x.mean(1, keepdim=True)
    v = (x - m).pow(2).mean(1, keepdim=True)
    x = (x - m) / torch.sqrt(v + eps)
    return x * w[:, None, None] + b[:, None, None]


def branch(a, p, x, conv):
    if conv:
        y = F.conv2d(x, a[p + ".0.weight"], a[p + ".0.bias"], padding=1)
    else:
        y = F.conv_transpose2d(x, a[p + ".0.weight"], a[p + ".0.bias"], stride=2)
    y = F.gelu(ln2d(y, a[p + ".1.weight"], a[p + ".1.bias"]))
    if conv:
        return F.conv2d(y, a[p + ".3.weight"], a[p + ".3.bias"], padding=1)
    return F.conv_transpose2d(y, a[p + ".3.weight"], a[p + ".3.bias"], stride=2)


def adapter_logits(sam, a, emb, early, pts):
    sam0, hq, up = sam.decode(emb, pts, a["hq_token"])
    h = hq
    for i in range(3):
        h = F.linear(h, a[f"hq_mlp.layers.{i}.weight"], a[f"hq_mlp.layers.{i}.bias"])
        if i < 2:
            h = F.relu(h)
    fused = (branch(a, "mask_feature", up[None], True) + branch(a, "embedding_encoder", emb[None], False)
             + branch(a, "compress", early[None], False))[0] + up
    return (h @ fused.reshape(32, -1)).reshape(256, 256), sam0


def cmd_grad(weights, inp, outp):
    sam = Sam(st_read(weights))
    t = st_read(inp)
    a = {k[2:]: v.clone().requires_grad_(True) for k, v in t.items() if k.startswith("a.")}
    logits, sam0 = adapter_logits(sam, a, t["emb"], t["early"], t["pts"])
    (logits * t["G"]).sum().backward()
    out = {"logits": logits, "sam0": sam0}
    for k, v in a.items():
        out["grad." + k] = v.grad
    st_write(outp, out)


def point_sample(x, pts):
    return F.grid_sample(x[None, None], (2 * pts - 1)[None, None], align_corners=False)[0, 0, 0]


def cmd_bench(weights, early_c=160, batch=4, reps=3, threads=0):
    if threads:
        torch.set_num_threads(threads)
    sam = Sam(st_read(weights))
    g = torch.Generator().manual_seed(0)
    a = {}
    def p(name, *shape, zero=False):
        a[name] = (torch.zeros(shape) if zero else torch.randn(shape, generator=g) * 0.02).requires_grad_(True)
    p("hq_token", 1, 256)
    for i, o in enumerate([256, 256, 32]):
        p(f"hq_mlp.layers.{i}.weight", o, 256), p(f"hq_mlp.layers.{i}.bias", o)
    for name, c0, mid, k in [("mask_feature", 32, 64, 3), ("embedding_encoder", 256, 64, 2),
                             ("compress", early_c, 256, 2)]:
        if k == 3:
            p(name + ".0.weight", mid, c0, 3, 3), p(name + ".3.weight", 32, mid, 3, 3)
        else:
            p(name + ".0.weight", c0, mid, 2, 2), p(name + ".3.weight", mid, 32, 2, 2)
        p(name + ".0.bias", mid), p(name + ".1.weight", mid), p(name + ".1.bias", mid), p(name + ".3.bias", 32)
    opt = torch.optim.Adam(a.values(), lr=1e-3, betas=(0.9, 0.999))
    embs = [torch.randn(256, 64, 64, generator=g) for _ in range(batch)]
    earlies = [torch.randn(early_c, 64, 64, generator=g) for _ in range(batch)]
    gts = [(torch.rand(256, 256, generator=g) > 0.7).float() for _ in range(batch)]
    pts = torch.tensor([[300.0, 200.0, 2.0], [700.0, 600.0, 3.0]])
    P = 12544
    best = 1e30
    for r in range(reps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = 0
        for b in range(batch):
            logits, _ = adapter_logits(sam, a, embs[b], earlies[b], pts)
            with torch.no_grad():  # uncertain points (detectron2 semantics)
                cand = torch.rand(P * 3, 2, generator=g)
                unc = -point_sample(logits, cand).abs()
                idx = unc.topk(int(0.75 * P)).indices
                pt = torch.cat([cand[idx], torch.rand(P - idx.numel(), 2, generator=g)])
            lp = point_sample(logits, pt)
            tp = point_sample(gts[b], pt)
            s = lp.sigmoid()
            bce = F.binary_cross_entropy_with_logits(lp, tp)
            dice = 1 - (2 * (s * tp).sum() + 1) / (s.sum() + tp.sum() + 1)
            loss = loss + (bce + dice) / batch
        loss.backward()
        opt.step()
        dt = (time.perf_counter() - t0) * 1e3
        if r > 0:
            best = min(best, dt)
    print(json.dumps({"torch_step_ms": best, "torch_threads": torch.get_num_threads(),
                      "batch": batch, "torch_version": torch.__version__}))


if __name__ == "__main__":
    torch.manual_seed(0)
    if len(sys.argv) >= 5 and sys.argv[1] == "grad":
        with torch.no_grad():
            pass
        cmd_grad(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) >= 3 and sys.argv[1] == "bench":
        args = sys.argv[3:]
        kw = {}
        for i in range(0, len(args) - 1, 2):
            kw[{"--early": "early_c", "--batch": "batch", "--reps": "reps", "--threads": "threads"}[args[i]]] = int(args[i + 1])
        cmd_bench(sys.argv[2], **kw)
    else:
        print(__doc__)
        sys.exit(2)
