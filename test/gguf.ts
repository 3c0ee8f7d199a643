/**
 * Just enough of the GGUF header (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md) for
 * the specs to damage a real file in place: where each metadata value and each tensor info sits.
 * Versions 2 and 3 only (u64 lengths).
 */

const FIXED: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
const STRING = 8;
const ARRAY = 9;

export interface GgufLayout {
  /** Byte offset of each metadata key's value type (the u32 before its value). */
  entries: Map<string, { typeAt: number; valueAt: number; type: number }>;
  /** Byte offset of each tensor info's type id (u32) and the dimensions before it. */
  tensors: { name: string; dimsAt: number; nDims: number; typeAt: number }[];
}

export function ggufLayout(buf: Buffer): GgufLayout {
  let pos = 8;
  const u32 = () => {
    const v = buf.readUInt32LE(pos);
    pos += 4;
    return v;
  };
  const u64 = () => {
    const v = Number(buf.readBigUInt64LE(pos));
    pos += 8;
    return v;
  };
  const str = () => {
    const n = u64();
    const s = buf.toString('utf8', pos, pos + n);
    pos += n;
    return s;
  };
  const skip = (type: number): void => {
    if (FIXED[type] !== undefined) pos += FIXED[type];
    else if (type === STRING) str();
    else if (type === ARRAY) {
      const inner = u32();
      const n = u64();
      if (FIXED[inner] !== undefined) pos += n * FIXED[inner];
      else for (let i = 0; i < n; i++) skip(inner);
    } else throw new Error(`unknown GGUF type ${type}`);
  };
  const tensorCount = u64();
  const entryCount = u64();
  const entries: GgufLayout['entries'] = new Map();
  for (let i = 0; i < entryCount; i++) {
    const key = str();
    const typeAt = pos;
    const type = u32();
    entries.set(key, { typeAt, valueAt: pos, type });
    skip(type);
  }
  const tensors: GgufLayout['tensors'] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = str();
    const nDims = u32();
    const dimsAt = pos;
    pos += 8 * nDims;
    tensors.push({ name, dimsAt, nDims, typeAt: pos });
    pos += 4 + 8;
  }
  return { entries, tensors };
}

/** A copy of `buf` with the u32 metadata value `key` set to `value` (an int32 when negative). */
export function withU32(buf: Buffer, key: string, value: number): Buffer {
  const out = Buffer.from(buf);
  const e = ggufLayout(out).entries.get(key);
  if (!e || (e.type !== 4 && e.type !== 5)) throw new Error(`no 32-bit integer metadata ${key}`);
  if (value < 0) {
    out.writeUInt32LE(5, e.typeAt);
    out.writeInt32LE(value, e.valueAt);
  } else out.writeUInt32LE(value, e.valueAt);
  return out;
}

/** A copy of `buf` with the string metadata `key` replaced by `value` of the same byte length. */
export function withString(buf: Buffer, key: string, value: string): Buffer {
  const out = Buffer.from(buf);
  const e = ggufLayout(out).entries.get(key);
  if (!e || e.type !== STRING) throw new Error(`no string metadata ${key}`);
  const len = Number(out.readBigUInt64LE(e.valueAt));
  if (Buffer.byteLength(value) !== len) throw new Error(`replacement for ${key} must be ${len} bytes`);
  out.write(value, e.valueAt + 8, 'utf8');
  return out;
}
