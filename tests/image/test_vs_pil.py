#!/usr/bin/python3
"""test_vs_pil.py — image decode, SAM preprocessing and mask upscaling vs PIL/numpy/PyTorch.

    test_vs_pil.py PROBE DATA_DIR WORK_DIR [--all]

PROBE is the image_probe binary. Checks, all exact unless said:
  * decode of real PNG/JPEG files from DATA_DIR/cl (every image with --all, else a spread)
    == PIL Image.open(f).convert("RGB");
  * decode of generated PNG kinds (gray, palette, RGBA, LA, 1/2/4-bit gray, 16-bit, interlaced,
    tRNS) and JPEG variants (4:4:4/4:2:2/4:2:0 subsampling, progressive, gray);
  * PIL-exact BILINEAR resize for synthetic random images: odd sizes, up and down, extreme
    aspect ratios; and for the SAM target size of every real image's size;
  * prep_sam_input float32 output == tests/ref/ref_preprocess.py bit for bit;
  * post_upscale == PyTorch F.interpolate two-step (max abs ≤ 1e-5) and fused == literal.
Exits 1 on the first failed group (after printing every mismatch found in it).
"""
import os
import subprocess
import sys

import numpy as np
from PIL import Image

PROBE, DATA, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
ALL = "--all" in sys.argv
HERE = os.path.dirname(os.path.abspath(__file__))
REF_PREP = os.path.join(HERE, "..", "ref", "ref_preprocess.py")
os.makedirs(WORK, exist_ok=True)
failures = []


