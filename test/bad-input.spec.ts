/**
 * Bad input, table-driven (issue 9): every case damages copies of real models (stories260K, the
 * SmolLM2 GGUF) or gives a bad option or output path, and asserts the stable code, the exit status,
 * a message that names what is wrong (never a backtrace, even with RUST_BACKTRACE set), that
 * nothing new exists on disk and that the input's bytes are unchanged.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { loadModel, type ErrorCode } from '../ts/index';
import { cli, shared, smollm2, tmpDir, wikitext } from './fixtures';
import { ggufLayout, withString, withU32 } from './gguf';

/** Every file, folder and link under `root`: path → content hash, `dir` or the link's target. */
function tree(root: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (dir: string) => {
    for (const name of fs.readdirSync(dir)) {
      const p = path.join(dir, name);
      const rel = path.relative(root, p);
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) out[rel] = `link:${fs.readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[rel] = 'dir';
        walk(p);
      } else out[rel] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    }
  };
  walk(root);
  return out;
}

const storiesDir = () => shared('models/stories260K');
let smolBytes: Buffer | undefined;
const smol = () => (smolBytes ??= fs.readFileSync(smollm2()));

/** A fresh folder for one case, with helpers that build damaged inputs inside it. */
class Workspace {
  readonly dir = tmpDir();
  /** A copy of stories260K at `m`. */
  stories(name = 'm'): string {
    const m = path.join(this.dir, name);
    fs.cpSync(storiesDir(), m, { recursive: true });
    for (const f of fs.readdirSync(m)) fs.chmodSync(path.join(m, f), 0o644);
    fs.chmodSync(m, 0o755);
    return m;
  }
  config(edit: (c: Record<string, unknown>) => void): string {
    const m = this.stories();
    const file = path.join(m, 'config.json');
    const c = JSON.parse(fs.readFileSync(file, 'utf8'));
    edit(c);
    fs.writeFileSync(file, JSON.stringify(c));
    return m;
  }
  weights(edit: (b: Buffer) => Buffer): string {
    const m = this.stories();
    const file = path.join(m, 'model.safetensors');
    fs.writeFileSync(file, edit(fs.readFileSync(file)));
    return m;
  }
  gguf(edit: (b: Buffer) => Buffer = (b) => b): string {
    const g = path.join(this.dir, 'm.gguf');
    fs.writeFileSync(g, edit(smol()));
    return g;
  }
  file(name: string, content: string | Buffer): string {
    const p = path.join(this.dir, name);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    return p;
  }
  folder(name: string): string {
    const p = path.join(this.dir, name);
    fs.mkdirSync(p, { recursive: true });
    return p;
  }
  link(name: string, to: string): string {
    const p = path.join(this.dir, name);
    fs.symlinkSync(to, p);
    return p;
  }
}

/** The header of stories260K's safetensors file and where its data starts. */
function safetensorsHeader(b: Buffer): { header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>; dataAt: number } {
  const n = Number(b.readBigUInt64LE(0));
  return { header: JSON.parse(b.toString('utf8', 8, 8 + n)), dataAt: 8 + n };
}

function withHeader(b: Buffer, edit: (h: Record<string, any>) => void): Buffer {
  const { header, dataAt } = safetensorsHeader(b);
  edit(header);
  let text = JSON.stringify(header);
  const old = dataAt - 8;
  if (Buffer.byteLength(text) > old) throw new Error('edited header is longer than the original');
  text = text.padEnd(old, ' ');
  const out = Buffer.from(b);
  out.write(text, 8, 'utf8');
  return out;
}

function nanIn(b: Buffer, tensor: string): Buffer {
  const { header, dataAt } = safetensorsHeader(b);
  const out = Buffer.from(b);
  out.writeFloatLE(NaN, dataAt + header[tensor].data_offsets[0]);
  return out;
}

/** `b` with every value of `tensor` (f32) set to `value`. */
function filled(b: Buffer, tensor: string, value: number): Buffer {
  const { header, dataAt } = safetensorsHeader(b);
  const out = Buffer.from(b);
  const [start, end] = header[tensor].data_offsets;
  for (let at = dataAt + start; at < dataAt + end; at += 4) out.writeFloatLE(value, at);
  return out;
}

function ggufWithTensorType(b: Buffer, tensor: string, type: number): Buffer {
  const out = Buffer.from(b);
  const t = ggufLayout(out).tensors.find((x) => x.name === tensor);
  if (!t) throw new Error(`no tensor ${tensor}`);
  out.writeUInt32LE(type, t.typeAt);
  return out;
}

interface Case {
  name: string;
  /** Builds the inputs in the workspace and returns the command line (without `--json`). */
  args: (w: Workspace) => string[];
  code: ErrorCode;
  /** What the message must say. */
  says?: RegExp | ((w: Workspace) => RegExp);
  /** Paths outside the workspace that must not exist afterwards. */
  absent?: string[];
}

const exitFor = (code: ErrorCode) => (code === 'E_CONFIG' ? 2 : code === 'E_ABORTED' ? 130 : 1);
const prune = (model: string, ...rest: string[]) => ['prune', model, '--method', 'drop-bi', '--remove-layers', '1', ...rest];

const cases: Case[] = [
  // ---- info: folders, config.json, safetensors, tokenizer ----------------------------------
  { name: 'info: a model that does not exist', args: (w) => ['info', path.join(w.dir, 'nope')], code: 'E_NOT_FOUND', says: /nope/ },
  { name: 'info: a folder without config.json', args: (w) => ['info', w.folder('empty')], code: 'E_NOT_FOUND', says: /config\.json/ },
  { name: 'info: config.json that is not JSON', args: (w) => ['info', (fs.writeFileSync(path.join(w.stories(), 'config.json'), '{"model_type": "llama",'), path.join(w.dir, 'm'))], code: 'E_MODEL_FORMAT', says: /config\.json/ },
  { name: 'info: an unsupported architecture', args: (w) => ['info', w.config((c) => (c.model_type = 'gpt_neox'))], code: 'E_UNSUPPORTED', says: /gpt_neox/ },
  { name: 'info: 10^9 layers in config.json', args: (w) => ['info', w.config((c) => (c.num_hidden_layers = 1_000_000_000))], code: 'E_MODEL_FORMAT', says: /1000000000 layers.*hold 5/ },
  { name: 'info: fewer layers in config.json than in the weights', args: (w) => ['info', w.config((c) => (c.num_hidden_layers = 3))], code: 'E_MODEL_FORMAT', says: /says 3 layers.*hold 5/ },
  { name: 'info: zero layers', args: (w) => ['info', w.config((c) => (c.num_hidden_layers = 0))], code: 'E_MODEL_FORMAT', says: /num_hidden_layers/ },
  { name: 'info: negative layers', args: (w) => ['info', w.config((c) => (c.num_hidden_layers = -1))], code: 'E_MODEL_FORMAT', says: /num_hidden_layers|-1/ },
  { name: 'info: hidden_size 0', args: (w) => ['info', w.config((c) => (c.hidden_size = 0))], code: 'E_MODEL_FORMAT', says: /hidden_size/ },
  { name: 'info: negative hidden_size', args: (w) => ['info', w.config((c) => (c.hidden_size = -64))], code: 'E_MODEL_FORMAT', says: /-64/ },
  { name: 'info: hidden_size 2^40', args: (w) => ['info', w.config((c) => (c.hidden_size = 2 ** 40))], code: 'E_MODEL_FORMAT', says: /hidden_size/ },
  { name: 'info: max_position_embeddings 0', args: (w) => ['info', w.config((c) => (c.max_position_embeddings = 0))], code: 'E_MODEL_FORMAT', says: /max_position_embeddings/ },
  { name: 'info: a vocabulary smaller than the tokenizer', args: (w) => ['info', w.config((c) => (c.vocab_size = 100))], code: 'E_MODEL_FORMAT', says: /vocab_size|embed_tokens/ },
  { name: 'info: an FFN width the weights do not have', args: (w) => ['info', w.config((c) => (c.intermediate_size = 170))], code: 'E_MODEL_FORMAT', says: /gate_proj\.weight.*170/ },
  { name: 'info: heads that do not group', args: (w) => ['info', w.config((c) => (c.num_key_value_heads = 3))], code: 'E_MODEL_FORMAT', says: /num_key_value_heads/ },
  { name: 'info: NaN rms_norm_eps', args: (w) => ['info', w.config((c) => (c.rms_norm_eps = -1))], code: 'E_MODEL_FORMAT', says: /rms_norm_eps/ },
  { name: 'info: an unsupported RoPE scaling', args: (w) => ['info', w.config((c) => (c.rope_scaling = { rope_type: 'yarn', factor: 4 }))], code: 'E_UNSUPPORTED', says: /yarn/ },
  { name: 'info: a non-SiLU activation', args: (w) => ['info', w.config((c) => (c.hidden_act = 'gelu'))], code: 'E_UNSUPPORTED', says: /gelu/ },
  { name: 'info: a truncated safetensors file', args: (w) => ['info', w.weights((b) => b.subarray(0, b.length - 4096))], code: 'E_MODEL_FORMAT', says: /model\.safetensors/ },
  { name: 'info: an empty safetensors file', args: (w) => ['info', w.weights(() => Buffer.alloc(0))], code: 'E_MODEL_FORMAT', says: /empty/ },
  {
    name: 'info: a safetensors header length of 2^60',
    args: (w) => ['info', w.weights((b) => (b.writeBigUInt64LE(1n << 60n, 0), b))],
    code: 'E_MODEL_FORMAT',
    says: /model\.safetensors/,
  },
  { name: 'info: a garbage safetensors header', args: (w) => ['info', w.weights((b) => (b.write('{garbage', 8), b))], code: 'E_MODEL_FORMAT' },
  {
    name: 'info: a tensor offset past the data',
    args: (w) => ['info', w.weights((b) => withHeader(b, (h) => (h['model.norm.weight'].data_offsets[1] += 4)))],
    code: 'E_MODEL_FORMAT',
  },
  {
    name: 'info: a tensor of an unsupported dtype',
    args: (w) => ['info', w.weights((b) => withHeader(b, (h) => (h['model.norm.weight'].dtype = 'I32')))],
    code: 'E_UNSUPPORTED',
    says: /I32/,
  },
  {
    name: 'info: model.safetensors is a folder',
    args: (w) => {
      const m = w.stories();
      fs.rmSync(path.join(m, 'model.safetensors'));
      fs.mkdirSync(path.join(m, 'model.safetensors'));
      return ['info', m];
    },
    code: 'E_MODEL_FORMAT',
    says: /folder/,
  },
  { name: 'info: no weights at all', args: (w) => ['info', (fs.rmSync(path.join(w.stories(), 'model.safetensors')), path.join(w.dir, 'm'))], code: 'E_NOT_FOUND', says: /model\.safetensors/ },
  {
    name: 'info: only a PyTorch pickle',
    args: (w) => {
      const m = w.stories();
      fs.renameSync(path.join(m, 'model.safetensors'), path.join(m, 'pytorch_model.bin'));
      return ['info', m];
    },
    code: 'E_UNSUPPORTED',
    says: /safetensors/,
  },
  { name: 'info: no tokenizer.json', args: (w) => ['info', (fs.rmSync(path.join(w.stories(), 'tokenizer.json')), path.join(w.dir, 'm'))], code: 'E_NOT_FOUND', says: /tokenizer\.json/ },
  { name: 'info: a corrupt tokenizer.json', args: (w) => ['info', (fs.writeFileSync(path.join(w.stories(), 'tokenizer.json'), '{"model": 3}'), path.join(w.dir, 'm'))], code: 'E_MODEL_FORMAT', says: /tokenizer\.json/ },
  { name: 'info: a NaN in the weights', args: (w) => ['info', w.weights((b) => nanIn(b, 'model.layers.2.mlp.up_proj.weight'))], code: 'E_MODEL_FORMAT', says: /layers\.2\.mlp\.up_proj\.weight.* 1 non-finite/ },
  {
    name: 'info: a shard index that points outside the folder',
    args: (w) => {
      const m = w.stories();
      const { header } = safetensorsHeader(fs.readFileSync(path.join(m, 'model.safetensors')));
      const map = Object.fromEntries(Object.keys(header).filter((k) => k !== '__metadata__').map((k) => [k, '../../etc/passwd']));
      fs.writeFileSync(path.join(m, 'model.safetensors.index.json'), JSON.stringify({ weight_map: map }));
      return ['info', m];
    },
    code: 'E_MODEL_FORMAT',
    says: /\.\.\/\.\.\/etc\/passwd.*inside the model folder/,
  },
  {
    name: 'info: a shard index naming a missing shard',
    args: (w) => {
      const m = w.stories();
      fs.writeFileSync(path.join(m, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': 'model-00002-of-00002.safetensors' } }));
      return ['info', m];
    },
    code: 'E_NOT_FOUND',
    says: /model-00002-of-00002/,
  },
  { name: 'info: a shard index that is not JSON', args: (w) => ['info', (fs.writeFileSync(path.join(w.stories(), 'model.safetensors.index.json'), '[1,'), path.join(w.dir, 'm'))], code: 'E_MODEL_FORMAT', says: /index/ },
  { name: 'info: a text file given as the model', args: (w) => ['info', w.file('notes.txt', 'hello')], code: 'E_MODEL_FORMAT', says: /notes\.txt/ },
  { name: 'info: a bad --dtype', args: (w) => ['info', w.stories(), '--dtype', 'f64'], code: 'E_CONFIG', says: /dtype/ },
  { name: 'info: --device cuda on a CPU build', args: (w) => ['info', w.stories(), '--device', 'cuda'], code: 'E_DEVICE', says: /CUDA/ },
  // ---- info: GGUF --------------------------------------------------------------------------------
  { name: 'info: an empty .gguf', args: (w) => ['info', w.file('e.gguf', '')], code: 'E_MODEL_FORMAT', says: /e\.gguf/ },
  { name: 'info: a GGUF cut in half', args: (w) => ['info', w.gguf((b) => b.subarray(0, b.length >> 1))], code: 'E_MODEL_FORMAT', says: /truncated/ },
  { name: 'info: a GGUF cut inside its header', args: (w) => ['info', w.gguf((b) => b.subarray(0, 100_000))], code: 'E_MODEL_FORMAT', says: /truncated/ },
  { name: 'info: GGUF version 4', args: (w) => ['info', w.gguf((b) => (b = Buffer.from(b), b.writeUInt32LE(4, 4), b))], code: 'E_UNSUPPORTED', says: /GGUF version 4/ },
  { name: 'info: a GGUF tensor count of 2^40', args: (w) => ['info', w.gguf((b) => (b = Buffer.from(b), b.writeBigUInt64LE(1n << 40n, 8), b))], code: 'E_MODEL_FORMAT', says: /tensors/ },
  { name: 'info: GGUF block_count 10^9', args: (w) => ['info', w.gguf((b) => withU32(b, 'llama.block_count', 1_000_000_000))], code: 'E_MODEL_FORMAT', says: /1000000000 layers.*hold 30/ },
  { name: 'info: GGUF block_count 0', args: (w) => ['info', w.gguf((b) => withU32(b, 'llama.block_count', 0))], code: 'E_MODEL_FORMAT', says: /block_count/ },
  { name: 'info: GGUF block_count -1', args: (w) => ['info', w.gguf((b) => withU32(b, 'llama.block_count', -1))], code: 'E_MODEL_FORMAT', says: /block_count/ },
  { name: 'info: GGUF head_count 0', args: (w) => ['info', w.gguf((b) => withU32(b, 'llama.attention.head_count', 0))], code: 'E_MODEL_FORMAT', says: /head_count/ },
  { name: 'info: GGUF embedding_length 2^31', args: (w) => ['info', w.gguf((b) => withU32(b, 'llama.embedding_length', 2 ** 31))], code: 'E_MODEL_FORMAT', says: /embedding_length/ },
  { name: 'info: an unsupported GGUF architecture', args: (w) => ['info', w.gguf((b) => withString(b, 'general.architecture', 'bloom'))], code: 'E_UNSUPPORTED', says: /bloom/ },
  { name: 'info: an unknown GGUF tensor type', args: (w) => ['info', w.gguf((b) => ggufWithTensorType(b, 'blk.0.attn_norm.weight', 99))], code: 'E_UNSUPPORTED', says: /type 99/ },
  // ---- ppl -----------------------------------------------------------------------------------------
  { name: 'ppl: --seq-len 1', args: (w) => ['ppl', w.stories(), '--seq-len', '1', '--data', wikitext()], code: 'E_CONFIG', says: /seqLen.*at least 2/ },
  { name: 'ppl: --seq-len 0', args: (w) => ['ppl', w.stories(), '--seq-len', '0', '--data', wikitext()], code: 'E_CONFIG', says: /seqLen/ },
  { name: 'ppl: --seq-len above the context', args: (w) => ['ppl', w.stories(), '--seq-len', '513', '--data', wikitext()], code: 'E_CONFIG', says: /512/ },
  { name: 'ppl: --max-windows 0', args: (w) => ['ppl', w.stories(), '--max-windows', '0', '--data', wikitext()], code: 'E_CONFIG', says: /maxWindows/ },
  { name: 'ppl: --batch-size -1', args: (w) => ['ppl', w.stories(), '--batch-size', '-1', '--data', wikitext()], code: 'E_CONFIG', says: /batchSize/ },
  { name: 'ppl: no --data', args: (w) => ['ppl', w.stories()], code: 'E_CONFIG', says: /pass --data <file>/ },
  { name: 'ppl: --data that does not exist', args: (w) => ['ppl', w.stories(), '--data', path.join(w.dir, 'no.txt')], code: 'E_NOT_FOUND', says: /no\.txt/ },
  { name: 'ppl: --data that is empty', args: (w) => ['ppl', w.stories(), '--data', w.file('e.txt', '\n \n')], code: 'E_DATA', says: /e\.txt/ },
  { name: 'ppl: --data that is a folder', args: (w) => ['ppl', w.stories(), '--data', w.folder('texts')], code: 'E_CONFIG', says: /texts.*folder/ },
  { name: 'ppl: --data that is not UTF-8', args: (w) => ['ppl', w.stories(), '--data', w.file('b.txt', Buffer.from([0xff, 0xfe, 0x00, 0x80]))], code: 'E_DATA', says: /UTF-8/ },
  { name: 'ppl: --data jsonl without text fields', args: (w) => ['ppl', w.stories(), '--data', w.file('r.jsonl', '{"t": 1}\n')], code: 'E_DATA', says: /line 1/ },
  {
    name: 'ppl: activations that overflow f16',
    args: (w) => ['ppl', w.weights((b) => filled(b, 'model.norm.weight', 60000)), '--dtype', 'f16', '--seq-len', '32', '--max-windows', '2', '--data', wikitext()],
    code: 'E_MODEL_FORMAT',
    says: /not finite.*2 of 2 windows in F16/,
  },
  { name: 'ppl: a model with a NaN weight', args: (w) => ['ppl', w.weights((b) => nanIn(b, 'model.norm.weight')), '--seq-len', '32', '--data', wikitext()], code: 'E_MODEL_FORMAT', says: /model\.norm\.weight/ },
  // ---- compare -------------------------------------------------------------------------------------
  { name: 'compare: an unknown method', args: (w) => ['compare', w.stories(), '--methods', 'drop-bi,nope', '--remove-layers', '1', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /methods/ },
  { name: 'compare: no target', args: (w) => ['compare', w.stories(), '--methods', 'drop-bi', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /exactly one of removeLayers, ratio or threshold/ },
  { name: 'compare: removing every layer', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '5', '--out', path.join(w.dir, 'o'), '--no-ppl'], code: 'E_CONFIG', says: /larger than the model/ },
  { name: 'compare: --limit 0', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--limit', '0', '--no-ppl', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /limit/ },
  { name: 'compare: --ppl-windows 0', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--ppl-windows', '0', '--ppl-data', wikitext(), '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /pplWindows/ },
  { name: 'compare: --out is the model', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--out', path.join(w.dir, 'm'), '--force', '--no-ppl'], code: 'E_CONFIG', says: /is the input/ },
  { name: 'compare: --out exists', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--out', path.dirname(w.file('o/x', 'keep')), '--no-ppl'], code: 'E_OUTPUT_EXISTS', says: /pass force/ },
  { name: 'compare: an unknown task', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--tasks', 'nope', '--no-ppl', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /`nope` is not one of/ },
  { name: 'compare: no --ppl-data and no --no-ppl', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /--ppl-data <file>.*or --no-ppl/ },
  { name: 'compare: --ppl-data that does not exist', args: (w) => ['compare', w.stories(), '--methods', 'drop-last', '--remove-layers', '1', '--ppl-data', path.join(w.dir, 'no.txt'), '--out', path.join(w.dir, 'o')], code: 'E_NOT_FOUND', says: /no\.txt/ },
  // ---- eval ----------------------------------------------------------------------------------------
  { name: 'eval: an unknown task', args: (w) => ['eval', w.stories(), '--tasks', 'piqa,nope'], code: 'E_CONFIG', says: /`nope` is not one of/ },
  { name: 'eval: --limit 0', args: (w) => ['eval', w.stories(), '--tasks', 'piqa', '--limit', '0'], code: 'E_CONFIG', says: /limit/ },
  { name: 'eval: a task file that is not JSON', args: (w) => ['eval', w.stories(), '--tasks', w.file('t.jsonl', '{"query": "Q", "choices": ["a", "b"], "gold": 0}\n{"query": \n')], code: 'E_DATA', says: /t\.jsonl` line 2: not JSON/ },
  { name: 'eval: a gold index out of range', args: (w) => ['eval', w.stories(), '--tasks', w.file('t.jsonl', '{"query": "Q", "choices": ["a", "b"], "gold": 5}\n')], code: 'E_DATA', says: /line 1: gold index 5 is outside 0\.\.2/ },
  { name: 'eval: a row without choices', args: (w) => ['eval', w.stories(), '--tasks', w.file('t.jsonl', '{"query": "Q", "gold": 0}\n')], code: 'E_DATA', says: /line 1: missing field `choices`/ },
  { name: 'eval: an empty task file', args: (w) => ['eval', w.stories(), '--tasks', w.file('t.jsonl', '\n')], code: 'E_DATA', says: /holds no example/ },
  { name: 'eval: a task file that does not exist', args: (w) => ['eval', w.stories(), '--tasks', path.join(w.dir, 'none.jsonl')], code: 'E_NOT_FOUND', says: /none\.jsonl/ },
  { name: 'eval: a data folder without the task file', args: (w) => ['eval', w.stories(), '--tasks', 'boolq', '--data-dir', w.folder('data')], code: 'E_NOT_FOUND', says: /boolq\.jsonl.*data folder.*query/ },
  { name: 'eval: a truncated HellaSwag file', args: (w) => ['eval', w.stories(), '--tasks', 'hellaswag', '--data-dir', path.dirname(w.file('data/hellaswag_val.txt.bz2', fs.readFileSync(shared('data/eval/hellaswag_val.txt.bz2')).subarray(0, 5000)))], code: 'E_DATA', says: /bzip2/ },
  { name: 'eval: --log-samples is the model', args: (w) => ['eval', w.stories(), '--tasks', 'piqa', '--limit', '2', '--log-samples', path.join(w.dir, 'm', 'config.json'), '--force'], code: 'E_CONFIG', says: /lies inside the input|is the input/ },
  { name: 'eval: --log-samples exists', args: (w) => ['eval', w.stories(), '--tasks', 'piqa', '--limit', '2', '--log-samples', w.file('s.jsonl', 'keep')], code: 'E_OUTPUT_EXISTS', says: /pass force/ },
  { name: 'eval: --log-samples is a folder', args: (w) => ['eval', w.stories(), '--tasks', 'piqa', '--limit', '2', '--log-samples', w.folder('logs'), '--force'], code: 'E_CONFIG', says: /is a folder/ },
  // ---- convert -------------------------------------------------------------------------------------
  { name: 'convert: --out is the input', args: (w) => ['convert', w.stories(), '--out', path.join(w.dir, 'm'), '--force'], code: 'E_CONFIG', says: /is the input/ },
  { name: 'convert: --out inside the input', args: (w) => ['convert', w.stories(), '--out', path.join(w.dir, 'm', 'sub')], code: 'E_CONFIG', says: /lies inside the input/ },
  { name: 'convert: --out holds the input, with --force', args: (w) => ['convert', w.stories(), '--out', w.dir, '--force'], code: 'E_CONFIG', says: /contains the input/ },
  { name: 'convert: --out links to the input', args: (w) => ['convert', w.stories(), '--out', w.link('l', path.join(w.dir, 'm')), '--force'], code: 'E_CONFIG', says: /through a link/ },
  { name: 'convert: --out links to a folder around the input', args: (w) => ['convert', w.stories(), '--out', w.link('l', w.dir), '--force'], code: 'E_CONFIG', says: /contains the input/ },
  { name: 'convert: --out relative, inside the input', args: (w) => ['convert', w.stories(), '--out', 'm/./x/../y'], code: 'E_CONFIG', says: /lies inside the input/ },
  { name: 'convert: --out exists and is not empty', args: (w) => ['convert', w.stories(), '--out', path.dirname(w.file('o/x.txt', 'keep'))], code: 'E_OUTPUT_EXISTS', says: /pass force/ },
  { name: 'convert: --out holds a subfolder, with --force', args: (w) => ['convert', w.stories(), '--out', path.dirname(path.dirname(w.file('o/sub/x.txt', 'keep'))), '--force'], code: 'E_OUTPUT_EXISTS', says: /subfolder `sub`/ },
  { name: 'convert: --out is a file', args: (w) => ['convert', w.stories(), '--out', w.file('f', 'x'), '--force'], code: 'E_CONFIG', says: /is a file/ },
  { name: 'convert: --out under a file', args: (w) => ['convert', w.stories(), '--out', path.join(w.file('f', 'x'), 'o')], code: 'E_CONFIG', says: /part of its path is a file/ },
  { name: 'convert: --out is a dangling link', args: (w) => ['convert', w.stories(), '--out', w.link('l', path.join(w.dir, 'gone'))], code: 'E_CONFIG', says: /link to a path that does not exist/ },
  { name: 'convert: --out in /proc', args: (w) => ['convert', w.stories(), '--out', '/proc/layerfold-out'], code: 'E_IO', says: /\/proc\/layerfold-out/, absent: ['/proc/layerfold-out'] },
  { name: 'convert: --out is the GGUF input', args: (w) => ['convert', w.gguf(), '--out', path.join(w.dir, 'm.gguf'), '--force'], code: 'E_CONFIG', says: /is the input file/ },
  { name: 'convert: --out holds the GGUF input', args: (w) => ['convert', w.gguf(), '--out', w.dir, '--force'], code: 'E_CONFIG', says: /contains the input file/ },
  { name: 'convert: --max-shard-bytes 0', args: (w) => ['convert', w.stories(), '--out', path.join(w.dir, 'o'), '--max-shard-bytes', '0'], code: 'E_CONFIG', says: /maxShardBytes/ },
  { name: 'convert: --out is the working folder, with --force', args: (w) => (w.file('notes.txt', 'keep'), ['convert', storiesDir(), '--out', '.', '--force']), code: 'E_OUTPUT_EXISTS', says: /working folder/ },
  { name: 'convert: --out holds the working folder, with --force', args: (w) => (w.file('notes.txt', 'keep'), ['convert', storiesDir(), '--out', '..', '--force']), code: 'E_OUTPUT_EXISTS', says: /working folder/ },
  // ---- convert: GGUF output ------------------------------------------------------------------------
  { name: 'convert: GGUF output of a byte-fallback tokenizer', args: (w) => ['convert', w.stories(), '--out', path.join(w.dir, 'o.gguf')], code: 'E_UNSUPPORTED', says: /byte fallback/ },
  { name: 'convert: --format gguf --dtype bf16', args: (w) => ['convert', w.gguf(), '--out', path.join(w.dir, 'o.gguf'), '--dtype', 'bf16'], code: 'E_CONFIG', says: /bf16.*f32, f16 or q8_0/ },
  { name: 'convert: --dtype q8_0 to a folder', args: (w) => ['convert', w.gguf(), '--out', path.join(w.dir, 'o'), '--dtype', 'q8_0'], code: 'E_CONFIG', says: /q8_0.*format gguf/ },
  { name: 'convert: an unknown --format', args: (w) => ['convert', w.gguf(), '--out', path.join(w.dir, 'o'), '--format', 'onnx'], code: 'E_CONFIG', says: /format/ },
  { name: 'convert: a .gguf --out that exists', args: (w) => ['convert', w.gguf(), '--out', w.file('o.gguf', 'keep')], code: 'E_OUTPUT_EXISTS', says: /o\.gguf.*pass force/ },
  { name: 'convert: a .gguf --out that is a folder', args: (w) => ['convert', w.gguf(), '--out', w.folder('o.gguf'), '--force'], code: 'E_CONFIG', says: /is a folder, not a file/ },
  { name: 'convert: --format gguf into the GGUF input', args: (w) => ['convert', w.gguf(), '--out', path.join(w.dir, 'm.gguf'), '--format', 'gguf', '--force'], code: 'E_CONFIG', says: /is the input file/ },
  // ---- prune ---------------------------------------------------------------------------------------
  { name: 'prune: removing every layer', args: (w) => ['prune', w.stories(), '--method', 'drop-bi', '--remove-layers', '5', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /larger than the model/ },
  { name: 'prune: removing no layer', args: (w) => ['prune', w.stories(), '--method', 'drop-bi', '--remove-layers', '0', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /removeLayers/ },
  { name: 'prune: a ratio of 1.5', args: (w) => ['prune', w.stories(), '--method', 'drop-bi', '--ratio', '1.5', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /ratio/ },
  { name: 'prune: an unknown method', args: (w) => ['prune', w.stories(), '--method', 'nope', '--remove-layers', '1', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG' },
  { name: 'prune: laco --lowest-layer past the model', args: (w) => ['prune', w.stories(), '--method', 'laco', '--remove-layers', '1', '--lowest-layer', '10', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /lowestLayer.*0\.\.=3/ },
  { name: 'prune: laco lowest above highest', args: (w) => ['prune', w.stories(), '--method', 'laco', '--remove-layers', '1', '--lowest-layer', '3', '--highest-layer', '2', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /highestLayer/ },
  { name: 'prune: laco --highest-layer past the model', args: (w) => ['prune', w.stories(), '--method', 'laco', '--remove-layers', '1', '--highest-layer', '9', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /highestLayer.*=5/ },
  { name: 'prune: laco --layers-per-merge wider than the range', args: (w) => ['prune', w.stories(), '--method', 'laco', '--remove-layers', '1', '--layers-per-merge', '9', '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /layersPerMerge/ },
  { name: 'prune: empty calibration text', args: (w) => prune(w.stories(), '--calib', w.file('c.txt', '\n\n'), '--out', path.join(w.dir, 'o')), code: 'E_DATA', says: /c\.txt/ },
  { name: 'prune: missing calibration file', args: (w) => prune(w.stories(), '--calib', path.join(w.dir, 'c.txt'), '--out', path.join(w.dir, 'o')), code: 'E_NOT_FOUND', says: /c\.txt/ },
  { name: 'prune: calibration file that is a folder', args: (w) => prune(w.stories(), '--calib', w.folder('c'), '--out', path.join(w.dir, 'o')), code: 'E_CONFIG', says: /folder/ },
  { name: 'prune: calibration --seq-len 1', args: (w) => prune(w.stories(), '--seq-len', '1', '--out', path.join(w.dir, 'o')), code: 'E_CONFIG', says: /seqLen/ },
  { name: 'prune: --config names a folder', args: (w) => prune(w.stories(), '--config', w.folder('cfg'), '--out', path.join(w.dir, 'o')), code: 'E_CONFIG', says: /cfg.*folder/ },
  { name: 'prune: --config does not exist', args: (w) => prune(w.stories(), '--config', path.join(w.dir, 'c.json'), '--out', path.join(w.dir, 'o')), code: 'E_NOT_FOUND', says: /c\.json/ },
  { name: 'prune: --config is not JSON', args: (w) => prune(w.stories(), '--config', w.file('c.json', '{'), '--out', path.join(w.dir, 'o')), code: 'E_CONFIG', says: /c\.json/ },
  { name: 'prune: --out is the input', args: (w) => prune(w.stories(), '--out', path.join(w.dir, 'm'), '--force'), code: 'E_CONFIG', says: /is the input/ },
  { name: 'prune: --out inside the input', args: (w) => prune(w.stories(), '--out', path.join(w.dir, 'm', 'pruned')), code: 'E_CONFIG', says: /lies inside/ },
  { name: 'prune: --out links to the input', args: (w) => prune(w.stories(), '--out', w.link('l', path.join(w.dir, 'm')), '--force'), code: 'E_CONFIG', says: /through a link/ },
  {
    name: 'prune: --out holds the calibration file, with --force',
    args: (w) => prune(w.stories(), '--calib', w.file('data/c.txt', 'Once upon a time there was a cat.\n'), '--out', path.join(w.dir, 'data'), '--force'),
    code: 'E_CONFIG',
    says: /contains the input file .*c\.txt/,
  },
  // ---- analyze ------------------------------------------------------------------------------------
  { name: 'analyze: --out is the input, with --force', args: (w) => ['analyze', w.stories(), '--out', path.join(w.dir, 'm'), '--force'], code: 'E_CONFIG', says: /is the input/ },
  { name: 'analyze: --out holds the input, with --force', args: (w) => ['analyze', w.stories(), '--out', w.dir, '--force'], code: 'E_CONFIG', says: /contains the input/ },
  { name: 'analyze: --out inside the input', args: (w) => ['analyze', w.stories(), '--out', path.join(w.dir, 'm', 'a')], code: 'E_CONFIG', says: /lies inside/ },
  { name: 'analyze: --out links to the input, with --force', args: (w) => ['analyze', w.stories(), '--out', w.link('l', path.join(w.dir, 'm')), '--force'], code: 'E_CONFIG', says: /through a link/ },
  { name: 'analyze: --out exists and is not empty', args: (w) => ['analyze', w.stories(), '--out', path.dirname(w.file('o/x.txt', 'keep'))], code: 'E_OUTPUT_EXISTS' },
  { name: 'analyze: --out in /proc', args: (w) => ['analyze', w.stories(), '--out', '/proc/layerfold-out', '--samples', '2'], code: 'E_IO', says: /\/proc\/layerfold-out/ },
  { name: 'analyze: empty calibration text', args: (w) => ['analyze', w.stories(), '--calib', w.file('c.txt', ' \n'), '--out', path.join(w.dir, 'o')], code: 'E_DATA', says: /c\.txt/ },
  { name: 'analyze: --config names a folder', args: (w) => ['analyze', w.stories(), '--config', w.folder('cfg'), '--out', path.join(w.dir, 'o')], code: 'E_CONFIG', says: /folder/ },
];

describe('bad input on the command line', () => {
  it('has at least 60 cases with distinct names', () => {
    expect(cases.length).toBeGreaterThanOrEqual(60);
    expect(new Set(cases.map((c) => c.name)).size).toBe(cases.length);
  });

  for (const c of cases) {
    it(c.name, () => {
      const w = new Workspace();
      try {
        const args = c.args(w);
        const before = tree(w.dir);
        const r = spawnSync(process.execPath, [cli, ...args, '--json'], {
          cwd: w.dir,
          encoding: 'utf8',
          env: { ...process.env, RUST_BACKTRACE: '1', FORCE_COLOR: '0' },
        });
        let doc: { error?: { code: string; message: string } };
        try {
          doc = JSON.parse(r.stdout);
        } catch {
          throw new Error(`stdout is not one JSON document (status ${r.status}): ${r.stdout}\n${r.stderr}`);
        }
        expect(doc.error?.code, `${doc.error?.message}\n${r.stderr}`).toBe(c.code);
        expect(r.status).toBe(exitFor(c.code));
        const message = doc.error!.message;
        expect(message).not.toMatch(/\n|stack backtrace|panicked/);
        const says = typeof c.says === 'function' ? c.says(w) : c.says;
        if (says) expect(message).toMatch(says);
        expect(tree(w.dir), 'nothing is written, moved or changed').toEqual(before);
        for (const p of c.absent ?? []) expect(fs.existsSync(p)).toBe(false);
      } finally {
        fs.rmSync(w.dir, { recursive: true, force: true });
      }
    });
  }
});

describe('numbers JSON cannot hold', () => {
  it('a perplexity too large for a number comes with a warning, not a bare null', () => {
    const w = new Workspace();
    try {
      const m = w.weights((b) => filled(b, 'model.norm.weight', 60000));
      const r = spawnSync(process.execPath, [cli, 'ppl', m, '--seq-len', '32', '--max-windows', '2', '--data', wikitext(), '--json'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout);
      expect(doc.ppl).toBeNull();
      expect(Number.isFinite(doc.nll) && doc.nll > 700).toBe(true);
      expect(doc.warnings.join(' ')).toMatch(/too large for a number.*compare nll/);
    } finally {
      fs.rmSync(w.dir, { recursive: true, force: true });
    }
  });
});

interface ApiCase {
  name: string;
  /** Builds the inputs in the workspace; the tree is taken after it. */
  setup: (w: Workspace) => string[];
  run: (paths: string[], w: Workspace) => Promise<unknown>;
  code: ErrorCode;
  says?: RegExp;
}

const calibText = 'Once upon a time there was a cat. It liked to play in the sun.\n';

const apiCases: ApiCase[] = [
  { name: 'loadModel: a missing model', setup: (w) => [path.join(w.dir, 'nope')], run: ([m]) => loadModel(m), code: 'E_NOT_FOUND', says: /nope/ },
  { name: 'loadModel: an unknown option', setup: (w) => [w.stories()], run: ([m]) => loadModel(m, { dtpe: 'f32' } as never), code: 'E_CONFIG', says: /dtpe/ },
  { name: 'loadModel: 10^9 layers', setup: (w) => [w.config((c) => (c.num_hidden_layers = 1e9))], run: ([m]) => loadModel(m), code: 'E_MODEL_FORMAT', says: /hold 5/ },
  {
    name: 'save: over the input folder',
    setup: (w) => [w.stories()],
    run: async ([m]) => {
      await using model = await loadModel(m);
      return model.save(m, { force: true });
    },
    code: 'E_CONFIG',
    says: /is the input/,
  },
  {
    name: 'save: inside the input folder',
    setup: (w) => [w.stories()],
    run: async ([m]) => {
      await using model = await loadModel(m);
      return model.save(path.join(m, 'copy'));
    },
    code: 'E_CONFIG',
    says: /lies inside/,
  },
  {
    name: 'save: into a non-empty folder',
    setup: (w) => [w.stories(), path.dirname(w.file('o/keep.txt', 'x'))],
    run: async ([m, out]) => {
      await using model = await loadModel(m);
      return model.save(out);
    },
    code: 'E_OUTPUT_EXISTS',
  },
  {
    name: 'save: a pruned model over its calibration file',
    setup: (w) => [w.stories(), w.file('data/c.txt', calibText)],
    run: async ([m, calib]) => {
      await using model = await loadModel(m);
      const r = await model.prune({ method: 'drop-bi', target: { removeLayers: 1 }, calibration: { file: calib, seqLen: 8, nSamples: 1 } });
      await using pruned = r.model;
      return pruned.save(path.dirname(calib), { force: true });
    },
    code: 'E_CONFIG',
    says: /contains the input file/,
  },
  {
    name: 'perplexity: seqLen 1',
    setup: (w) => [w.stories()],
    run: async ([m]) => {
      await using model = await loadModel(m);
      return model.perplexity('Once upon a time', { seqLen: 1 });
    },
    code: 'E_CONFIG',
    says: /seqLen/,
  },
  {
    name: 'perplexity: a folder as the text file',
    setup: (w) => [w.stories(), w.folder('t')],
    run: async ([m, t]) => {
      await using model = await loadModel(m);
      return model.perplexity({ file: t });
    },
    code: 'E_CONFIG',
    says: /folder/,
  },
  {
    name: 'prune: laco lowestLayer past the model',
    setup: (w) => [w.stories()],
    run: async ([m]) => {
      await using model = await loadModel(m);
      return model.prune({ method: 'laco', target: { removeLayers: 1 }, lowestLayer: 10 });
    },
    code: 'E_CONFIG',
    says: /lowestLayer/,
  },
];

describe('bad input through the API', () => {
  for (const c of apiCases) {
    it(c.name, async () => {
      const w = new Workspace();
      try {
        const paths = c.setup(w);
        const before = tree(w.dir);
        const err = await c.run(paths, w).then(
          () => undefined,
          (e) => e,
        );
        expect(err?.code, String(err?.message)).toBe(c.code);
        expect(err.message).not.toMatch(/\n|stack backtrace/);
        if (c.says) expect(err.message).toMatch(c.says);
        expect(tree(w.dir), 'nothing is written, moved or changed').toEqual(before);
      } finally {
        fs.rmSync(w.dir, { recursive: true, force: true });
      }
    });
  }
});

afterAll(() => {
  smolBytes = undefined;
});
