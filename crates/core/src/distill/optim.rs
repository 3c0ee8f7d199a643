//! AdamW with decoupled weight decay (Loshchilov & Hutter), a cosine learning-rate schedule with
//! linear warm-up, and global gradient-norm clipping. candle-nn has an AdamW with the same update,
//! but it keeps its moments private, and a resumable checkpoint must save them.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// PyTorch's AdamW defaults, with the weight decay of most fine-tuning recipes.
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// The optimizer and its state: one pair of moments per variable, and the step count.
pub struct AdamW {
    pub params: AdamWParams,
    pub vars: Vec<Var>,
    pub first: Vec<Tensor>,
    pub second: Vec<Tensor>,
    pub step: usize,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, params: AdamWParams) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        let first = vars.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        let second = vars.iter().map(zeros).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { params, vars, first, second, step: 0 })
    }

    /// One update at learning rate `lr`: `θ ← θ(1 − lr·λ) − lr·m̂/(√v̂ + ε)`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let scale_m = 1.0 / (1.0 - p.beta1.powi(self.step as i32));
        let scale_v = 1.0 / (1.0 - p.beta2.powi(self.step as i32));
        for ((var, m), v) in self.vars.iter().zip(&mut self.first).zip(&mut self.second) {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            *m = ((&*m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            *v = ((&*v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            let update = ((&*m * scale_m)? / ((&*v * scale_v)?.sqrt()? + p.eps)?)?;
            let theta = ((var.as_tensor() * (1.0 - lr * p.weight_decay))? - (update * lr)?)?;
            var.set(&theta)?;
        }
        Ok(())
    }
}

/// The learning rate at `step` (0-based) of `steps`: linear warm-up over `warmup` steps to `peak`,
/// then a cosine decay to zero at the last step (transformers' `get_cosine_schedule_with_warmup`).
pub fn learning_rate(step: usize, steps: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (steps - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// Scales every gradient of `vars` so that their global L2 norm is at most `max_norm`; returns
/// the norm before clipping. Variables without a gradient are left out.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0f64;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        scale_grads(grads, vars, max_norm / (norm + 1e-6))?;
    }
    Ok(norm)
}

/// Multiplies every gradient of `vars` by `factor`.
pub fn scale_grads(grads: &mut GradStore, vars: &[Var], factor: f64) -> Result<()> {
    for var in vars {
        if let Some(g) = grads.remove(var.as_tensor()) {
            grads.insert(var.as_tensor(), (g * factor)?);
        }
    }
    Ok(())
}

/// Adds the gradients of `more` to `into` (gradient accumulation), for the tensors of `vars`;
/// the first micro-batch's store becomes the sum.
pub fn accumulate(into: &mut Option<GradStore>, more: GradStore, vars: &[Var]) -> Result<()> {
    let Some(sum) = into.as_mut() else {
        *into = Some(more);
        return Ok(());
    };
    for var in vars {
        if let Some(g) = more.get(var.as_tensor()) {
            let total = match sum.remove(var.as_tensor()) {
                Some(prev) => (prev + g)?,
                None => g.clone(),
            };
            sum.insert(var.as_tensor(), total);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let lr = |s| learning_rate(s, 10, 2, 1e-3);
        assert_eq!(lr(0), 5e-4);
        assert_eq!(lr(1), 1e-3);
        assert!((lr(2) - 1e-3).abs() < 1e-12);
        assert!(lr(6) < lr(5));
        assert!(lr(10).abs() < 1e-12);
    }

    /// One step against the update written out by hand (PyTorch's `torch.optim.AdamW`).
    #[test]
    fn first_step_matches_the_update_rule() {
        let var = Var::new(&[1.0f32, -2.0], &Device::Cpu).unwrap();
        let loss = (var.as_tensor().sqr().unwrap() * 3.0).unwrap().sum_all().unwrap(); // g = 6θ
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(vec![var.clone()], AdamWParams::default()).unwrap();
        opt.step(&grads, 0.1).unwrap();
        let got: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        // Step 1: m̂ = g, v̂ = g², so the update is lr·g/(|g| + ε) = ±lr; decay θ·(1 − lr·λ).
        for (g, t) in got.iter().zip([1.0f64, -2.0]) {
            let want = t * (1.0 - 0.1 * 0.01)
                - 0.1 * t.signum() * (6.0 * t.abs()) / (6.0 * t.abs() + 1e-8);
            assert!((*g as f64 - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    #[test]
    fn accumulation_sums_the_micro_batches() {
        let var = Var::new(&[2.0f32], &Device::Cpu).unwrap();
        let grad_of =
            |k: f64| (var.as_tensor() * k).unwrap().sum_all().unwrap().backward().unwrap();
        let mut sum = None;
        accumulate(&mut sum, grad_of(3.0), std::slice::from_ref(&var)).unwrap();
        accumulate(&mut sum, grad_of(4.0), std::slice::from_ref(&var)).unwrap();
        let g = sum.unwrap().get(var.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(g, [7.0]);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let (a, b) = (
            Var::new(&[3.0f32], &Device::Cpu).unwrap(),
            Var::new(&[4.0f32], &Device::Cpu).unwrap(),
        );
        let loss = ((a.as_tensor() * 3.0).unwrap() + (b.as_tensor() * 4.0).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let vars = [a.clone(), b.clone()];
        assert!((clip_grad_norm(&mut grads, &vars, 1.0).unwrap() - 5.0).abs() < 1e-9);
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(((ga * ga + gb * gb).sqrt() - 1.0).abs() < 1e-5);
    }
}
