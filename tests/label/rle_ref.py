#!/usr/bin/python3
"""rle_ref.py — an independent reference of COCO's compressed RLE, written from the COCO format
description (pycocotools is not packaged for Debian), checked against moda's C codec.

Encoding: the mask is flattened column-major (numpy order='F'); runs alternate background /
foreground starting with background; from the fourth run on each value is written as the
difference to the run two places earlier; each value is emitted as 5-bit groups, least
significant first, with 0x20 = more groups follow and bit 0x10 of the last group = sign; every
group is offset by 48.

Writes PNG masks (random ones with a fixed seed, plus the real masks of every ../shared/data/cl
domain) and a manifest `png h w counts area bx by bw bh` into OUT, then runs the C checker on it
(which encodes each PNG, compares the string, decodes this script's string, compares pixels, area
and bbox), then decodes the checker's output strings here. Exit status non-zero on any mismatch.
"""
import argparse, os, subprocess, sys, glob
import numpy as np
from PIL import Image


def encode(mask):
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    # run boundaries where the value changes (numpy, a different method from the C scan)
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = [int(x) for x in np.diff(bounds)]
    if flat[0]:
        runs = [0] + runs
    out = []
    for i, x in enumerate(runs):
        if i > 2:
            x -= runs[i - 2]
        while True:
            c = x & 0x1F
            x >>= 5  # Python ints shift arithmetically
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out), runs


def decode(s, h, w):
    runs, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    assert sum(runs) == h * w, (sum(runs), h, w)
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape((h, w), order="F")


def bbox(m):
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tool", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(20261129)
    items = []
    for i in range(120):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        kind = i % 4
        if kind == 0:
            m = rng.random((h, w)) < rng.random()
        elif kind == 1:
            m = np.zeros((h, w), bool)
            for _ in range(int(rng.integers(1, 6))):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                m[y:y + int(rng.integers(1, h + 1)), x:x + int(rng.integers(1, w + 1))] = True
        elif kind == 2:
            m = np.zeros((h, w), bool) if i % 8 == 2 else np.ones((h, w), bool)
        else:  # long runs: values needing several groups and big negative deltas
            m = np.zeros((h, w), bool)
            m[:, : w // 2] = True
            m[h // 3:, w // 2:] = rng.random() < 0.5
        p = os.path.join(a.out, "rand_%03d.png" % i)
        Image.fromarray((m * 255).astype(np.uint8), "L").save(p)
        items.append((p, m))
    real = sorted(glob.glob(os.path.join(a.data, "cl", "*", "masks", "*.png")))
    for p in real:
        items.append((p, np.asarray(Image.open(p).convert("L")) > 0))
    lines = []
    for p, m in items:
        s, runs = encode(m)
        assert (decode(s, *m.shape) == m).all()
        h, w = m.shape
        lines.append("%s %d %d %s %d %s" % (p, h, w, s, int(m.sum()), " ".join(map(str, bbox(m)))))
    man = os.path.join(a.out, "manifest.txt")
    with open(man, "w") as f:
        f.write("\n".join(lines) + "\n")
    c_out = os.path.join(a.out, "c_strings.txt")
    r = subprocess.run([a.tool, man, c_out], timeout=120)
    if r.returncode != 0:
        print("rle_ref: C checker failed", file=sys.stderr)
        return 1
    bad = 0
    with open(c_out) as f:
        c_lines = f.read().split("\n")
    for (p, m), cl in zip(items, c_lines):
        if (decode(cl, *m.shape) != m).any():
            bad += 1
            print("rle_ref: C string for %s decodes to another mask" % p, file=sys.stderr)
    if len(c_lines) < len(items):
        bad += 1
    print("rle_ref: %d masks (%d real from %s), python reference == C codec: %s" %
          (len(items), len(real), a.data, "yes" if not bad else "NO"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
