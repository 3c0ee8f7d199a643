//! layerfold-kernels: candle custom ops whose CPU implementation defines the semantics (and is
//! tested against a composed `_slow` version), made fast with vectorised loops on the CPU. CUDA
//! implementations (feature `cuda`) arrive with the GPU issue; until then the decoder uses the
//! composed versions on CUDA devices.

pub mod causal_softmax;
pub mod distill_loss;
pub mod swiglu;
pub mod token_nll;
mod vec_exp;

pub use causal_softmax::{causal_softmax, causal_softmax_, causal_softmax_slow};
pub use distill_loss::{hidden_mse, hidden_mse_slow, kl_div, kl_div_grad, kl_div_slow};
pub use swiglu::{swiglu, swiglu_slow};
pub use token_nll::{token_nll, token_nll_slow};
