#!/usr/bin/python3
"""ref_vit.py — PyTorch reference and fixture writer for the ViT encoder and .pth tests.

An independent re-implementation of the official SAM ImageEncoderViT semantics
(window_partition / window_unpartition with zero padding, Attention with decomposed
relative position on the unscaled q, Block, neck with LayerNorm2d), with the official
state-dict key names, plus writers for the .pth fixtures the C tests read.

    ref_vit.py tiny DIR      tiny.pth, tiny_p4.pth, tiny_bn.pth: dtypes, views, strides,
                             nesting, pickle protocols 2 and 4, one Conv2d_BN (test seeds)
    ref_vit.py small DIR     small ViT (C=128, depth 4, global {1,3}) .pth + stage goldens,
                             attention-op goldens, an f16 copy, TinyViT Conv2d_BN fragment,
                             hostile files
    ref_vit.py mobilesam SRC.safetensors DIR
                             MobileSAM-style .pth (Conv2d_BN unfolded, TinyViT buffers) from a
                             converted file, to check the .pth path reproduces it
    ref_vit.py vitb DIR      full ViT-B key set (random, 91M params) + manifest.txt and a
                             full-size forward golden (vitb_img/emb/early.bin)

Goldens are raw little-endian float32 (.bin). Fixed seeds. Run with /usr/bin/python3.
"""
import collections
import io
import math
import os
import pickle
import sys
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

GRID = 64


# ---- official semantics, re-implemented ---------------------------------------------------

def window_partition(x, ws):
    """x [B,H,W,C] -> windows [B*nw, ws, ws, C], zero padding bottom/right; (Hp, Wp)."""
    B, H, W, C = x.shape
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    x = x.view(B, Hp // ws, ws, Wp // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws, ws, C), (Hp, Wp)


def window_unpartition(win, ws, pad_hw, hw):
    Hp, Wp = pad_hw
    H, W = hw
    B = win.shape[0] // (Hp * Wp // ws // ws)
    x = win.view(B, Hp // ws, Wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, Hp, Wp, -1)[:, :H, :W, :].contiguous()


def rel_table(size, table):
    """R[i, j] = table[i - j + size - 1] (exact 2S-1 rows only)."""
    assert table.shape[0] == 2 * size - 1
    idx = torch.arange(size)[:, None] - torch.arange(size)[None, :] + size - 1
    return table[idx]


def relpos_attention_core(q, k, v, rel_h, rel_w, S, scale):
    """q,k,v [B, S*S, d] -> [B, S*S, d]; logits get q·Rh + q·Rw with the UNSCALED q."""
    B, N, d = q.shape
    attn = (q * scale) @ k.transpose(-2, -1)
    Rh, Rw = rel_table(S, rel_h), rel_table(S, rel_w)
    rq = q.reshape(B, S, S, d)
    bh = torch.einsum("bhwc,hkc->bhwk", rq, Rh)
    bw = torch.einsum("bhwc,wkc->bhwk", rq, Rw)
    attn = (attn.view(B, S, S, S, S) + bh[:, :, :, :, None] + bw[:, :, :, None, :]).view(B, N, N)
    return attn.softmax(dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, dim, heads, S):
        super().__init__()
        self.heads, self.S = heads, S
        hd = dim // heads
        self.scale = hd ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.randn(2 * S - 1, hd) * 0.5)
        self.rel_pos_w = nn.Parameter(torch.randn(2 * S - 1, hd) * 0.5)

    def forward(self, x):  # x [B, S, S, C]
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, B * self.heads, H * W, -1).unbind(0)
        o = relpos_attention_core(q, k, v, self.rel_pos_h, self.rel_pos_w, H, self.scale)
        o = o.view(B, self.heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(o)


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.lin2(F.gelu(self.lin1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, window):
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, window if window > 0 else GRID)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, 4 * dim)

    def forward(self, x):  # [B, 64, 64, C]
        s = x
        x = self.norm1(x)
        if self.window > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad = window_partition(x, self.window)
            x = self.attn(x)
            x = window_unpartition(x, self.window, pad, (H, W))
        else:
            x = self.attn(x)
        x = s + x
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.Module):
    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class PatchEmbed(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 16, 16)


class Encoder(nn.Module):
    def __init__(self, dim, depth, heads, global_idx, window=14):
        super().__init__()
        self.patch_embed = PatchEmbed(dim)
        self.pos_embed = nn.Parameter(torch.randn(1, GRID, GRID, dim) * 0.1)
        self.blocks = nn.ModuleList(
            Block(dim, heads, 0 if i in global_idx else window) for i in range(depth))
        self.neck = nn.Sequential(nn.Conv2d(dim, 256, 1, bias=False), LayerNorm2d(256),
                                  nn.Conv2d(256, 256, 3, padding=1, bias=False), LayerNorm2d(256))
        self.global_idx = global_idx

    def embed(self, img):
        return self.patch_embed.proj(img).permute(0, 2, 3, 1) + self.pos_embed


