//! Merge rules for collapsing a window of adjacent layers into its first slot (LaCo, SLM;
//! METHODS.md §3.2, §3.3). They apply to the seven linear weights and their biases; the norms
//! (`input_layernorm`, `post_attention_layernorm`, Qwen3's `q_norm`/`k_norm`) of the first layer
//! are kept.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::decoder::{Attention, DecoderLayer, Linear, Mlp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MergeRule {
    /// The paper's RDSC: `θ*_l = θ_l + Σ_{k=1..m} (θ_{l+k} − θ_l)`.
    Rdsc,
    /// The authors' released code: the window's top layer's linears, the first layer's norms.
    #[default]
    Top,
    /// **(ours)** the mean of the window's linears, the first layer's norms.
    Mean,
}

/// Combines the same tensor of every layer of the window (in order) by `rule`, in f32.
fn combine(rule: MergeRule, ts: &[&Tensor]) -> Result<Tensor> {
    let dtype = ts[0].dtype();
    if ts.iter().any(|t| t.dims() != ts[0].dims()) {
        return Err(Error::unsupported(
            "merging layers of different widths",
            "LaCo and SLM merge layers of the standard shape",
        ));
    }
    let f32s = || ts.iter().map(|t| t.to_dtype(DType::F32));
    let out = match rule {
        MergeRule::Top => return Ok(ts[ts.len() - 1].clone()),
        MergeRule::Rdsc => {
            let base = ts[0].to_dtype(DType::F32)?;
            let mut acc = base.clone();
            for t in f32s().skip(1) {
                acc = (acc + (t? - &base)?)?;
            }
            acc
        }
        MergeRule::Mean => {
            let mut acc = ts[0].to_dtype(DType::F32)?;
            for t in f32s().skip(1) {
                acc = (acc + t?)?;
            }
            (acc / ts.len() as f64)?
        }
    };
    Ok(out.to_dtype(dtype)?)
}

fn combine_linear(rule: MergeRule, ls: &[&Linear]) -> Result<Linear> {
    let weights: Vec<&Tensor> = ls.iter().map(|l| &l.weight).collect();
    let bias = match ls[0].bias {
        Some(_) => {
            let biases: Vec<&Tensor> = ls.iter().filter_map(|l| l.bias.as_ref()).collect();
            Some(combine(rule, &biases)?)
        }
        None => None,
    };
    Ok(Linear::new(combine(rule, &weights)?, bias))
}

/// The window `layers` (in order, at least one) collapsed into one layer by `rule`.
pub fn collapse<L: std::ops::Deref<Target = DecoderLayer>>(
    rule: MergeRule,
    layers: &[L],
) -> Result<DecoderLayer> {
    let first = &*layers[0];
    let pick = |f: fn(&DecoderLayer) -> &Linear| -> Result<Linear> {
        combine_linear(rule, &layers.iter().map(|l| f(l)).collect::<Vec<_>>())
    };
    Ok(DecoderLayer {
        self_attn: Attention {
            q_proj: pick(|l| &l.self_attn.q_proj)?,
            k_proj: pick(|l| &l.self_attn.k_proj)?,
            v_proj: pick(|l| &l.self_attn.v_proj)?,
            o_proj: pick(|l| &l.self_attn.o_proj)?,
            q_norm: first.self_attn.q_norm.clone(),
            k_norm: first.self_attn.k_norm.clone(),
            head_dim: first.self_attn.head_dim,
        },
        mlp: Mlp {
            gate_proj: pick(|l| &l.mlp.gate_proj)?,
            up_proj: pick(|l| &l.mlp.up_proj)?,
            down_proj: pick(|l| &l.mlp.down_proj)?,
        },
        input_layernorm: first.input_layernorm.clone(),
        post_attention_layernorm: first.post_attention_layernorm.clone(),
    })
}
