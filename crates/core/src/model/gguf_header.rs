//! A structural check of a GGUF file against its own length, run before candle parses it
//! (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//!
//! candle's reader bounds strings and arrays by the bytes left, but it divides by a zero
//! `general.alignment` and does not check tensor shapes, offsets or sizes. This walk reads every
//! count, length and offset of the header without allocating anything sized by them and rejects
//! what llama.cpp's `gguf_init_from_file` rejects (`ggml/src/gguf.cpp`): unknown versions, a
//! non-power-of-two alignment, duplicate keys or tensor names, more than 4 dimensions, a first
//! dimension that is not a multiple of the block size, unaligned offsets, and tensor data that
//! runs past the end of the file. After it, candle parses the header and reads tensors safely.

use std::collections::HashSet;
use std::path::Path;

use candle_core::quantized::GgmlDType;

use crate::error::{Error, Result};

/// GGML_MAX_DIMS (`ggml.h`).
const MAX_DIMS: u64 = 4;
/// The alignment when `general.alignment` is absent (GGUF_DEFAULT_ALIGNMENT).
const DEFAULT_ALIGNMENT: u64 = 32;
/// Nested arrays deeper than this are refused (candle's own limit is 64).
const MAX_DEPTH: usize = 8;

/// Checks the header of the GGUF file `bytes` (read from `path`, named in errors).
pub fn check(bytes: &[u8], path: &Path) -> Result<()> {
    Walker { bytes, pos: 0, path, wide: true }.header()
}

/// The ggml type of a tensor-info type id, as candle knows it (`GgmlDType::from_u32`, which
/// candle keeps crate-private).
fn ggml_type(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
    /// Lengths and counts are u64 (versions 2 and 3) rather than u32 (version 1).
    wide: bool,
}

