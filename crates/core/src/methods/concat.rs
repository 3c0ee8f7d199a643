//! CoMe's concatenation merge of two adjacent layers `a`, `b = a + 1` into one layer of the
//! standard shape (METHODS.md §3.4): each layer keeps its most sensitive FFN channels and KV groups
//! within a budget, and the kept rows/columns of both are concatenated, `a`'s first. The merged
//! layer runs both layers' attention on a shared normalised input, then both FFNs on the result,
//! each restricted to its kept channels.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::decoder::{Attention, DecoderLayer, Linear, Mlp, RmsNorm};

/// How query heads follow their KV groups in the merged attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GqaLayout {
    /// **(ours)** query head `q` keeps reading the KV head it read before: the `G` query heads of
    /// each kept KV group follow it, in the same group order (HF: head `q` reads `q / G`).
    #[default]
    Grouped,
    /// The released code: the KV mask is tiled across query heads (`mask_q[h] = mask_kv[h mod n_kv]`),
    /// exact only when `G = 1`.
    Tiled,
}

/// What to keep of each layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MergePlan {
    /// `r_a`; `r_b = 1 − r_a`.
    pub ratio: f64,
    /// Kept FFN channels of `a` and `b`, in index order.
    pub ffn_a: Vec<usize>,
    pub ffn_b: Vec<usize>,
    /// Kept KV groups of `a` and `b`, in index order.
    pub kv_a: Vec<usize>,
    pub kv_b: Vec<usize>,
}

/// `(n_a, n_b)` with `n_a + n_b = width`: the layer with the smaller ratio keeps `floor(width·r)`,
/// the other the remainder; on a tie the first layer gets the remainder (METHODS.md §3.4).
pub fn budgets(width: usize, ratio_a: f64) -> (usize, usize) {
    let ratio_b = 1.0 - ratio_a;
    // `N·r` is meant exactly: CoMe-P's grid ratios (`k/g`) and `1 − r_a` land a hair below an
    // integer in floating point (5 · (1 − 0.8) = 0.999…), which a bare floor turns into one channel
    // or KV group too few.
    let floor = |r: f64| (width as f64 * r + 1e-9).floor() as usize;
    if ratio_a < ratio_b {
        let n_a = floor(ratio_a);
        (n_a, width - n_a)
    } else {
        let n_b = floor(ratio_b);
        (width - n_b, n_b)
    }
}

/// Indices of the `n` largest scores (ties: the lower index), in index order.
pub fn top_n(scores: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]).then(i.cmp(&j)));
    let mut keep = order[..n.min(scores.len())].to_vec();
    keep.sort_unstable();
    keep
}

/// The plan for ratio `r_a` (METHODS.md §3.4: the same ratios serve both widths).
pub fn plan(ratio: f64, ffn_a: &[f32], ffn_b: &[f32], kv_a: &[f32], kv_b: &[f32]) -> MergePlan {
    let (fa, fb) = budgets(ffn_a.len(), ratio);
    let (ka, kb) = budgets(kv_a.len(), ratio);
    MergePlan {
        ratio,
        ffn_a: top_n(ffn_a, fa),
        ffn_b: top_n(ffn_b, fb),
        kv_a: top_n(kv_a, ka),
        kv_b: top_n(kv_b, kb),
    }
}

/// Which of `a`'s and `b`'s rows (columns) go into a merged matrix.
#[derive(Clone, Copy)]
enum Axis {
    Rows,
    Cols,
}

/// The kept rows (columns) `keep_a` of `a`, then `keep_b` of `b`, in one concat op (the kernels'
/// concatenated-layer construction: one launch per matrix on a GPU).
fn concat(
    axis: Axis,
    a: &Tensor,
    b: &Tensor,
    keep_a: &[usize],
    keep_b: &[usize],
) -> Result<Tensor> {
    let offset = match axis {
        Axis::Rows => a.dim(0)?,
        Axis::Cols => a.dim(1)?,
    };
    let idx: Vec<u32> = keep_a
        .iter()
        .map(|&i| i as u32)
        .chain(keep_b.iter().map(|&i| (offset + i) as u32))
        .collect();
    Ok(match axis {
        Axis::Rows => layerfold_kernels::concat_rows(a, b, &idx)?,
        Axis::Cols => layerfold_kernels::concat_cols(a, b, &idx)?,
    })
}