def randomize(m, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
               (name.startswith("neck.") and name.endswith("weight") and p.dim() == 1):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias") and p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "rel_pos" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name == "pos_embed":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))


def official_sd(enc):
    sd = collections.OrderedDict()
    src = enc.state_dict()
    for k, v in src.items():
        sd["image_encoder." + k] = v
    sd._metadata = getattr(src, "_metadata", collections.OrderedDict())
    return sd


def dump(path, t):
    t.detach().contiguous().float().numpy().astype("<f4").tofile(path)


# ---- writers --------------------------------------------------------------------------------

def write_tiny(d):
    sd = collections.OrderedDict()
    base = torch.arange(10, dtype=torch.float32)
    sd["a.weight"] = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    sd["a.t"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()
    sd["base"] = base
    sd["view"] = base[2:8:2]
    sd["h"] = torch.tensor([1.5, -2.0, 65504.0, 2.0 ** -24, float("inf")], dtype=torch.float16)
    sd["bf"] = torch.tensor([1.0, -3.5], dtype=torch.bfloat16)
    sd["d"] = torch.tensor([[0.25]], dtype=torch.float64)
    sd["i"] = torch.tensor([-1, 2 ** 40], dtype=torch.int64)
    sd["i32"] = torch.tensor([7, -7], dtype=torch.int32)
    sd["scalar"] = torch.tensor(3.0)
    sd["empty"] = torch.zeros(0, 4)
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save({"model": sd, "epoch": 3, "lr": 0.5, "note": "tiny"}, os.path.join(d, "tiny.pth"))
    # protocol 4 (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE), under "state_dict"
    torch.save({"state_dict": sd, "x": 1.5}, os.path.join(d, "tiny_p4.pth"), pickle_protocol=4)
    # a minimal MobileSAM-like state dict (fuzz seed for the conversion path)
    bn = collections.OrderedDict()
    bn["image_encoder.patch_embed.seq.0.c.weight"] = torch.tensor([[[[2.0]]], [[[-1.0]]]])
    bn["image_encoder.patch_embed.seq.0.bn.weight"] = torch.tensor([1.0, 0.5])
    bn["image_encoder.patch_embed.seq.0.bn.bias"] = torch.tensor([0.25, 0.0])
    bn["image_encoder.patch_embed.seq.0.bn.running_mean"] = torch.tensor([1.0, -2.0])
    bn["image_encoder.patch_embed.seq.0.bn.running_var"] = torch.tensor([3.0, 0.25])
    bn["image_encoder.patch_embed.seq.0.bn.num_batches_tracked"] = torch.tensor(7)
    bn["image_encoder.layers.1.blocks.0.attn.attention_biases"] = torch.ones(2, 3)
    bn["image_encoder.layers.1.blocks.0.attn.attention_bias_idxs"] = torch.zeros(2, 2, dtype=torch.int64)
    torch.save(bn, os.path.join(d, "tiny_bn.pth"))


def write_tinyvit_fragment(d):
    """MobileSAM-style Conv2d_BN pairs + attention buffers, eval-mode golden."""
    g = torch.Generator().manual_seed(7)

    class Conv2dBN(nn.Sequential):
        def __init__(self, a, b, k, s, p):
            super().__init__()
            self.add_module("c", nn.Conv2d(a, b, k, s, p, bias=False))
            self.add_module("bn", nn.BatchNorm2d(b))

    seq0 = Conv2dBN(3, 16, 3, 2, 1)
    conv1 = Conv2dBN(16, 32, 1, 1, 0)
    with torch.no_grad():
        for m in (seq0, conv1):
            m.c.weight.copy_(torch.randn(m.c.weight.shape, generator=g) * 0.3)
            m.bn.weight.copy_(torch.rand(m.bn.weight.shape, generator=g) + 0.5)
            m.bn.bias.copy_(torch.randn(m.bn.bias.shape, generator=g) * 0.2)
            m.bn.running_mean.copy_(torch.randn(m.bn.running_mean.shape, generator=g) * 0.3)
            m.bn.running_var.copy_(torch.rand(m.bn.running_var.shape, generator=g) * 2 + 0.1)
            m.bn.num_batches_tracked.fill_(100)
    seq0.eval()
    conv1.eval()
    sd = collections.OrderedDict()
    for k, v in seq0.state_dict().items():
        sd["image_encoder.patch_embed.seq.0." + k] = v
    for k, v in conv1.state_dict().items():
        sd["image_encoder.layers.0.blocks.0.conv1." + k] = v
    sd["image_encoder.layers.1.blocks.0.attn.attention_biases"] = torch.randn(4, 49, generator=g)
    sd["image_encoder.layers.1.blocks.0.attn.attention_bias_idxs"] = torch.randint(0, 49, (49, 49), generator=g)
    sd["image_encoder.neck.1.weight"] = torch.ones(256)
    torch.save(sd, os.path.join(d, "tinyvit_frag.pth"))
    x = torch.randn(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        y0 = seq0(x)
        y1 = conv1(y0)
    dump(os.path.join(d, "tv_x.bin"), x)
    dump(os.path.join(d, "tv_y0.bin"), y0)
    dump(os.path.join(d, "tv_y1.bin"), y1)


def write_zip64(src, dst):
    """Same members, every record in zip64 form (as torch writes files > 4 GiB)."""
    zin = zipfile.ZipFile(src)
    lim = (zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT)
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1
    try:
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED, allowZip64=True) as zo:
            for i in zin.infolist():
                with zo.open(i.filename, "w", force_zip64=True) as f:
                    f.write(zin.read(i.filename))
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = lim


def write_hostile(d, good):
    write_zip64(good, os.path.join(d, "small_zip64.pth"))
    raw = open(good, "rb").read()
    # deflated: same members, compressed
    zin = zipfile.ZipFile(good)
    with zipfile.ZipFile(os.path.join(d, "bad_deflated.pth"), "w", zipfile.ZIP_DEFLATED) as zo:
        for i in zin.infolist():
            zo.writestr(i.filename, zin.read(i.filename))
    open(os.path.join(d, "bad_truncated.pth"), "wb").write(raw[: len(raw) // 2])
    open(os.path.join(d, "bad_notzip.pth"), "wb").write(b"hello, this is not a checkpoint" * 4)
    torch.save({"w": torch.ones(2)}, os.path.join(d, "bad_legacy.pth"), _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), os.path.join(d, "bad_script.pt"))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    with zipfile.ZipFile(os.path.join(d, "bad_evil.pth"), "w", zipfile.ZIP_STORED) as zo:
        zo.writestr("archive/data.pkl", pickle.dumps({"x": Evil()}, protocol=2))
        zo.writestr("archive/version", "3\n")
    # a tensor view that runs past its storage
    buf = io.BytesIO()
    torch.save({"w": torch.ones(4)}, buf)
    b = bytearray(buf.getvalue())
    zb = zipfile.ZipFile(io.BytesIO(bytes(b)))
    pk = zb.read([n for n in zb.namelist() if n.endswith("data.pkl")][0])
    i = pk.find(b"K\x04\x85")  # size tuple (4,) -> (9,)
    assert i > 0
    pk2 = pk[:i] + b"K\x09\x85" + pk[i + 3:]
    with zipfile.ZipFile(os.path.join(d, "bad_view.pth"), "w", zipfile.ZIP_STORED) as zo:
        for n in zb.namelist():
            zo.writestr(n, pk2 if n.endswith("data.pkl") else zb.read(n))


def write_op_goldens(d):
    g = torch.Generator().manual_seed(3)
    for tag, nwin, S, heads, hd in (("w", 3, 14, 3, 16), ("g", 1, 32, 2, 80)):
        C = heads * hd
        N = S * S
        qkv = torch.randn(nwin, N, 3 * C, generator=g)
        rh = torch.randn(2 * S - 1, hd, generator=g) * 0.5
        rw = torch.randn(2 * S - 1, hd, generator=g) * 0.5
        q, k, v = qkv.reshape(nwin, N, 3, heads, hd).permute(2, 0, 3, 1, 4).reshape(3, nwin * heads, N, hd)
        o = relpos_attention_core(q, k, v, rh, rw, S, hd ** -0.5)
        o = o.view(nwin, heads, N, hd).permute(0, 2, 1, 3).reshape(nwin, N, C)
        for name, t in (("qkv", qkv), ("rh", rh), ("rw", rw), ("out", o)):
            dump(os.path.join(d, "op_%s_%s.bin" % (tag, name)), t)


def write_small(d):
    torch.manual_seed(0)
    C, depth, heads, gidx = 128, 4, 2, (1, 3)
    enc = Encoder(C, depth, heads, gidx)
    randomize(enc, 1)
    enc.eval()
    sd = official_sd(enc)
    torch.save({"model": sd, "epoch": 1}, os.path.join(d, "small.pth"))
    sd16 = collections.OrderedDict((k, v.half()) for k, v in sd.items())
    torch.save(sd16, os.path.join(d, "small_f16.pth"))
    torch.save(collections.OrderedDict((k, v.half().float()) for k, v in sd.items()),
               os.path.join(d, "small_f16_as_f32.pth"))
    g = torch.Generator().manual_seed(5)
    img = torch.randn(1, 3, 1024, 1024, generator=g)
    with torch.no_grad():
        x = enc.embed(img)
        dump(os.path.join(d, "img.bin"), img)
        dump(os.path.join(d, "x0.bin"), x)
        for i, blk in enumerate(enc.blocks):
            x = blk(x)
            dump(os.path.join(d, "x%d.bin" % (i + 1)), x)
            if i == gidx[0]:
                dump(os.path.join(d, "early.bin"), x.permute(0, 3, 1, 2))
        emb = enc.neck(x.permute(0, 3, 1, 2))
        dump(os.path.join(d, "emb.bin"), emb)
    write_op_goldens(d)
    write_tinyvit_fragment(d)
    write_hostile(d, os.path.join(d, "small.pth"))


def write_vitb(d):
    torch.manual_seed(0)
    enc = Encoder(768, 12, 12, (2, 5, 8, 11))
    with torch.no_grad():
        for p in enc.parameters():
            p.normal_(0, 0.02)
        for b in enc.blocks:
            b.norm1.weight.fill_(1.0)
            b.norm2.weight.fill_(1.0)
    sd = official_sd(enc)
    sd["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.randn(2, 128)
    sd["mask_decoder.iou_token.weight"] = torch.randn(1, 256)
    torch.save(sd, os.path.join(d, "vitb.pth"))
    with open(os.path.join(d, "vitb_manifest.txt"), "w") as f:
        for k, v in sd.items():
            f.write("%s %d %s\n" % (k, v.dim(), " ".join(str(s) for s in v.shape)))
    # full-size forward golden
    enc.eval()
    g = torch.Generator().manual_seed(11)
    img = torch.randn(1, 3, 1024, 1024, generator=g)
    with torch.no_grad():
        x = enc.embed(img)
        for i, blk in enumerate(enc.blocks):
            x = blk(x)
            if i == enc.global_idx[0]:
                dump(os.path.join(d, "vitb_early.bin"), x.permute(0, 3, 1, 2))
        emb = enc.neck(x.permute(0, 3, 1, 2))
    dump(os.path.join(d, "vitb_img.bin"), img)
    dump(os.path.join(d, "vitb_emb.bin"), emb)


def write_mobilesam(src, d):
    """A MobileSAM-style .pth from a converted safetensors file: every folded conv is split
    back into Conv2d_BN (random γ, β-compensated mean, var) so that folding must reproduce the
    file; TinyViT buffers (attention_bias_idxs, num_batches_tracked) are added."""
    import json
    import struct
    import numpy as np
    raw = open(src, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    base = 8 + n
    t = collections.OrderedDict()
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32"
        a, b = v["data_offsets"]
        t[k] = torch.from_numpy(np.frombuffer(raw[base + a:base + b], dtype="<f4").copy().reshape(v["shape"]))
    g = torch.Generator().manual_seed(9)
    sd = collections.OrderedDict()
    for k, v in t.items():
        if k.endswith(".c.bias"):
            continue
        if k.endswith(".c.weight") and k[:-len("weight")] + "bias" in t:
            stem = k[:-len(".c.weight")]
            bias = t[stem + ".c.bias"].double()
            O = v.shape[0]
            gamma = torch.rand(O, generator=g, dtype=torch.float64) + 0.5
            var = torch.rand(O, generator=g, dtype=torch.float64) * 1.5 + 0.5
            mean = torch.randn(O, generator=g, dtype=torch.float64) * 0.3
            sc = gamma / torch.sqrt(var + 1e-5)
            sd[stem + ".c.weight"] = (v.double() / sc.view(-1, *([1] * (v.dim() - 1)))).float()
            sd[stem + ".bn.weight"] = gamma.float()
            sd[stem + ".bn.bias"] = (bias + mean * sc).float()
            sd[stem + ".bn.running_mean"] = mean.float()
            sd[stem + ".bn.running_var"] = var.float()
            sd[stem + ".bn.num_batches_tracked"] = torch.tensor(1000)
            continue
        sd[k] = v
        if k.endswith("attn.attention_biases"):
            sd[k[:-len("attention_biases")] + "attention_bias_idxs"] = torch.randint(0, v.shape[1], (49, 49), generator=g)
    torch.save(sd, os.path.join(d, "mobile_sam_like.pth"))


if __name__ == "__main__":
    if sys.argv[1] == "mobilesam":
        os.makedirs(sys.argv[3], exist_ok=True)
        write_mobilesam(sys.argv[2], sys.argv[3])
        sys.exit(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    mode, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    {"tiny": write_tiny, "small": write_small, "vitb": write_vitb}[mode](out)
