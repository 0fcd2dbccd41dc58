#!/usr/bin/python3
"""ref_preprocess.py — the official SAM predictor's preprocessing, done with PIL + numpy.

    ref_preprocess.py IMAGE OUT_INPUT.f32 [--resized OUT.u8] [--json OUT.json]

Writes 1x3x1024x1024 float32 (normalised, zero-padded bottom/right after normalising), and
optionally the resized uint8 HxWx3 image and {"h","w","new_h","new_w"}. Independent reference
for the C preprocessing (tests compare bit-exact on uint8 and closely on float).
"""
import argparse
import json

import numpy as np
from PIL import Image

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("out")
    ap.add_argument("--resized")
    ap.add_argument("--json")
    a = ap.parse_args()
    img = Image.open(a.image).convert("RGB")
    w, h = img.size
    scale = 1024.0 / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)
    r = np.asarray(img.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    if a.resized:
        r.tofile(a.resized)
    x = (r.astype(np.float32) - MEAN) / STD
    pad = np.zeros((1024, 1024, 3), dtype=np.float32)
    pad[:new_h, :new_w] = x
    pad.transpose(2, 0, 1)[None].astype("<f4").tofile(a.out)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"h": h, "w": w, "new_h": new_h, "new_w": new_w}, f)


if __name__ == "__main__":
    main()