/// Rows of `head_dim`-sized heads `heads`.
fn head_rows(heads: &[usize], head_dim: usize) -> Vec<usize> {
    heads.iter().flat_map(|&h| h * head_dim..(h + 1) * head_dim).collect()
}

/// `r_a·x_a + r_b·x_b` in f32, back in `x_a`'s dtype.
fn weighted(x_a: &Tensor, x_b: &Tensor, r_a: f64) -> Result<Tensor> {
    let dtype = x_a.dtype();
    let a = (x_a.to_dtype(DType::F32)? * r_a)?;
    let b = (x_b.to_dtype(DType::F32)? * (1.0 - r_a))?;
    Ok((a + b)?.to_dtype(dtype)?)
}

fn mean_norm(a: &RmsNorm, b: &RmsNorm) -> Result<RmsNorm> {
    Ok(RmsNorm { weight: weighted(&a.weight, &b.weight, 0.5)?, eps: a.eps })
}

/// Query heads kept for kept KV groups `kv` of a layer with `n_q` query and `n_kv` KV heads.
pub fn kept_query_heads(kv: &[usize], n_q: usize, n_kv: usize, layout: GqaLayout) -> Vec<usize> {
    let g = n_q / n_kv;
    match layout {
        GqaLayout::Grouped => kv.iter().flat_map(|&k| k * g..(k + 1) * g).collect(),
        GqaLayout::Tiled => (0..n_q).filter(|h| kv.contains(&(h % n_kv))).collect(),
    }
}

/// Rows `keep_a` of `la` then `keep_b` of `lb` along their outputs (weights and biases).
fn stack(la: &Linear, lb: &Linear, keep_a: &[usize], keep_b: &[usize]) -> Result<Linear> {
    let bias = match (&la.bias, &lb.bias) {
        (Some(x), Some(y)) => Some(concat(Axis::Rows, x, y, keep_a, keep_b)?),
        _ => None,
    };
    Ok(Linear::new(concat(Axis::Rows, &la.weight, &lb.weight, keep_a, keep_b)?, bias))
}