impl<'a> Walker<'a> {
    fn bad(&self, reason: impl std::fmt::Display) -> Error {
        Error::format(self.path, "GGUF file", format!("{reason} (at byte {})", self.pos))
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.bad(format!(
                "{what} needs {n} bytes but the file has {} left: it is truncated or corrupt",
                self.remaining()
            )));
        }
        let bytes: &'a [u8] = self.bytes;
        let start = self.pos;
        self.pos += n as usize;
        Ok(&bytes[start..self.pos])
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("take(4) gives 4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("take(8) gives 8 bytes")))
    }

    fn length(&mut self, what: &str) -> Result<u64> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn string(&mut self, what: &str) -> Result<&'a str> {
        let len = self.length(what)?;
        let at = self.pos;
        let b = self.take(len, what)?;
        // candle replaces invalid UTF-8; a key or a tensor name must still be readable text.
        std::str::from_utf8(b).map_err(|_| {
            Error::format(self.path, "GGUF file", format!("{what} at byte {at} is not UTF-8"))
        })
    }

    fn header(mut self) -> Result<()> {
        let magic = self.take(4, "the magic")?;
        if magic != b"GGUF" {
            return Err(self.bad("it does not start with the GGUF magic bytes"));
        }
        let version = self.u32("the version")?;
        match version {
            1 => self.wide = false,
            2 | 3 => {}
            v if (1..=3).contains(&v.swap_bytes()) => {
                return Err(Error::unsupported(
                    format!("the big-endian GGUF file `{}`", self.path.display()),
                    "layerfold reads little-endian GGUF files (versions 1 to 3)",
                ))
            }
            v => {
                return Err(Error::unsupported(
                    format!("GGUF version {v} of `{}`", self.path.display()),
                    "layerfold reads GGUF versions 1 to 3",
                ))
            }
        }
        let tensors = self.length("the tensor count")?;
        let entries = self.length("the metadata count")?;
        // Every entry takes at least a length prefix, a type and one byte; every tensor info a
        // name length, a dimension count, a type and an offset.
        let prefix = if self.wide { 8 } else { 4 };
        let least = entries
            .checked_mul(prefix + 5)
            .and_then(|a| tensors.checked_mul(prefix + 16).and_then(|b| a.checked_add(b)));
        if least.is_none_or(|n| n > self.remaining()) {
            return Err(self.bad(format!(
                "the header declares {entries} metadata entries and {tensors} tensors, more than \
                 the file's {} bytes can hold: it is truncated or corrupt",
                self.bytes.len()
            )));
        }
        let mut alignment = DEFAULT_ALIGNMENT;
        let mut keys = HashSet::new();
        for _ in 0..entries {
            let key = self.string("a metadata key")?.to_string();
            let kind = self.u32("a metadata type")?;
            let value = self.value(kind, 0, &key)?;
            if key == "general.alignment" {
                // candle reads it from integers of up to 32 bits and ignores it otherwise, which
                // would put the tensor data elsewhere than the writer meant: refuse that.
                alignment = match value {
                    Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                    Some(a) => {
                        return Err(
                            self.bad(format!("`general.alignment` is {a}, not a power of two"))
                        )
                    }
                    None => {
                        return Err(
                            self.bad("`general.alignment` is not an integer of at most 32 bits")
                        )
                    }
                };
            }
            if !keys.insert(key.clone()) {
                return Err(self.bad(format!("metadata key `{key}` appears twice")));
            }
        }
        let mut infos = Vec::new();
        let mut names = HashSet::new();
        for _ in 0..tensors {
            let name = self.string("a tensor name")?.to_string();
            let dims = self.u32("a dimension count")? as u64;
            if dims > MAX_DIMS {
                return Err(self.bad(format!("tensor `{name}` has {dims} dimensions, at most 4")));
            }
            let mut shape = Vec::new();
            for _ in 0..dims {
                shape.push(self.length("a dimension")?);
            }
            let kind = self.u32("a tensor type")?;
            let offset = self.u64("a tensor offset")?;
            let Some(dtype) = ggml_type(kind) else {
                return Err(Error::unsupported(
                    format!("GGUF quantisation type {kind} in `{}`", self.path.display()),
                    "candle dequantises F32, F16, BF16, Q4_0…Q8_1 and the K-quants; requantise \
                     the file (llama-quantize) to one of those",
                ));
            };
            if !names.insert(name.clone()) {
                return Err(self.bad(format!("tensor `{name}` appears twice")));
            }
            infos.push((name, shape, dtype, offset));
        }
        let data_start = (self.pos as u64).div_ceil(alignment) * alignment;
        let file_len = self.bytes.len() as u64;
        for (name, shape, dtype, offset) in infos {
            let bad = |reason: String| {
                Error::format(self.path, "GGUF file", format!("tensor `{name}`: {reason}"))
            };
            let elements = shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
            let Some(elements) = elements.filter(|&n| n <= i64::MAX as u64) else {
                return Err(bad(format!("shape {shape:?} has more elements than any file holds")));
            };
            let block = dtype.block_size() as u64;
            if shape.first().is_some_and(|&d| d % block != 0) {
                return Err(bad(format!(
                    "its first dimension {} is not a multiple of the {dtype:?} block size {block}",
                    shape[0]
                )));
            }
            if offset % alignment != 0 {
                return Err(bad(format!("offset {offset} is not a multiple of {alignment}")));
            }
            let bytes = elements / block * dtype.type_size() as u64;
            let end = data_start.checked_add(offset).and_then(|s| s.checked_add(bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(bad(format!(
                        "its {bytes} bytes at offset {offset} end past the file's {file_len} \
                         bytes: the file is truncated"
                    )))
                }
            }
        }
        Ok(())
    }

    /// Skips one value of type `kind`; returns it when it is an integer of at most 32 bits, the
    /// types candle reads `general.alignment` from.
    fn value(&mut self, kind: u32, depth: usize, key: &str) -> Result<Option<i64>> {
        let what = format!("the value of `{key}`");
        let small = |b: &[u8], signed: bool| -> i64 {
            match (b.len(), signed) {
                (1, false) => b[0] as i64,
                (1, true) => b[0] as i8 as i64,
                (2, false) => u16::from_le_bytes([b[0], b[1]]) as i64,
                (2, true) => i16::from_le_bytes([b[0], b[1]]) as i64,
                (_, false) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
                (_, true) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            }
        };
        Ok(match kind {
            0 | 1 => Some(small(self.take(1, &what)?, kind == 1)),
            2 | 3 => Some(small(self.take(2, &what)?, kind == 3)),
            4 | 5 => Some(small(self.take(4, &what)?, kind == 5)),
            // bool, f32, u64, i64, f64
            7 => self.take(1, &what).map(|_| None)?,
            6 => self.take(4, &what).map(|_| None)?,
            10..=12 => self.take(8, &what).map(|_| None)?,
            8 => {
                self.string(&what)?;
                None
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(
                        self.bad(format!("`{key}` nests arrays more than {MAX_DEPTH} deep"))
                    );
                }
                let inner = self.u32(&what)?;
                let count = self.length(&what)?;
                let size = match inner {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                match size {
                    Some(size) => {
                        let n = count.saturating_mul(size);
                        self.take(n, &what)?;
                    }
                    None => {
                        // Strings and arrays take at least their length prefix each.
                        let prefix = if self.wide { 8 } else { 4 };
                        if count.checked_mul(prefix).is_none_or(|n| n > self.remaining()) {
                            return Err(self.bad(format!(
                                "`{key}` declares {count} elements, more than the file holds: it is \
                                 truncated or corrupt"
                            )));
                        }
                        for _ in 0..count {
                            self.value(inner, depth + 1, key)?;
                        }
                    }
                }
                None
            }
            other => return Err(self.bad(format!("`{key}` has the unknown metadata type {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 header with the given metadata entries (already encoded) and one f32 tensor of
    /// `elements` values at `offset`, followed by `data` bytes of tensor data.
    fn file(entries: &[Vec<u8>], dims: &[u64], kind: u32, offset: u64, data: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend((entries.len() as u64).to_le_bytes());
        for e in entries {
            b.extend(e);
        }
        b.extend(3u64.to_le_bytes());
        b.extend(b"w.x");
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(kind.to_le_bytes());
        b.extend(offset.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(vec![0u8; data]);
        b
    }

    fn u32_entry(key: &str, v: u32) -> Vec<u8> {
        let mut b = (key.len() as u64).to_le_bytes().to_vec();
        b.extend(key.as_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
        b
    }

    fn check_bytes(b: &[u8]) -> Result<()> {
        check(b, Path::new("t.gguf"))
    }

    #[test]
    fn accepts_a_well_formed_file() {
        check_bytes(&file(&[u32_entry("general.alignment", 64)], &[8, 2], 0, 0, 64 + 32)).unwrap();
    }

    #[test]
    fn rejects_what_llama_cpp_rejects() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (file(&[u32_entry("general.alignment", 0)], &[8], 0, 0, 32), "power of two"),
            (file(&[u32_entry("general.alignment", 24)], &[8], 0, 0, 32), "power of two"),
            (file(&[], &[8], 0, 0, 31), "truncated"),
            (file(&[], &[8], 0, 4, 64), "multiple of 32"),
            (file(&[], &[u64::MAX, 2], 0, 0, 32), "more elements"),
            (file(&[], &[1 << 62, 1 << 62], 0, 0, 32), "more elements"),
            (file(&[], &[31], 2, 0, 64), "block size"),
            (file(&[], &[1, 1, 1, 1, 1], 0, 0, 32), "at most 4"),
            (file(&[u32_entry("a", 1), u32_entry("a", 2)], &[8], 0, 0, 32), "twice"),
        ];
        for (bytes, want) in cases {
            let e = check_bytes(&bytes).unwrap_err();
            assert_eq!(e.code(), "E_MODEL_FORMAT", "{e}");
            assert!(e.to_string().contains(want), "want `{want}` in: {e}");
        }
    }

    #[test]
    fn names_versions_and_types_it_does_not_read() {
        let mut b = file(&[], &[8], 0, 0, 32);
        b[4..8].copy_from_slice(&4u32.to_le_bytes());
        let e = check_bytes(&b).unwrap_err();
        assert_eq!(e.code(), "E_UNSUPPORTED");
        assert!(e.to_string().contains("GGUF version 4"), "{e}");
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        assert!(check_bytes(&b).unwrap_err().to_string().contains("big-endian"));
        let e = check_bytes(&file(&[], &[8], 99, 0, 32)).unwrap_err();
        assert_eq!(e.code(), "E_UNSUPPORTED");
    }

    #[test]
    fn huge_counts_fail_before_anything_is_read() {
        let mut b = file(&[], &[8], 0, 0, 32);
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(check_bytes(&b).unwrap_err().to_string().contains("more than the file"));
        // An array of 2^40 u64s in a small file.
        let mut entry = 1u64.to_le_bytes().to_vec();
        entry.extend(b"k");
        entry.extend(9u32.to_le_bytes());
        entry.extend(10u32.to_le_bytes());
        entry.extend((1u64 << 40).to_le_bytes());
        assert!(check_bytes(&file(&[entry], &[8], 0, 0, 32)).is_err());
    }
}
