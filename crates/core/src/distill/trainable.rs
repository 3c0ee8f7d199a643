//! Which tensors a distillation run trains, as fresh variables in a copy of the student: the model
//! it was given is never written into.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::decoder::{CausalLm, RmsNorm};
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
}

/// A copy of the student whose trained tensors are variables.
pub struct Student {
    pub lm: CausalLm,
    /// The variables with their HF names, in the model's order.
    pub vars: Vec<(String, Var)>,
}

impl Student {
    /// `lm` with the tensors `which` selects copied into variables; the others are shared.
    pub fn new(lm: &CausalLm, origins: &[Origin], which: Trainable) -> Result<Self> {
        let mut vars = Vec::new();
        let mut layers = Vec::with_capacity(lm.layers.len());
        for (i, (layer, origin)) in lm.layers.iter().zip(origins).enumerate() {
            let trains = match which {
                Trainable::All => true,
                Trainable::Merged => origin.is_merged(),
            };
            layers.push(if trains {
                layer.try_map_tensors(&mut |name, t| {
                    let var = Var::from_tensor(t)?;
                    let tensor = var.as_tensor().clone();
                    vars.push((format!("model.layers.{i}.{name}"), var));
                    Ok(tensor)
                })?
            } else {
                layer.clone()
            });
        }
        let norm = match which {
            Trainable::All => {
                let var = Var::from_tensor(&lm.norm.weight)?;
                let weight = var.as_tensor().clone();
                vars.push(("model.norm.weight".into(), var));
                RmsNorm { weight, eps: lm.norm.eps }
            }
            Trainable::Merged => lm.norm.clone(),
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
            .map(|l| {
                l.try_map_tensors(&mut |_, t| {
                    if t.is_variable() {
                        plain(t)
                    } else {
                        Ok(t.clone())
                    }
                })
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
