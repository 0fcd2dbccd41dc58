"""test_canonical.py - the registry's canonical bank form against an independent writer.

This script implements the canonical form of docs/bank-format.md on its own (json + struct +
numpy, no moda code), writes a bank in a shuffled, non-canonical layout, puts it through the
real moda-registry with the `moda registry` CLI, exports it, and checks:
  * the exported bytes equal this script's canonical serialisation, byte for byte;
  * every tensor (name, dtype, shape, values) and metadata value survived unchanged;
  * putting the canonical file and exporting it returns the identical bytes;
  * a second version that changes one domain reuses the other domains' content hashes.
Usage: test_canonical.py MODA_REGISTRY MODA WORKDIR   (exit 0 = all checks passed)
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np

BASE = "7e57" * 16
DTYPES = {"F32": np.float32, "U8": np.uint8, "I64": np.int64}


def fmt_num(v):
    if isinstance(v, int):
        return str(v)
    return "%.17g" % v


def canon_domains(domains):
    """moda.domains canonically: sorted by name, keys name/created/metrics, metrics sorted."""
    out = []
    for d in sorted(domains, key=lambda d: d["name"].encode()):
        parts = ['"name":' + json.dumps(d["name"])]
        if "created" in d:
            c = d["created"]
            parts.append('"created":' + (json.dumps(c) if isinstance(c, str) else fmt_num(c)))
        if "metrics" in d:
            ms = ",".join(json.dumps(k) + ":" + fmt_num(d["metrics"][k])
                          for k in sorted(d["metrics"], key=lambda k: k.encode()))
            parts.append('"metrics":{' + ms + "}")
        out.append("{" + ",".join(parts) + "}")
    return "[" + ",".join(out) + "]"


def serialise(meta, tensors, order, pretty=False):
    """safetensors bytes with tensors in `order` and metadata in dict order."""
    hdr, off, blobs = {}, 0, []
    hdr["__metadata__"] = meta
    for name in order:
        arr = tensors[name]
        dt = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8", np.dtype(np.int64): "I64"}[arr.dtype]
        b = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        hdr[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    text = json.dumps(hdr, indent=1 if pretty else None, separators=None if pretty else (",", ":"))
    raw = text.encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def canonical(meta, domains, tensors):
    m = dict(meta)
    m["moda.domains"] = canon_domains(domains)
    m = {k: m[k] for k in sorted(m, key=lambda k: k.encode())}
    return serialise(m, tensors, sorted(tensors, key=lambda k: k.encode()))


def parse(buf):
    (n,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + n])
    meta = hdr.pop("__metadata__", {})
    data = buf[8 + n:]
    ts = {}
    for k, v in hdr.items():
        b, e = v["data_offsets"]
        ts[k] = np.frombuffer(data[b:e], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
    return meta, ts


def make_bank(rng, gens):
    tensors, domains = {}, []
    for i, g in enumerate(gens):
        name = ["line-3", "a_b", "z9", "line"][i]
        r = np.random.default_rng(1000 * i + g)
        tensors["domain.%s.hq_token" % name] = r.standard_normal(256).astype(np.float32)
        tensors["domain.%s.hq_mlp.0.weight" % name] = r.standard_normal((32, 256)).astype(np.float32)
        tensors["domain.%s.step" % name] = np.array([g, 7], dtype=np.int64)
        for k in range(2):
            tensors["domain.%s.replay.%d.image" % (name, k)] = r.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            tensors["domain.%s.replay.%d.mask" % (name, k)] = r.integers(0, 2, (16, 16), dtype=np.uint8)
        d = {"metrics": {"iou": 0.5 + g / 64.0, "boundary": 0.25, "n": 10 + g}, "name": name}
        if i % 2 == 0:
            d["created"] = "2026-11-29T08:00:00Z" if i == 0 else 1795900000
        domains.append(d)
    tensors["selector.tokens"] = np.random.default_rng(5).standard_normal((10, 160)).astype(np.float32)
    tensors["selector.keys.weight"] = np.random.default_rng(6).standard_normal((len(gens), 320)).astype(np.float32)
    meta = {"moda.kind": "adapter-bank", "moda.domains": json.dumps(domains, indent=1),
            "moda.base_model": BASE, "x.note": "written by test_canonical.py", "moda.bank_format": "1"}
    return meta, domains, tensors


def main():
    reg, moda, work = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    ep = "ipc://%s/r.sock" % work
    proc = subprocess.Popen([reg, "--data", work + "/db", "--bind", ep, "--pub", "ipc://%s/p.sock" % work,
                             "--no-sync", "--log-level", "error"])
    failures = []

    def check(cond, what):
        if not cond:
            failures.append(what)
            print("FAIL", what, file=sys.stderr)

    def cli(*args):
        r = subprocess.run([moda, "registry", *args, "--endpoint", ep, "--timeout-ms", "10000"],
                           capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
        return r

    try:
        for _ in range(100):
            if cli("list").returncode == 0:
                break
            time.sleep(0.05)
        rng = random.Random(3)
        meta, domains, tensors = make_bank(rng, [1, 2, 3, 4])
        order = list(tensors)
        rng.shuffle(order)
        messy = serialise(meta, tensors, order, pretty=True)
        want = canonical(meta, domains, tensors)
        check(messy != want, "the shuffled bank is really not canonical")
        open(work + "/messy.st", "wb").write(messy)
        open(work + "/canon.st", "wb").write(want)

        check(cli("put", work + "/messy.st", "--reason", "messy").returncode == 0, "put of the shuffled bank")
        check(cli("export", "1", work + "/out1.st").returncode == 0, "export 1")
        got = open(work + "/out1.st", "rb").read()
        check(got == want, "export equals the independent canonical serialisation byte for byte")
        m1, t1 = parse(got)
        m0, t0 = parse(messy)
        check(sorted(t1) == sorted(t0), "same tensor names")
        for k in t0:
            check(t1[k].dtype == t0[k].dtype and t1[k].shape == t0[k].shape and np.array_equal(t1[k], t0[k]),
                  "tensor %s unchanged" % k)
        for k in ("moda.kind", "moda.bank_format", "moda.base_model", "x.note"):
            check(m1.get(k) == m0.get(k), "metadata %s unchanged" % k)
        check(json.loads(m1["moda.domains"]) == sorted(domains, key=lambda d: d["name"]), "domain list unchanged")

        check(cli("put", work + "/canon.st").returncode == 0, "put of the canonical bank")
        check(cli("export", "2", work + "/out2.st").returncode == 0, "export 2")
        check(open(work + "/out2.st", "rb").read() == want, "canonical bank round-trips bit-exactly")

        meta3, domains3, tensors3 = make_bank(rng, [1, 2, 9, 4])
        open(work + "/v3.st", "wb").write(canonical(meta3, domains3, tensors3))
        check(cli("put", work + "/v3.st").returncode == 0, "put of version 3")
        r = cli("list", "--json")
        vs = {v["version"]: {d["name"]: d["hash"] for d in v["domains"]} for v in json.loads(r.stdout)}
        changed = sorted(n for n in vs[3] if vs[3][n] != vs[2][n])
        check(changed == ["z9"], "only the changed domain has a new content hash (got %s)" % changed)
        check(vs[1] == vs[2], "shuffled and canonical puts of one bank have the same part hashes")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    if failures:
        print("test_canonical: %d failures" % len(failures), file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("test_canonical: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
