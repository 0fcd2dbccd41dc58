#!/usr/bin/python3
"""test_vit_segment.py — end to end: an official-key SAM ViT .pth through the product path.

    test_vit_segment.py MODA_BIN MOBILE_SAM.safetensors IMAGE OUTDIR

1. writes OUTDIR/vit_sam.pth (torch.save of a state dict, fixed seed): a small ViT image
   encoder (C=128, depth 4, 2 heads, global blocks {1,3}) from ref_vit.py's Encoder, in
   official key names, plus the real prompt encoder + mask decoder tensors of MobileSAM
   (read from the safetensors file with numpy); and OUTDIR/vit_enc_only.pth (encoder only).
2. `moda convert --pth` both, `moda segment --model` the full one on a real image.
3. independent check: ref_vit.py's PyTorch forward on the preprocessed input moda dumped
   (input.f32) vs moda's embedding.f32 (relative L2 <= 1e-4); the mask PNG has the image's
   size; result.json has iou and stability.
4. the encoder-only file must make `moda segment` fail (exit 1, no signal) with a message
   naming a missing prompt_encoder./mask_decoder. tensor.
Outputs stay in OUTDIR (the build tree). Exit 0 pass, 1 fail, 77 skip (no MobileSAM file or image).
Run with /usr/bin/python3 (torch, numpy, PIL).
"""
import collections
import json
import os
import struct
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_vit  # noqa: E402

FAILS = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        FAILS.append(what)


def read_safetensors(path, prefixes):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        base = 8 + n
        out = collections.OrderedDict()
        for k, v in hdr.items():
            if k == "__metadata__" or not k.startswith(prefixes):
                continue
            assert v["dtype"] == "F32", k
            a, b = v["data_offsets"]
            f.seek(base + a)
            arr = np.frombuffer(f.read(b - a), dtype="<f4").reshape(v["shape"])
            out[k] = torch.from_numpy(arr.copy())
    return out


def run(args):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p.returncode, p.stdout + p.stderr


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        return 2
    moda, msam, image, out = sys.argv[1:]
    for need in (msam, image):
        if not os.path.isfile(need):
            print("skip: %s absent" % need)
            return 77
    os.makedirs(out, exist_ok=True)

    # 1. checkpoints
    torch.manual_seed(0)
    enc = ref_vit.Encoder(128, 4, 2, (1, 3))
    ref_vit.randomize(enc, 21)
    enc.eval()
    sd = ref_vit.official_sd(enc)
    dec = read_safetensors(msam, ("prompt_encoder.", "mask_decoder."))
    check(len(dec) > 100, "MobileSAM decoder tensors read: %d" % len(dec))
    full = collections.OrderedDict(sd)
    full.update(dec)
    pth = os.path.join(out, "vit_sam.pth")
    torch.save(full, pth)
    pth_enc = os.path.join(out, "vit_enc_only.pth")
    torch.save(collections.OrderedDict(sd), pth_enc)

    # 2. product path
    st = os.path.join(out, "vit_sam.safetensors")
    rc, log = run([moda, "convert", "--pth", pth, "--out", st])
    check(rc == 0 and os.path.isfile(st), "moda convert --pth (rc %d) %s" % (rc, log.strip()[-300:]))
    dump = os.path.join(out, "dump")
    os.makedirs(dump, exist_ok=True)
    mask = os.path.join(out, "vit_mask.png")
    for f in ("input.f32", "embedding.f32", "result.json", "lowres.f32"):
        if os.path.exists(os.path.join(dump, f)):
            os.remove(os.path.join(dump, f))
    if os.path.exists(mask):
        os.remove(mask)
    W, H = Image.open(image).size
    pt = "%d,%d,1" % (W // 2, H // 2)
    rc, log = run([moda, "segment", "--model", st, "--image", image, "--point", pt,
                   "--out", mask, "--dump", dump, "--threads", "2"])
    check(rc == 0, "moda segment --model vit (rc %d) %s" % (rc, log.strip()[-400:]))

    # 3. independent checks
    if rc == 0:
        x = np.fromfile(os.path.join(dump, "input.f32"), dtype="<f4")
        e = np.fromfile(os.path.join(dump, "embedding.f32"), dtype="<f4")
        check(x.size == 3 * 1024 * 1024, "input.f32 size %d" % x.size)
        check(e.size == 256 * 64 * 64, "embedding.f32 size %d" % e.size)
        if x.size == 3 * 1024 * 1024 and e.size == 256 * 64 * 64:
            with torch.no_grad():
                h = enc.embed(torch.from_numpy(x.reshape(1, 3, 1024, 1024)))
                for blk in enc.blocks:
                    h = blk(h)
                ref = enc.neck(h.permute(0, 3, 1, 2)).numpy().reshape(-1).astype(np.float64)
            rel = np.linalg.norm(e.astype(np.float64) - ref) / np.linalg.norm(ref)
            check(bool(np.isfinite(rel)) and rel <= 1e-4,
                  "embedding vs PyTorch ref_vit forward: rel L2 %.3e (<= 1e-4)" % rel)
        im = Image.open(mask)
        check(im.size == (W, H), "mask PNG size %s == image %s" % (im.size, (W, H)))
        vals = set(np.unique(np.asarray(im)).tolist())
        check(vals <= {0, 255}, "mask values %s in {0,255}" % sorted(vals))
        res = json.load(open(os.path.join(dump, "result.json")))
        ok = all(k in res for k in ("iou", "stability"))
        check(ok and all(np.isfinite(float(res[k])) for k in ("iou", "stability")),
              "result.json iou=%s stability=%s" % (res.get("iou"), res.get("stability")))

    # 4. decoder keys missing: converted fine, refused by segment with a clear message
    st2 = os.path.join(out, "vit_enc_only.safetensors")
    rc, log = run([moda, "convert", "--pth", pth_enc, "--out", st2])
    check(rc == 0, "moda convert --pth encoder-only (rc %d)" % rc)
    mask2 = os.path.join(out, "vit_enc_only_mask.png")
    if os.path.exists(mask2):
        os.remove(mask2)
    rc, log = run([moda, "segment", "--model", st2, "--image", image, "--point", pt,
                   "--out", mask2, "--threads", "2"])
    print("     encoder-only segment: rc %d: %s" % (rc, log.strip()[-300:]))
    check(rc == 1, "encoder-only segment exits 1 (got %d; negative = signal)" % rc)
    check(("prompt_encoder." in log or "mask_decoder." in log),
          "message names a missing decoder tensor")
    check(not os.path.exists(mask2), "no mask written on failure")

    print("%d failure(s)" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
