// Runs a GGUF file in real llama.cpp (node-llama-cpp's CPU build) and prints JSON on stdout.
//   node llama_eval.mjs MODEL.gguf logits TOKENS_JSON       -> {"logits": [[...vocab...] per position]}
//   node llama_eval.mjs MODEL.gguf generate PROMPT N         -> {"text": "...", "tokens": [...]}
//   node llama_eval.mjs MODEL.gguf perplexity TOKENS.u32 MAX -> {"perplexity": p, "scored": n}
//   node llama_eval.mjs MODEL.gguf tokenize TEXT_FILE        -> {"tokens": [...], "tokens_for_model": [BOS?, ...]}
//   node llama_eval.mjs MODEL.gguf chunked TOKENS.u32 CTX    -> {"perplexity": p, "scored": n}, llama-perplexity's
//       protocol: chunks of CTX tokens, the first replaced by BOS, logits from CTX/2 on score the next token
// Run in a child process by the C++ test: a llama.cpp assertion aborts only this process.
import {getLlama} from "node-llama-cpp";
import fs from "node:fs";

const [, , modelPath, mode, arg1, arg2] = process.argv;
const llama = await getLlama({gpu: false, build: "never", skipDownload: true, logLevel: "error", maxThreads: 2});
const model = await llama.loadModel({modelPath});
const vocab = model.tokens.size ?? undefined;
const context = await model.createContext({contextSize: 512, batchSize: 512, threads: 2});
const seq = context.getSequence();

function dense(logitsMap, n) {
  const out = new Array(n).fill(0);
  for (const [t, v] of logitsMap) out[t] = v;
  return out;
}

const nVocab = model.fileInsights.tensorInfo ? undefined : undefined;

if (mode === "logits") {
  const tokens = JSON.parse(arg1);
  const res = await seq.controlledEvaluate(tokens.map((t) => [t, {generateNext: {logits: true}}]));
  const size = Number(arg2 ?? 0);
  const logits = res.map((r) => dense(r.next.logits, size || r.next.logits.size));
  process.stdout.write(JSON.stringify({logits}));
} else if (mode === "generate") {
  const tokens = model.tokenize(arg1, false, "trimLeadingSpace");
  const input = [model.tokens.bos, ...tokens];
  const out = [];
  let next = input;
  for (let i = 0; i < Number(arg2); ++i) {
    const res = await seq.controlledEvaluate(next.map((t, k) => k === next.length - 1 ? [t, {generateNext: {token: true, options: {temperature: 0}}}] : t));
    const tok = res[res.length - 1].next.token;
    if (tok === model.tokens.eos) break;
    out.push(tok);
    next = [tok];
  }
  process.stdout.write(JSON.stringify({text: model.detokenize(out), tokens: out}));
} else if (mode === "tokenize") {
  const text = fs.readFileSync(arg1, "utf8");
  const tokens = Array.from(model.tokenize(text, false));
  // What llama.cpp's tools read for the text: BOS first when the vocabulary says to add it.
  const bos = model.tokens.shouldPrependBosToken && model.tokens.bos != null ? [model.tokens.bos] : [];
  process.stdout.write(JSON.stringify({tokens, tokens_for_model: bos.concat(tokens)}));
} else if (mode === "chunked") {
  const buf = fs.readFileSync(arg1);
  const all = Array.from(new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  const ctx = Number(arg2);
  const first = Math.floor(ctx / 2);
  let nll = 0, scored = 0;
  for (let c = 0; (c + 1) * ctx <= all.length; ++c) {
    const win = all.slice(c * ctx, (c + 1) * ctx);
    win[0] = model.tokens.bos;
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(win.map((t, k) => k >= first && k + 1 < ctx ? [t, {generateNext: {logits: true}}] : t));
    for (let k = first; k + 1 < ctx; ++k) {
      const logits = res[k].next.logits;
      let m = -Infinity;
      for (const v of logits.values()) m = Math.max(m, v);
      let z = 0;
      for (const v of logits.values()) z += Math.exp(v - m);
      nll -= logits.get(all[c * ctx + k + 1]) - m - Math.log(z);
      ++scored;
    }
  }
  process.stdout.write(JSON.stringify({perplexity: Math.exp(nll / scored), scored}));
} else if (mode === "perplexity") {
  const buf = fs.readFileSync(arg1);
  const all = Array.from(new Uint32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4));
  const max = Math.min(all.length, Number(arg2 ?? all.length));
  let nll = 0, scored = 0;
  for (let start = 0; start + 1 < max; start += 512) {
    const win = all.slice(start, Math.min(start + 512, max));
    await seq.clearHistory();
    const res = await seq.controlledEvaluate(win.map((t, k) => k + 1 < win.length ? [t, {generateNext: {logits: true}}] : t));
    for (let k = 0; k + 1 < win.length; ++k) {
      const logits = res[k].next.logits;
      let m = -Infinity;
      for (const v of logits.values()) m = Math.max(m, v);
      let z = 0;
      for (const v of logits.values()) z += Math.exp(v - m);
      nll -= logits.get(win[k + 1]) - m - Math.log(z);
      ++scored;
    }
  }
  process.stdout.write(JSON.stringify({perplexity: Math.exp(nll / scored), scored}));
}
await context.dispose();
await model.dispose();
