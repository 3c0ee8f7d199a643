//! Which tensors a distillation run trains, as fresh variables in a copy of the student: the model
//! it was given is never written into.

use candle_core::{Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::decoder::{CausalLm, Linear, Lora, RmsNorm};
use crate::model::origin::Origin;

/// What trains (METHODS.md §3.5). The embedding and the LM head (tied in most small models) stay
/// frozen in every setting **(ours)**: they are shared with the teacher, whose logits the
/// student learns to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(test, derive(ts_rs::TS), ts(export))]
pub enum Trainable {
    /// Every tensor of every layer, and the final norm.
    All,
    /// The tensors of the layers that came from more than one original layer.
    Merged,
    /// A rank-r adapter on each of the seven linears of every layer; the weights stay frozen and the
    /// adapters are merged into them when the run ends.
    Lora,
}

/// The adapters' shape, as PEFT's `r` and `lora_alpha`: the update is scaled by `alpha / rank`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoraOptions {
    pub rank: usize,
    pub alpha: f64,
}

impl Default for LoraOptions {
    /// **(ours)** r = 8, alpha = 16: PEFT's most used setting for healing pruned models.
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0 }
    }
}

/// A copy of the student whose trained tensors are variables.
pub struct Student {
    pub lm: CausalLm,
    /// The variables with their HF names, in the model's order.
    pub vars: Vec<(String, Var)>,
}

impl Student {
    /// `lm` with the tensors `which` selects copied into variables; the others are shared. `seed`
    /// draws the LoRA adapters' `A` (PEFT's init: uniform in ±1/√in; `B` starts at zero).
    pub fn new(
        lm: &CausalLm,
        origins: &[Origin],
        which: Trainable,
        lora: LoraOptions,
        seed: u64,
    ) -> Result<Self> {
        let mut vars = Vec::new();
        let mut layers = Vec::with_capacity(lm.layers.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (i, (layer, origin)) in lm.layers.iter().zip(origins).enumerate() {
            let mut var = |name: String, t: &Tensor| -> Result<Tensor> {
                let var = Var::from_tensor(t)?;
                let tensor = var.as_tensor().clone();
                vars.push((format!("model.layers.{i}.{name}"), var));
                Ok(tensor)
            };
            layers.push(match which {
                Trainable::All => {
                    layer.get()?.try_map_tensors(&mut |name, t| var(name.into(), t))?.into()
                }
                Trainable::Merged if origin.is_merged() => {
                    layer.get()?.try_map_tensors(&mut |name, t| var(name.into(), t))?.into()
                }
                // Frozen: shared as it is (a streamed layer stays in the checkpoint).
                Trainable::Merged => layer.clone(),
                Trainable::Lora => layer
                    .get()?
                    .try_map_linears(&mut |name, l| {
                        let (a, b) = adapter(l, lora.rank, &mut rng)?;
                        Ok(Linear {
                            lora: Some(Lora {
                                a: var(format!("{name}.lora_A.weight"), &a)?,
                                b: var(format!("{name}.lora_B.weight"), &b)?,
                                scale: lora.alpha / lora.rank as f64,
                            }),
                            ..l.clone()
                        })
                    })?
                    .into(),
            });
        }
        let norm = match which {
            Trainable::All => {
                let var = Var::from_tensor(&lm.norm.weight)?;
                let weight = var.as_tensor().clone();
                vars.push(("model.norm.weight".into(), var));
                RmsNorm { weight, eps: lm.norm.eps }
            }
            Trainable::Merged | Trainable::Lora => lm.norm.clone(),
        };
        Ok(Self { lm: CausalLm { layers, norm, ..lm.clone() }, vars })
    }

    /// The trained model as plain tensors (no variable stays shared with the optimizer).
    pub fn finish(&self) -> Result<CausalLm> {
        let lm = &self.lm;
        let plain = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().copy()?) };
        let layers = lm
            .layers
            .iter()
            .map(|slot| {
                // Layers that were not trained stay as they are (a streamed one unread).
                let Some(l) = slot.resident() else { return Ok(slot.clone()) };
                Ok(l.try_map_tensors(&mut |_, t| {
                    if t.is_variable() {
                        plain(t)
                    } else {
                        Ok(t.clone())
                    }
                })?
                .try_map_linears(&mut |_, l| l.merge_lora())?
                .into())
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm {
            weight: if lm.norm.weight.is_variable() {
                plain(&lm.norm.weight)?
            } else {
                lm.norm.weight.clone()
            },
            eps: lm.norm.eps,
        };
        Ok(CausalLm { layers, norm, ..lm.clone() })
    }
}

/// One linear's adapter pair, `A: [r, in]` drawn uniform in ±1/√in (PEFT's Kaiming-uniform with
/// a = √5) and `B: [out, r]` zero, in the weight's dtype.
fn adapter(l: &Linear, rank: usize, rng: &mut ChaCha8Rng) -> Result<(Tensor, Tensor)> {
    let (out, inp) = l.weight.dims2()?;
    if rank == 0 || rank > out.min(inp) {
        return Err(Error::config(
            "loraRank",
            format!(
                "must be between 1 and {} (the smallest linear is {out} × {inp})",
                out.min(inp)
            ),
        ));
    }
    let bound = 1.0 / (inp as f32).sqrt();
    let a: Vec<f32> = (0..rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
    let (device, dtype) = (l.weight.device(), l.weight.dtype());
    let a = Tensor::from_vec(a, (rank, inp), device)?.to_dtype(dtype)?;
    Ok((a, Tensor::zeros((out, rank), dtype, device)?))
}
