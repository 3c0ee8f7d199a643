//! Resumable distillation: every N steps the trained tensors (weights or adapters), AdamW's
//! moments and the run's position (step, data cursor, tokens, loss curve) go into one safetensors
//! file, written beside its final name and renamed over it, so the folder always holds a whole
//! checkpoint or the one before. The window order and the adapters' initial values come from the
//! seed, so these are all the state a run has: a resumed run repeats an uninterrupted one bit for
//! bit on the CPU.
//!
//! A checkpoint names its run (options, student, teacher, training windows); resuming a different
//! run from it is refused, naming what differs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::optim::AdamW;
use super::StepLog;
use crate::error::{Error, Result};
use crate::model::save::LazyTensor;
use crate::output::OutputTarget;

/// The checkpoint's name in its folder.
pub const CHECKPOINT_FILE: &str = "distill-checkpoint.safetensors";
/// Where a checkpoint is written before it is renamed into place.
const PARTIAL_FILE: &str = "distill-checkpoint.safetensors.partial";
const FORMAT: &str = "layerfold-distill-checkpoint/1";

/// Where and how often a run saves its state.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpointing {
    pub dir: PathBuf,
    /// Steps between checkpoints.
    pub every: usize,
    /// Continue from the folder's checkpoint if it has one (else start from step 0).
    pub resume: bool,
}

/// What identifies a run: a checkpoint resumes only the run that wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunIdentity {
    pub options: serde_json::Value,
    pub student: serde_json::Value,
    pub teacher: serde_json::Value,
    /// SHA-256 of the training windows' tokens.
    pub windows: String,
}

impl RunIdentity {
    pub fn new(
        options: serde_json::Value,
        student: serde_json::Value,
        teacher: serde_json::Value,
        windows: &[Vec<u32>],
    ) -> Self {
        let mut hash = Sha256::new();
        for w in windows {
            hash.update((w.len() as u64).to_le_bytes());
            for t in w {
                hash.update(t.to_le_bytes());
            }
        }
        Self { options, student, teacher, windows: hex(hash) }
    }

    /// The first part in which `self` (the checkpoint's run) and `other` differ.
    fn difference(&self, other: &RunIdentity) -> Option<&'static str> {
        [
            ("the options", self.options == other.options),
            ("the student (its path or merge record)", self.student == other.student),
            ("the teacher", self.teacher == other.teacher),
            ("the training text", self.windows == other.windows),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(what, _)| what)
    }
}

/// SHA-256 of named tensors' values (as f32), hex.
pub fn digest(tensors: &[(String, candle_core::Var)]) -> Result<String> {
    let mut hash = Sha256::new();
    for (name, t) in tensors {
        hash.update(name.as_bytes());
        let values: Vec<f32> =
            t.as_tensor().flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1()?;
        for v in values {
            hash.update(v.to_le_bytes());
        }
    }
    Ok(hex(hash))
}

fn hex(hash: Sha256) -> String {
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A run's position after `step` optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub step: usize,
    /// The next window's index in the shuffled order.
    pub cursor: usize,
    pub tokens: usize,
    pub curve: Vec<StepLog>,
}

impl Checkpointing {
    /// Checks the folder before the run (it may not be or hold an input) and returns the
    /// checkpoint to resume from, if any. Without `resume`, a folder that already holds a
    /// checkpoint is refused rather than overwritten.
    pub fn open(&self, inputs: &[PathBuf], run: &RunIdentity) -> Result<Option<Saved>> {
        OutputTarget::check(&self.dir, inputs, true)?;
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        self.check_fresh()?;
        let path = self.dir.join(CHECKPOINT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let (saved_run, _) = read_header(&path)?;
        if let Some(what) = saved_run.difference(run) {
            return Err(Error::config(
                "checkpointDir",
                format!(
                    "`{}` holds a checkpoint of another run ({what} differ): resume with the \
                     same arguments, or choose an empty folder",
                    self.dir.display()
                ),
            ));
        }
        Ok(Some(Saved::read(&path)?))
    }

    /// Refuses a folder that already holds a checkpoint when not resuming, reading only the
    /// file's header.
    pub fn check_fresh(&self) -> Result<()> {
        let path = self.dir.join(CHECKPOINT_FILE);
        if self.resume || !path.exists() {
            return Ok(());
        }
        let step = read_header(&path).ok().map(|(_, p)| p.step);
        Err(Error::OutputExists {
            path: self.dir.clone(),
            hint: format!(
                "it holds a distillation checkpoint{}: resume it (--resume) or choose an empty \
                 folder",
                step.map(|s| format!(" at step {s}")).unwrap_or_default()
            ),
        })
    }

    /// Writes the state after `position.step` steps. On failure the previous checkpoint stays.
    pub fn save(
        &self,
        run: &RunIdentity,
        position: &Position,
        names: &[String],
        opt: &AdamW,
    ) -> Result<()> {
        let (partial, path) = (self.dir.join(PARTIAL_FILE), self.dir.join(CHECKPOINT_FILE));
        let mut tensors: Vec<(String, &Tensor)> = Vec::with_capacity(3 * names.len());
        for (i, name) in names.iter().enumerate() {
            tensors.push((format!("var.{name}"), opt.vars[i].as_tensor()));
            tensors.push((format!("adam.m.{name}"), &opt.first[i]));
            tensors.push((format!("adam.v.{name}"), &opt.second[i]));
        }
        let metadata: HashMap<String, String> = [
            ("format".to_string(), FORMAT.to_string()),
            ("run".to_string(), serde_json::to_string(run).expect("JSON values serialise")),
            ("position".to_string(), serde_json::to_string(position).expect("serialisable")),
        ]
        .into();
        let written = write_safetensors(&partial, &tensors, metadata)
            .and_then(|()| std::fs::rename(&partial, &path).map_err(|e| Error::io(&path, e)));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&self.dir, e))
    }
}