def probe(*args):
    r = subprocess.run([PROBE, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"image_probe {' '.join(map(str, args))}: {r.stderr.strip()}")
    return r.stdout


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL", msg)


def real_images():
    out = []
    for dom in sorted(os.listdir(os.path.join(DATA, "cl"))):
        d = os.path.join(DATA, "cl", dom, "images")
        if not os.path.isdir(d):
            continue
        names = sorted(os.listdir(d))
        if not ALL:
            names = names[::6]
        out += [os.path.join(d, n) for n in names]
    return out


def test_decode(paths):
    for p in paths:
        out = os.path.join(WORK, "dec.rgb")
        w, h, c = map(int, probe("decode", p, out).split())
        ref = np.asarray(Image.open(p).convert("RGB"))
        got = np.fromfile(out, np.uint8)
        check(ref.shape == (h, w, 3), f"{p}: size {w}x{h} vs PIL {ref.shape}")
        if ref.shape == (h, w, 3):
            diff = int(np.abs(got.reshape(h, w, 3).astype(int) - ref).max())
            check(diff == 0, f"{p}: decode differs from PIL by up to {diff}")
    print(f"decode: {len(paths)} real files compared")


def test_png_kinds():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (37, 53, 4), dtype=np.uint8)
    kinds = {
        "rgb": Image.fromarray(base[..., :3], "RGB"),
        "gray": Image.fromarray(base[..., 0], "L"),
        "rgba": Image.fromarray(base, "RGBA"),
        "la": Image.fromarray(base[..., :2], "LA") if hasattr(Image, "fromarray") else None,
        "palette": Image.fromarray(base[..., :3], "RGB").quantize(50),
        "bilevel": Image.fromarray(base[..., 0], "L").convert("1"),
    }
    for name, im in kinds.items():
        for interlace in (0, 1):
            p = os.path.join(WORK, f"kind_{name}_{interlace}.png")
            im.save(p, interlace=interlace) if name != "bilevel" else im.save(p)
            test_decode([p])
    # JPEG variants: chroma subsampling 4:4:4 / 4:2:2 / 4:2:0, progressive, gray, odd sizes
    for i, (sub, prog) in enumerate([(0, False), (1, False), (2, False), (2, True), (0, True)]):
        p = os.path.join(WORK, f"var{i}.jpg")
        kinds["rgb"].save(p, quality=85, subsampling=sub, progressive=prog)
        test_decode([p])
    p = os.path.join(WORK, "gray_prog.jpg")
    kinds["gray"].save(p, quality=70, progressive=True)
    test_decode([p])
    # CMYK JPEG is refused with a message saying so (documented in image.h)
    p = os.path.join(WORK, "cmyk.jpg")
    kinds["rgb"].convert("CMYK").save(p)
    r = subprocess.run([PROBE, "decode", p, os.path.join(WORK, "dec.rgb")], capture_output=True,
                       text=True)
    check(r.returncode != 0 and "CMYK" in r.stderr, f"CMYK JPEG: {r.returncode} {r.stderr}")
    # tRNS chunks (transparency without an alpha channel) on palette, RGB, gray, 1-bit
    trns = {"palette": 0, "rgb": (1, 2, 3), "gray": 5, "bilevel": 0}
    for name, t in trns.items():
        p = os.path.join(WORK, f"trns_{name}.png")
        kinds[name].save(p, transparency=t)
        test_decode([p])
    # 2- and 4-bit gray and 16-bit gray/RGB are written with numpy + zlib by hand (PIL
    # cannot write them); the expected pixels follow libpng's documented scaling.
    import struct
    import zlib

    def png(path, w, h, depth, ctype, raw_rows):
        def chunk(t, d):
            return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        data = b"".join(b"\x00" + r for r in raw_rows)
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b""))
    w, h = 13, 7
    for depth in (2, 4):
        vals = rng.integers(0, 1 << depth, (h, w))
        rows = []
        for y in range(h):
            bits = "".join(format(v, f"0{depth}b") for v in vals[y])
            bits += "0" * (-len(bits) % 8)
            rows.append(int(bits, 2).to_bytes(len(bits) // 8, "big"))
        p = os.path.join(WORK, f"gray{depth}.png")
        png(p, w, h, depth, 0, rows)
        test_decode([p])
        out = os.path.join(WORK, "dec.rgb")
        probe("decode", p, out)
        exp = (vals * (255 // ((1 << depth) - 1))).astype(np.uint8)
        got = np.fromfile(out, np.uint8).reshape(h, w, 3)[..., 0]
        check((got == exp).all(), f"{depth}-bit gray scaling")
    v16 = rng.integers(0, 65536, (h, w, 3)).astype(">u2")
    p = os.path.join(WORK, "rgb16.png")
    png(p, w, h, 16, 2, [v16[y].tobytes() for y in range(h)])
    out = os.path.join(WORK, "dec.rgb")
    probe("decode", p, out)
    got = np.fromfile(out, np.uint8).reshape(h, w, 3)
    check((got == (v16.astype(np.uint32) >> 8)).all(), "16-bit RGB is reduced to its high byte")
    print("png kinds: ok" if not failures else "png kinds: FAIL")


def sam_size(h, w):
    s = 1024.0 / max(h, w)
    return int(h * s + 0.5), int(w * s + 0.5)


def test_resize(real_sizes):
    rng = np.random.default_rng(7)
    cases = [(1, 1, 1024, 1024), (1, 1, 3, 5), (2, 3, 1024, 683), (7, 5, 4, 9), (1000, 3, 1024, 3),
             (3, 1000, 3, 1024), (1023, 1021, 1024, 1022), (1025, 997, 1024, 996),
             (2911, 887, 1024, 312), (640, 480, 333, 777), (256, 256, 1024, 1024),
             (619, 227, 1024, 375), (114, 399, 293, 1024), (4000, 37, 1024, 9), (50, 50, 50, 50),
             (64, 48, 64, 1024), (64, 48, 1024, 48), (1540, 645, 1024, 429), (1130, 460, 1024, 417)]
    for _ in range(12):
        w, h = int(rng.integers(1, 2200)), int(rng.integers(1, 2200))
        cases.append((w, h, int(rng.integers(1, 1500)), int(rng.integers(1, 1500))))
    for (h, w) in sorted(set(real_sizes)):
        nh, nw = sam_size(h, w)
        cases.append((w, h, nw, nh))
    lines, refs = [], []
    for i, (w, h, nw, nh) in enumerate(cases):
        # smooth + noise content exercises both the weights and the clipping
        yy, xx = np.mgrid[0:h, 0:w]
        img = (127 + 120 * np.sin(xx / 7.0 + yy / 11.0))[..., None] + rng.normal(0, 40, (h, w, 3))
        img = np.clip(img, 0, 255).astype(np.uint8)
        src = os.path.join(WORK, f"rs{i}.rgb")
        img.tofile(src)
        lines.append(f"{src} {w} {h} {nw} {nh} {src}.out\n")
        refs.append(np.asarray(Image.fromarray(img, "RGB").resize((nw, nh), Image.BILINEAR)))
    lst = os.path.join(WORK, "resize.txt")
    with open(lst, "w") as f:
        f.writelines(lines)
    probe("resize", lst)
    for (w, h, nw, nh), ref, line in zip(cases, refs, lines):
        got = np.fromfile(line.split()[-1], np.uint8).reshape(nh, nw, 3)
        n = int((got != ref).sum())
        check(n == 0, f"resize {w}x{h} -> {nw}x{nh}: {n} bytes differ from PIL")
    print(f"resize: {len(cases)} size pairs compared")


def test_prep(paths):
    for p in paths:
        x, r = os.path.join(WORK, "x.f32"), os.path.join(WORK, "x.rgb")
        h, w, nh, nw = map(int, probe("prep", p, x, r).split())
        xr = os.path.join(WORK, "xref.f32")
        subprocess.run([sys.executable, REF_PREP, p, xr], check=True)
        a, b = np.fromfile(x, "<u4"), np.fromfile(xr, "<u4")
        n = int((a != b).sum())
        check(n == 0, f"{p}: prep_sam_input differs from ref_preprocess.py in {n} floats")
        check((nh, nw) == sam_size(h, w), f"{p}: new size {nh}x{nw}")
    print(f"prep: {len(paths)} images compared bit for bit")


def test_post():
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(3)
    for (h, w) in [(460, 1130), (645, 1540), (256, 256), (1024, 1024), (399, 114), (1, 1),
                   (1, 700), (2000, 3), (333, 777)]:
        nh, nw = sam_size(h, w)
        nh, nw = max(nh, 1), max(nw, 1)
        lr = (rng.normal(0, 4, (256, 256))).astype(np.float32)
        src, out = os.path.join(WORK, "lr.f32"), os.path.join(WORK, "up.f32")
        lr.tofile(src)
        probe("post", src, 256, nh, nw, h, w, out)
        t = torch.from_numpy(lr)[None, None]
        t = F.interpolate(t, (1024, 1024), mode="bilinear", align_corners=False)[..., :nh, :nw]
        t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        got = np.fromfile(out, np.float32).reshape(h, w)
        d = float(np.abs(got - t).max())
        check(d <= 1e-5, f"post {h}x{w}: max abs diff vs torch {d}")
        check(((got > 0) == (t > 0)).mean() >= 0.9999, f"post {h}x{w}: mask differs from torch")
    print("post: ok")


def main():
    paths = real_images()
    test_decode(paths)
    test_png_kinds()
    sizes = []
    for dom in sorted(os.listdir(os.path.join(DATA, "cl"))):
        d = os.path.join(DATA, "cl", dom, "images")
        if os.path.isdir(d):
            for n in sorted(os.listdir(d)):
                with Image.open(os.path.join(d, n)) as im:
                    sizes.append((im.size[1], im.size[0]))
    test_resize(sizes)
    test_prep(paths[:: max(1, len(paths) // 6)])
    test_post()
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)
    print("all image checks passed")


if __name__ == "__main__":
    main()
