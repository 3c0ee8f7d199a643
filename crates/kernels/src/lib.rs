//! layerfold-kernels: candle custom ops whose CPU implementation defines the semantics (and is
//! tested against a composed `_slow` version), made fast with vectorised loops on the CPU. With the
//! `cuda` feature, build.rs compiles `src/*.cu` to PTX and the activation-intensity,
//! concatenated-layer and distillation-loss ops gain their `cuda_fwd`; each op picks its backend
//! from its tensor's device.

pub mod act_intensity;
pub mod blas;
pub mod causal_attention;
pub mod concat_layers;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod distill_loss;
pub mod head_nll;
pub mod launch;
pub mod linear;
pub mod rms_norm;
pub mod rope_heads;
pub mod row_cosines;
pub mod swiglu;
#[cfg(test)]
mod test_utils;
mod vec_exp;

pub use act_intensity::{act_intensity, act_intensity_slow, act_intensity_with};
pub use causal_attention::{causal_attention, causal_attention_slow};
pub use concat_layers::{
    concat_cols, concat_cols_slow, concat_cols_with, concat_rows, concat_rows_slow,
    concat_rows_with,
};
pub use distill_loss::{
    hidden_mse, hidden_mse_slow, hidden_mse_with, kl_div, kl_div_grad, kl_div_grad_with,
    kl_div_slow, kl_div_with,
};
pub use head_nll::{head_nll, head_nll_slow};
pub use launch::Launch;
pub use linear::{linear, linear_add, linear_add_slow, linear_slow};
pub use rms_norm::{rms_norm, rms_norm_slow};
pub use rope_heads::{rope_heads, rope_heads_slow};
pub use row_cosines::{row_cosines, row_cosines_slow};
pub use swiglu::{swiglu, swiglu_slow};