/// Writes `tensors` (in their own dtypes) and `metadata` as one safetensors file at `path`, the
/// header made by the safetensors crate, the data streamed one tensor at a time (the crate's own
/// file writer stages into a temporary name of its choosing; this one writes where it is told, so
/// that the caller's rename is the only step that publishes).
fn write_safetensors(
    path: &Path,
    tensors: &[(String, &Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    use safetensors::View;
    use std::io::Write;
    let error = std::sync::Mutex::new(None);
    let views: Vec<LazyTensor> =
        tensors.iter().map(|(_, t)| LazyTensor::exact(t, &error)).collect();
    let mut offset = 0;
    let infos = tensors
        .iter()
        .zip(&views)
        .map(|((name, _), v)| {
            let info = safetensors::tensor::TensorInfo {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data_offsets: (offset, offset + v.data_len()),
            };
            offset += v.data_len();
            (name.clone(), info)
        })
        .collect();
    let header = safetensors::tensor::Metadata::new(Some(metadata), infos)
        .map_err(|e| Error::Internal(format!("checkpoint header: {e}")))?;
    let mut header = serde_json::to_vec(&header).expect("a safetensors header serialises");
    header.resize(header.len().next_multiple_of(8), b' ');
    let io = |e| Error::io(path, e);
    let mut f =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).map_err(io)?);
    f.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    f.write_all(&header).map_err(io)?;
    for v in &views {
        f.write_all(&v.data()).map_err(io)?;
        if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
            return Err(e);
        }
    }
    f.into_inner().map_err(|e| io(e.into_error()))?.sync_all().map_err(io)
}

fn bad_checkpoint(path: &Path, reason: String) -> Error {
    Error::ModelFormat {
        path: path.to_path_buf(),
        format: "layerfold distillation checkpoint",
        reason,
    }
}

/// The run and position a checkpoint names, from its header alone.
fn read_header(path: &Path) -> Result<(RunIdentity, Position)> {
    use std::io::Read;
    let bad = |reason: String| bad_checkpoint(path, reason);
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|_| bad("it is shorter than a safetensors header".into()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        return Err(bad(format!("its header claims {len} bytes")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|_| bad("its header is cut short".into()))?;
    let doc: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    metadata_of(&doc["__metadata__"], path)
}

/// The run and position from a checkpoint's safetensors metadata.
fn metadata_of(meta: &serde_json::Value, path: &Path) -> Result<(RunIdentity, Position)> {
    let bad = |reason: String| bad_checkpoint(path, reason);
    if meta["format"].as_str() != Some(FORMAT) {
        return Err(bad(format!("its format is not {FORMAT}")));
    }
    let field = |key: &str| meta[key].as_str().ok_or_else(|| bad(format!("no `{key}` entry")));
    let run = serde_json::from_str(field("run")?).map_err(|e| bad(e.to_string()))?;
    let position = serde_json::from_str(field("position")?).map_err(|e| bad(e.to_string()))?;
    Ok((run, position))
}

/// A checkpoint as read back.
pub struct Saved {
    pub run: RunIdentity,
    pub position: Position,
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
}

impl Saved {
    fn read(path: &Path) -> Result<Self> {
        let bad = |reason: String| bad_checkpoint(path, reason);
        let (run, position) = read_header(path)?;
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &candle_core::Device::Cpu)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { run, position, tensors, path: path.to_path_buf() })
    }

    /// Puts the saved tensors and moments into `opt` (its variables named by `names`), which has
    /// taken `steps` of them in this phase.
    pub fn restore(&self, names: &[String], opt: &mut AdamW, steps: usize) -> Result<()> {
        let get = |key: String, like: &Tensor| -> Result<Tensor> {
            let t = self.tensors.get(&key).ok_or_else(|| Error::ModelFormat {
                path: self.path.clone(),
                format: "layerfold distillation checkpoint",
                reason: format!("tensor `{key}` is missing"),
            })?;
            if t.dims() != like.dims() || t.dtype() != like.dtype() {
                return Err(Error::Internal(format!("checkpoint tensor `{key}` does not fit")));
            }
            Ok(t.to_device(like.device())?)
        };
        for (i, name) in names.iter().enumerate() {
            let var = &opt.vars[i];
            var.set(&get(format!("var.{name}"), var.as_tensor())?)?;
            opt.first[i] = get(format!("adam.m.{name}"), &opt.first[i])?;
            opt.second[i] = get(format!("adam.v.{name}"), &opt.second[i])?;
        }
        opt.step = steps;
        Ok(())
    }
}
