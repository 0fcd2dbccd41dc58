#!/usr/bin/python3
"""make_prompts.py — prompts for the decoder golden tests, derived from a ground-truth mask.

    make_prompts.py MASK.png META.json OUT_DIR

META.json is ref_preprocess.py's {"h","w","new_h","new_w"}. Writes OUT_DIR/<case>.json in
ort_run.js's prompt format (points in the 1024 frame, ONNX-export labels):
  point     one foreground click (the foreground pixel nearest the centroid) + padding point
  twopoint  that click, a background click (the farthest background pixel), padding point (3 points: the single-mask rule
            then prefers mask 0)
  box       the mask's bounding box (labels 2, 3)
  pointbox  the click plus the box
  mask      the click + padding point with mask_input = OUT_DIR/point/low_res.f32 (the
            reference's own low-res answer to `point`, as the predictor feeds it back)
"""
import json
import os
import sys

import numpy as np
from PIL import Image


def main():
    mask_path, meta_path, out = sys.argv[1:4]
    meta = json.load(open(meta_path))
    h, w = meta["h"], meta["w"]
    sx, sy = meta["new_w"] / w, meta["new_h"] / h
    m = np.asarray(Image.open(mask_path).convert("L")) > 127
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    i = int(np.argmin((ys - cy) ** 2 + (xs - cx) ** 2))
    fx, fy = float(xs[i]), float(ys[i])
    bys, bxs = np.nonzero(~m)
    j = int(np.argmax((bys - fy) ** 2 + (bxs - fx) ** 2))  # farthest background pixel
    bx, by = float(bxs[j]), float(bys[j])
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]

    def p(x, y, lab):
        return [x * sx, y * sy, lab]

    click = p(fx, fy, 1)
    corners = [p(box[0], box[1], 2), p(box[2], box[3], 3)]
    pad = [0.0, 0.0, -1]
    cases = {
        "point": [click, pad],
        "twopoint": [click, p(bx, by, 0), pad],
        "box": corners,
        "pointbox": [click] + corners,
        "mask": [click, pad],
    }
    os.makedirs(out, exist_ok=True)
    for name, pts in cases.items():
        d = {"points": pts, "orig_size": [h, w]}
        if name == "mask":
            d["mask_input"] = os.path.join(out, "point", "low_res.f32")
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(d, f)


if __name__ == "__main__":
    main()
