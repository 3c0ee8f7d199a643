//! CoMe's concatenation merge of two adjacent layers `a`, `b = a + 1` into one layer of the
//! standard shape (METHODS.md §3.4): each layer keeps its most sensitive FFN channels and KV groups
//! within a budget, and the kept rows/columns of both are concatenated, `a`'s first. The merged
//! layer runs both layers' attention on a shared normalised input, then both FFNs on the result,
//! each restricted to its kept channels.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::decoder::DecoderLayer;

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

/// Query heads kept for kept KV groups `kv` of a layer with `n_q` query and `n_kv` KV heads.
pub fn kept_query_heads(kv: &[usize], n_q: usize, n_kv: usize, layout: GqaLayout) -> Vec<usize> {
    let g = n_q / n_kv;
    match layout {
        GqaLayout::Grouped => kv.iter().flat_map(|&k| k * g..(k + 1) * g).collect(),
        GqaLayout::Tiled => (0..n_q).filter(|h| kv.contains(&(h % n_kv))).collect(),
    }
}

/// The head counts of a layer: what a merge plan needs besides the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl HeadShape {
    pub fn of(layer: &DecoderLayer) -> Self {
        let a = &layer.self_attn;
        Self { heads: a.num_heads(), kv_heads: a.num_kv_heads(), head_dim: a.head_dim }
    }
}

/// How one tensor of the merged layer is made from the same-named tensors of `a` and `b`.
enum Make {
    /// Rows `.0` of `[a; b]`.
    Rows(Vec<usize>, Vec<usize>),
    /// Columns of `[a | b]`.
    Cols(Vec<usize>, Vec<usize>),
    /// `r·a + (1 − r)·b`.
    Weighted(f64),
}

/// The merge of `a` then `b` under a plan, tensor by tensor: each merged tensor depends only on
/// the two same-named tensors, so a streamed model can make and write one at a time.
pub struct ConcatMerge {
    ratio: f64,
    q: (Vec<usize>, Vec<usize>),
    kv: (Vec<usize>, Vec<usize>),
    ffn: (Vec<usize>, Vec<usize>),
}

impl ConcatMerge {
    pub fn new(a: HeadShape, b: HeadShape, plan: &MergePlan, layout: GqaLayout) -> Result<Self> {
        let dh = a.head_dim;
        if b.head_dim != dh || a.heads / a.kv_heads != b.heads / b.kv_heads {
            return Err(Error::unsupported(
                "merging layers with different head shapes",
                "CoMe merges layers of one model",
            ));
        }
        let q_a = kept_query_heads(&plan.kv_a, a.heads, a.kv_heads, layout);
        let q_b = kept_query_heads(&plan.kv_b, b.heads, b.kv_heads, layout);
        Ok(Self {
            ratio: plan.ratio,
            q: (head_rows(&q_a, dh), head_rows(&q_b, dh)),
            kv: (head_rows(&plan.kv_a, dh), head_rows(&plan.kv_b, dh)),
            ffn: (plan.ffn_a.clone(), plan.ffn_b.clone()),
        })
    }

    /// How tensor `name` (relative to `model.layers.{i}.`) is made.
    fn make(&self, name: &str) -> Result<Make> {
        let rows = |(a, b): &(Vec<usize>, Vec<usize>)| Make::Rows(a.clone(), b.clone());
        let cols = |(a, b): &(Vec<usize>, Vec<usize>)| Make::Cols(a.clone(), b.clone());
        Ok(match name {
            "self_attn.q_proj.weight" | "self_attn.q_proj.bias" => rows(&self.q),
            "self_attn.k_proj.weight" | "self_attn.k_proj.bias" => rows(&self.kv),
            "self_attn.v_proj.weight" | "self_attn.v_proj.bias" => rows(&self.kv),
            "self_attn.o_proj.weight" => cols(&self.q),
            "mlp.gate_proj.weight" | "mlp.gate_proj.bias" => rows(&self.ffn),
            "mlp.up_proj.weight" | "mlp.up_proj.bias" => rows(&self.ffn),
            "mlp.down_proj.weight" => cols(&self.ffn),
            // Biases added after the concatenated projections, and Qwen3's head norms.
            "self_attn.o_proj.bias" | "mlp.down_proj.bias" => Make::Weighted(self.ratio),
            "self_attn.q_norm.weight" | "self_attn.k_norm.weight" => Make::Weighted(self.ratio),
            "input_layernorm.weight" | "post_attention_layernorm.weight" => Make::Weighted(0.5),
            other => return Err(Error::Internal(format!("CoMe cannot merge tensor `{other}`"))),
        })
    }

    /// The shape of merged tensor `name`, from `a`'s shape of it.
    pub fn shape(&self, name: &str, shape_a: &[usize]) -> Result<Vec<usize>> {
        let mut shape = shape_a.to_vec();
        match self.make(name)? {
            Make::Rows(a, b) => shape[0] = a.len() + b.len(),
            Make::Cols(a, b) => shape[1] = a.len() + b.len(),
            Make::Weighted(_) => {}
        }
        Ok(shape)
    }

    /// Merged tensor `name` from `a`'s and `b`'s tensors of that name.
    pub fn tensor(&self, name: &str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self.make(name)? {
            Make::Rows(ka, kb) => concat(Axis::Rows, a, b, &ka, &kb),
            Make::Cols(ka, kb) => concat(Axis::Cols, a, b, &ka, &kb),
            Make::Weighted(r) => weighted(a, b, r),
        }
    }
}

/// The merged layer of `a` then `b` under `plan`, in memory.
pub fn concat_layers(
    a: &DecoderLayer,
    b: &DecoderLayer,
    plan: &MergePlan,
    layout: GqaLayout,
) -> Result<DecoderLayer> {
    let merge = ConcatMerge::new(HeadShape::of(a), HeadShape::of(b), plan, layout)?;
    let b_tensors: std::collections::HashMap<String, &Tensor> =
        b.named_tensors().into_iter().collect();
    a.try_map_tensors(&mut |name, ta| {
        let tb = b_tensors
            .get(name)
            .ok_or_else(|| Error::Internal(format!("layer b has no tensor `{name}`")))?;
        merge.tensor(name, ta, tb)
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
