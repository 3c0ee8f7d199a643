//! Hugging Face checkpoint folders: `config.json`, `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, memory-mapped; f32, f16 and bf16 weights.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::Tensor;
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorView};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::weights::{layer_index, WeightSource};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One memory-mapped `.safetensors` file with its parsed, validated header.
struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    header_len: usize,
    metadata: Metadata,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::format(path, "safetensors file", "it is a folder, not a file"));
        }
        if meta.len() == 0 {
            return Err(Error::format(path, "safetensors file", "the file is empty"));
        }
        // SAFETY: the file is opened read-only and layerfold never writes to its inputs; a
        // concurrent external writer is outside what any mmap-based loader (candle, safetensors)
        // can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Validates the header, every tensor's offsets, and that the file is exactly as long as
        // the header says: a truncated download fails here, not at first use.
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| Error::format(path, "safetensors file", e))?;
        Ok(Self { path: path.to_path_buf(), mmap, header_len, metadata })
    }

    fn load(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.metadata.info(name) else { return Ok(None) };
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64) {
            return Err(Error::unsupported(
                format!("tensor `{name}` of dtype {:?} in `{}`", info.dtype, self.path.display()),
                "layerfold reads f32, f16 and bf16 safetensors (dequantize the checkpoint first)",
            ));
        }
        let start = 8 + self.header_len;
        let (a, b) = info.data_offsets;
        let view =
            TensorView::new(info.dtype, info.shape.clone(), &self.mmap[start + a..start + b])
                .map_err(|e| Error::format(&self.path, "safetensors file", e))?;
        Ok(Some(view.load(&candle_core::Device::Cpu)?))
    }
}

/// The weights of a checkpoint folder, one file or sharded.
pub struct SafetensorsWeights {
    dir: PathBuf,
    files: Vec<MappedFile>,
    /// Tensor name → index into `files`.
    index: HashMap<String, usize>,
}

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl SafetensorsWeights {
    pub fn open(dir: &Path) -> Result<Self> {
        let single = dir.join(SINGLE_FILE);
        let index_path = dir.join(INDEX_FILE);
        let mut files = Vec::new();
        let mut index = HashMap::new();
        if index_path.exists() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let shard_index: ShardIndex = serde_json::from_str(&text)
                .map_err(|e| Error::format(&index_path, "safetensors index", e))?;
            let mut shard_of: HashMap<String, usize> = HashMap::new();
            let mut names: Vec<_> = shard_index.weight_map.into_iter().collect();
            names.sort();
            for (tensor, shard) in names {
                let i = match shard_of.get(&shard) {
                    Some(&i) => i,
                    None => {
                        if !is_plain_relative(&shard) {
                            return Err(Error::format(
                                &index_path,
                                "safetensors index",
                                format!(
                                    "it names the shard `{shard}` for `{tensor}`, which is not a \
                                     file inside the model folder"
                                ),
                            ));
                        }
                        let path = dir.join(&shard);
                        if !path.exists() {
                            return Err(Error::NotFound {
                                what: "shard",
                                path,
                                hint: format!(
                                    "`{INDEX_FILE}` lists it; the download is incomplete"
                                ),
                            });
                        }
                        files.push(MappedFile::open(&path)?);
                        shard_of.insert(shard, files.len() - 1);
                        files.len() - 1
                    }
                };
                index.insert(tensor, i);
            }
        } else if single.exists() {
            let file = MappedFile::open(&single)?;
            for name in file.metadata.tensors().keys() {
                index.insert(name.clone(), 0);
            }
            files.push(file);
        } else if dir.join("pytorch_model.bin").exists() {
            return Err(Error::unsupported(
                format!("the PyTorch pickle checkpoint in `{}`", dir.display()),
                "convert it to safetensors first (transformers: save_pretrained(..., safe_serialization=True))",
            ));
        } else {
            return Err(Error::NotFound {
                what: "weights file",
                path: single,
                hint: format!("the folder holds neither `{SINGLE_FILE}` nor `{INDEX_FILE}`"),
            });
        }
        Ok(Self { dir: dir.to_path_buf(), files, index })
    }
}

impl SafetensorsWeights {
    /// The tensor names the checkpoint lists, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.index.keys().cloned().collect();
        names.sort();
        names
    }
}

impl WeightSource for SafetensorsWeights {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn layer_count(&self) -> usize {
        let highest = self.index.keys().filter_map(|n| layer_index(n, "model.layers.")).max();
        highest.map_or(0, |i| i.saturating_add(1))
    }

    fn total_elements(&self) -> u64 {
        let elements = |(name, &i): (&String, &usize)| {
            let info = self.files[i].metadata.info(name)?;
            Some(info.shape.iter().map(|&d| d as u64).product::<u64>())
        };
        self.index.iter().filter_map(elements).fold(0u64, u64::saturating_add)
    }

    fn load(&self, name: &str) -> Result<Option<Tensor>> {
        match self.index.get(name) {
            None => Ok(None),
            Some(&i) => {
                let file = &self.files[i];
                file.load(name)?.map(Some).ok_or_else(|| Error::MissingTensor {
                    path: file.path.clone(),
                    name: name.to_string(),
                })
            }
        }
    }
}

/// True when `name` is a relative path that stays inside the folder it is joined to: no root, no
/// drive, no `..`. (Symbolic links inside the folder are allowed: the Hugging Face cache is made of
/// them.)
fn is_plain_relative(name: &str) -> bool {
    use std::path::Component;
    !name.is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_stay_inside_the_folder() {
        assert!(is_plain_relative("model-00001-of-00002.safetensors"));
        assert!(is_plain_relative("./sub/model.safetensors"));
        for bad in ["", "/etc/passwd", "../../etc/passwd", "a/../../b", "sub/.."] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
