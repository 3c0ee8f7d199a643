//! Layer-at-a-time execution for models larger than memory (`stream`): the checkpoint stays
//! memory-mapped and each decoder layer is built from it (converted to the model's dtype and
//! device) only while a pass runs it, so the resident weights are the embeddings, the final norm,
//! the LM head, the layers a method has made, and the one layer in use. Passes over many batches
//! then run layer by layer over all of them ([`crate::model::decoder::CausalLm::forward_runs`]),
//! so each layer is read once per pass, as SparseGPT-style pipelines do.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::methods::concat::HeadShape;
use crate::model::config::Config;
use crate::model::decoder::DecoderLayer;
use crate::model::save::{LazyTensor, SavedTensor};
use crate::model::weights::{Builder, WeightSource};

/// The checkpoint a streamed model's layers are read from.
pub struct LayerStore {
    pub(crate) src: Box<dyn WeightSource + Send + Sync>,
    pub(crate) config: Config,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    /// The temporary folder of a layer a method made ([`LayerSlot::spilled`]), removed with the
    /// last slot that reads it.
    pub(crate) _spill: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LayerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStore").field("path", &self.src.path()).finish()
    }
}

impl LayerStore {
    fn builder(&self) -> Builder<'_> {
        Builder { src: self.src.as_ref(), dtype: self.dtype, device: &self.device }
    }

    /// Layer `index` of the checkpoint, built as a full load builds it (same checks, same bits).
    pub(crate) fn layer(&self, index: usize) -> Result<DecoderLayer> {
        self.builder().layer(&self.config, index)
    }
}

/// One tensor of a mapped layer: its name relative to `model.layers.{i}.`, shape and size.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorShape {
    pub name: String,
    pub shape: Vec<usize>,
}

/// A decoder layer in memory, or layer `index` of a checkpoint read each time it is used.
#[derive(Debug, Clone)]
pub enum LayerSlot {
    Resident(Box<DecoderLayer>),
    Mapped { store: Arc<LayerStore>, index: usize, shapes: Arc<Vec<TensorShape>> },
}

impl From<DecoderLayer> for LayerSlot {
    fn from(layer: DecoderLayer) -> Self {
        Self::Resident(Box::new(layer))
    }
}

impl LayerSlot {
    /// A mapped layer whose tensors were checked once (shapes, finiteness) by building it.
    pub(crate) fn mapped(store: &Arc<LayerStore>, index: usize) -> Result<Self> {
        let layer = store.layer(index)?;
        let shapes = layer
            .named_tensors()
            .into_iter()
            .map(|(name, t)| TensorShape { name, shape: t.dims().to_vec() })
            .collect();
        Ok(Self::Mapped { store: store.clone(), index, shapes: Arc::new(shapes) })
    }

    /// `layer` (one a method made from layers of `like`'s model) written to a safetensors file
    /// of its own and read from there like the checkpoint's layers ([`Self::made`]).
    pub(crate) fn spilled(layer: &DecoderLayer, like: &LayerStore) -> Result<Self> {
        let named = layer.named_tensors();
        let shapes = named
            .iter()
            .map(|(name, t)| TensorShape { name: name.clone(), shape: t.dims().to_vec() })
            .collect();
        let make = |name: &str| -> Result<Tensor> {
            let found = named.iter().find(|(n, _)| n == name).map(|(_, t)| (*t).clone());
            found.ok_or_else(|| Error::Internal(format!("layer has no tensor `{name}`")))
        };
        Self::made(shapes, layer.self_attn.head_dim, &make, like)
    }