/// The merged layer of `a` then `b` under `plan`.
pub fn concat_layers(
    a: &DecoderLayer,
    b: &DecoderLayer,
    plan: &MergePlan,
    layout: GqaLayout,
) -> Result<DecoderLayer> {
    let (aa, ab) = (&a.self_attn, &b.self_attn);
    let dh = aa.head_dim;
    if ab.head_dim != dh || aa.num_heads() / aa.num_kv_heads() != ab.num_heads() / ab.num_kv_heads()
    {
        return Err(Error::unsupported(
            "merging layers with different head shapes",
            "CoMe merges layers of one model",
        ));
    }
    let r = plan.ratio;
    let q_a = kept_query_heads(&plan.kv_a, aa.num_heads(), aa.num_kv_heads(), layout);
    let q_b = kept_query_heads(&plan.kv_b, ab.num_heads(), ab.num_kv_heads(), layout);
    let (qa, qb) = (head_rows(&q_a, dh), head_rows(&q_b, dh));
    let (kva, kvb) = (head_rows(&plan.kv_a, dh), head_rows(&plan.kv_b, dh));
    let q_proj = stack(&aa.q_proj, &ab.q_proj, &qa, &qb)?;
    let k_proj = stack(&aa.k_proj, &ab.k_proj, &kva, &kvb)?;
    let v_proj = stack(&aa.v_proj, &ab.v_proj, &kva, &kvb)?;
    let o_proj = Linear::new(
        concat(Axis::Cols, &aa.o_proj.weight, &ab.o_proj.weight, &qa, &qb)?,
        match (&aa.o_proj.bias, &ab.o_proj.bias) {
            (Some(x), Some(y)) => Some(weighted(x, y, r)?),
            _ => None,
        },
    );
    let head_norm = |x: &Option<RmsNorm>, y: &Option<RmsNorm>| -> Result<Option<RmsNorm>> {
        match (x, y) {
            (Some(x), Some(y)) => {
                Ok(Some(RmsNorm { weight: weighted(&x.weight, &y.weight, r)?, eps: x.eps }))
            }
            _ => Ok(None),
        }
    };
    let (ma, mb) = (&a.mlp, &b.mlp);
    let down = Linear::new(
        concat(Axis::Cols, &ma.down_proj.weight, &mb.down_proj.weight, &plan.ffn_a, &plan.ffn_b)?,
        match (&ma.down_proj.bias, &mb.down_proj.bias) {
            (Some(x), Some(y)) => Some(weighted(x, y, r)?),
            _ => None,
        },
    );
    Ok(DecoderLayer {
        self_attn: Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            q_norm: head_norm(&aa.q_norm, &ab.q_norm)?,
            k_norm: head_norm(&aa.k_norm, &ab.k_norm)?,
            head_dim: dh,
        },
        mlp: Mlp {
            gate_proj: stack(&ma.gate_proj, &mb.gate_proj, &plan.ffn_a, &plan.ffn_b)?,
            up_proj: stack(&ma.up_proj, &mb.up_proj, &plan.ffn_a, &plan.ffn_b)?,
            down_proj: down,
        },
        input_layernorm: mean_norm(&a.input_layernorm, &b.input_layernorm)?,
        post_attention_layernorm: mean_norm(
            &a.post_attention_layernorm,
            &b.post_attention_layernorm,
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_follow_the_smaller_ratio() {
        assert_eq!(budgets(10, 0.26), (2, 8));
        assert_eq!(budgets(10, 0.74), (8, 2));
        // A tie: the first layer gets the remainder.
        assert_eq!(budgets(9, 0.5), (5, 4));
        assert_eq!(budgets(3, 0.0), (0, 3));
        assert_eq!(budgets(3, 1.0), (3, 0));
        // Grid ratios are exact: 1 − 0.8 is 0.19999999999999996 in f64.
        assert_eq!(budgets(5, 0.8), (4, 1));
        assert_eq!(budgets(10, 0.9), (9, 1));
        assert_eq!(budgets(2560, 0.55), (1408, 1152));
        for g in [10usize, 20, 40] {
            for k in 0..=g {
                for width in [1usize, 3, 5, 10, 64, 1536, 2560] {
                    let small = width * k.min(g - k) / g;
                    let expected =
                        if 2 * k < g { (small, width - small) } else { (width - small, small) };
                    assert_eq!(
                        budgets(width, k as f64 / g as f64),
                        expected,
                        "width {width}, r = {k}/{g}"
                    );
                }
            }
        }
    }

    #[test]
    fn top_n_keeps_index_order_and_breaks_ties_low() {
        assert_eq!(top_n(&[0.1, 0.9, 0.5, 0.9, 0.0], 3), vec![1, 2, 3]);
        assert_eq!(top_n(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
    }

    #[test]
    fn query_heads_follow_their_kv_groups() {
        // SmolLM2: 9 query heads, 3 KV heads, G = 3. Keeping KV group 1 keeps query heads 3..6.
        assert_eq!(kept_query_heads(&[1], 9, 3, GqaLayout::Grouped), vec![3, 4, 5]);
        assert_eq!(kept_query_heads(&[0, 2], 9, 3, GqaLayout::Grouped), vec![0, 1, 2, 6, 7, 8]);
        // The released code tiles the mask: head h is kept when KV head h mod 3 is.
        assert_eq!(kept_query_heads(&[1], 9, 3, GqaLayout::Tiled), vec![1, 4, 7]);
        // With G = 1 the two agree.
        assert_eq!(
            kept_query_heads(&[0, 3], 4, 4, GqaLayout::Tiled),
            kept_query_heads(&[0, 3], 4, 4, GqaLayout::Grouped)
        );
    }
}
