//! The distillation loss ops against PyTorch (`tests/oracle/make_distill_fixture.py`, float64 from
//! the same float32 inputs): per-row values within 1e-5 relative (1e-7 absolute) and gradients
//! within 1e-4 relative (1e-8 absolute).

use candle_core::{Device, Tensor, Var};
use layerfold_kernels::{hidden_mse, kl_div};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/distill_loss.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn tensor(case: &Value, key: &str) -> Tensor {
    let shape: Vec<usize> =
        case["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    Tensor::from_vec(floats(&case[key]), shape, &Device::Cpu).unwrap()
}

/// Rows and the gradient of `Σ_r (0.5 + r)·row_r` with respect to the student.
fn rows_and_grad(loss: impl Fn(&Tensor) -> Tensor, student: &Tensor) -> (Vec<f32>, Vec<f32>) {
    let var = Var::from_tensor(student).unwrap();
    let rows = loss(var.as_tensor());
    let n = rows.dim(0).unwrap();
    let w = Tensor::new((0..n).map(|r| 0.5 + r as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let grads = (rows.clone() * w).unwrap().sum_all().unwrap().backward().unwrap();
    let grad = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    (rows.to_vec1().unwrap(), grad)
}

fn assert_close(got: &[f32], want: &[f32], rel: f32, abs: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (rel * w.abs() + abs))
        .fold(0f32, f32::max);
    assert!(worst <= 1.0, "{what}: worst error {worst} × the tolerance");
}

#[test]
fn kl_div_equals_pytorch() {
    let fx = fixture();
    let kl = &fx["kl"];
    let (student, teacher) = (tensor(kl, "student"), tensor(kl, "teacher"));
    for case in kl["cases"].as_array().unwrap() {
        let tau = case["tau"].as_f64().unwrap();
        let (rows, grad) = rows_and_grad(|s| kl_div(s, &teacher, tau).unwrap(), &student);
        assert_close(&rows, &floats(&case["rows"]), 1e-5, 1e-7, &format!("KL rows, τ {tau}"));
        assert_close(&grad, &floats(&case["grad"]), 1e-4, 1e-8, &format!("KL gradient, τ {tau}"));
    }
}

#[test]
fn hidden_mse_equals_pytorch() {
    let fx = fixture();
    let mse = &fx["mse"];
    let (student, teacher) = (tensor(mse, "student"), tensor(mse, "teacher"));
    let (rows, grad) = rows_and_grad(|s| hidden_mse(s, &teacher).unwrap(), &student);
    assert_close(&rows, &floats(&mse["rows"]), 1e-5, 1e-7, "MSE rows");
    assert_close(&grad, &floats(&mse["grad"]), 1e-5, 1e-8, "MSE gradient");
}