    /// A layer made tensor by tensor (`make(name)` for each of `shapes`, in order) and written
    /// to a safetensors file of its own in a fresh temporary folder (`$TMPDIR`) as it is made,
    /// then read from there like the checkpoint's layers: a streamed model's made layers never
    /// sit whole in memory. The file holds the model's dtype, so reading back gives the same bits.
    pub(crate) fn made(
        shapes: Vec<TensorShape>,
        head_dim: usize,
        make: &dyn Fn(&str) -> Result<Tensor>,
        like: &LayerStore,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("layerfold-layer-")
            .tempdir()
            .map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let file = dir.path().join(crate::model::safetensors::SINGLE_FILE);
        let error = std::sync::Mutex::new(None);
        let rows = |name: &str| {
            shapes.iter().find(|t| t.name == name).map(|t| t.shape[0]).unwrap_or_default()
        };
        // The made layer's own widths (a merge may change them), the model's other settings.
        let config = Config {
            num_hidden_layers: 1,
            intermediate_size: rows("mlp.gate_proj.weight"),
            num_attention_heads: rows("self_attn.q_proj.weight") / head_dim,
            num_key_value_heads: rows("self_attn.k_proj.weight") / head_dim,
            head_dim,
            ..like.config.clone()
        };
        let views = shapes.into_iter().map(|t| {
            let name = format!("model.layers.0.{}", t.name);
            let made = SavedTensor::Made { name: t.name, shape: t.shape, make };
            (name, LazyTensor::new(made, like.dtype, &error))
        });
        safetensors::serialize_to_file(views, None, &file).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(io) => Error::io(&file, io),
            other => Error::Internal(format!("writing `{}`: {other}", file.display())),
        })?;
        if let Some(e) = error.into_inner().ok().flatten() {
            return Err(e);
        }
        let src = crate::model::safetensors::SafetensorsWeights::open(dir.path())?;
        let store = Arc::new(LayerStore {
            src: Box::new(src),
            config,
            dtype: like.dtype,
            device: like.device.clone(),
            _spill: Some(dir),
        });
        Self::mapped(&store, 0)
    }

    /// The layer's head counts, without reading weights.
    pub fn head_shape(&self) -> HeadShape {
        match self {
            Self::Resident(layer) => HeadShape::of(layer),
            Self::Mapped { store, .. } => HeadShape {
                heads: store.config.num_attention_heads,
                kv_heads: store.config.num_key_value_heads,
                head_dim: store.config.head_dim,
            },
        }
    }

    /// The checkpoint a mapped layer is read from.
    pub(crate) fn store(&self) -> Option<&Arc<LayerStore>> {
        match self {
            Self::Resident(_) => None,
            Self::Mapped { store, .. } => Some(store),
        }
    }

    /// The layer: borrowed when resident, built from the checkpoint when mapped (dropped by the
    /// caller after use).
    pub fn get(&self) -> Result<Cow<'_, DecoderLayer>> {
        match self {
            Self::Resident(layer) => Ok(Cow::Borrowed(layer)),
            Self::Mapped { store, index, .. } => Ok(Cow::Owned(store.layer(*index)?)),
        }
    }

    /// The layer when it is in memory.
    pub fn resident(&self) -> Option<&DecoderLayer> {
        match self {
            Self::Resident(layer) => Some(layer),
            Self::Mapped { .. } => None,
        }
    }

    pub fn is_mapped(&self) -> bool {
        matches!(self, Self::Mapped { .. })
    }

    /// Every tensor's name (relative to `model.layers.{i}.`) and shape, without reading weights.
    pub fn shapes(&self) -> Vec<TensorShape> {
        match self {
            Self::Resident(layer) => layer
                .named_tensors()
                .into_iter()
                .map(|(name, t)| TensorShape { name, shape: t.dims().to_vec() })
                .collect(),
            Self::Mapped { shapes, .. } => shapes.as_ref().clone(),
        }
    }

    /// The layer's parameter count, without reading weights.
    pub fn parameters(&self) -> usize {
        self.shapes().iter().map(|t| t.shape.iter().product::<usize>()).sum()
    }

    /// One tensor of the layer (`name` relative to `model.layers.{i}.`) in the model's dtype:
    /// a mapped layer reads only that tensor.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        match self {
            Self::Resident(layer) => layer
                .named_tensors()
                .into_iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| Error::Internal(format!("layer has no tensor `{name}`"))),
            Self::Mapped { store, index, shapes } => {
                let shape = shapes
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or_else(|| Error::Internal(format!("layer has no tensor `{name}`")))?;
                store.builder().required(&format!("model.layers.{index}.{name}"), &shape.shape)
            }
        }
    }

    /// What identifies the layer's weights: its tensors, or its place in a checkpoint.
    pub(crate) fn weight_ids(&self) -> Vec<WeightId> {
        match self {
            Self::Resident(layer) => {
                layer.named_tensors().into_iter().map(|(_, t)| WeightId::Tensor(t.id())).collect()
            }
            Self::Mapped { store, index, .. } => {
                vec![WeightId::Mapped(Arc::as_ptr(store) as usize, *index)]
            }
        }
    }
}

/// The identity of a weight, for telling whether two models share their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightId {
    Tensor(candle_core::TensorId),
    Mapped(usize, usize),
}
