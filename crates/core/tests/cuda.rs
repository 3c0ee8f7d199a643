//! The GPU against the CPU (issue 12): CoMe on stories260K loaded on CUDA device 0 makes the
//! merges it makes on the CPU (same record, same decisions), and the merged weights agree. In a
//! build without the `cuda` feature, or on a machine without a usable GPU, the test prints why it
//! skips; `benches/device-run.sh` runs it on a GPU machine.

mod common;

use candle_core::DType;
use common::*;
use layerfold_core::calib::CalibrationKind;
use layerfold_core::methods::{prune, PruneRequest, Target};
use layerfold_core::model::DeviceChoice;
use layerfold_core::{LoadOptions, Model, RunContext};

/// Load options for CUDA device 0, or `None` after printing why there is none.
fn cuda() -> Option<LoadOptions> {
    match DeviceChoice::Cuda(0).open() {
        Ok(_) => {
            Some(LoadOptions { dtype: DType::F32, device: DeviceChoice::Cuda(0), stream: false })
        }
        Err(e) => {
            eprintln!("skipped: no usable CUDA device ({e})");
            None
        }
    }
}

#[test]
fn come_on_cuda_makes_the_merges_it_makes_on_the_cpu() {
    let Some(opts) = cuda() else { return };
    let path = shared("models/stories260K");
    let ctx = RunContext::new();
    let cpu = load(&path);
    let gpu = Model::load(&path, &opts, &ctx).unwrap();
    assert!(gpu.lm.embed_tokens.device().is_cuda(), "the model did not load onto the GPU");
    let request = PruneRequest {
        method: "come".into(),
        options: serde_json::Value::Null,
        target: Target { remove_layers: Some(2), ..Default::default() },
        calibration: calibration(CalibrationKind::Chunked, 128, 8),
        distill: None,
    };
    let (on_cpu, cpu_summary) = prune(&cpu, &request, &ctx).unwrap();
    let (on_gpu, gpu_summary) = prune(&gpu, &request, &ctx).unwrap();
    assert_eq!(gpu_summary.record, cpu_summary.record, "merge record");
    // Each step merged the same pair with the same ratio (block influences agree to float noise).
    assert_eq!(gpu_summary.report.steps.len(), cpu_summary.report.steps.len());
    for (g, c) in gpu_summary.report.steps.iter().zip(&cpu_summary.report.steps) {
        let (g, c) = (g.details.as_ref().unwrap(), c.details.as_ref().unwrap());
        assert_eq!(g["pair"], c["pair"], "merged pair");
        let ratio = |d: &serde_json::Value| d["ratio"].as_f64().unwrap();
        assert!(
            (ratio(g) - ratio(c)).abs() < 1e-4,
            "ratio {} on the GPU, {} on the CPU",
            ratio(g),
            ratio(c)
        );
    }
    // The merge copies rows and columns (bit-exact on both devices); only the norms are computed.
    for (i, (a, b)) in on_cpu.lm.layers.iter().zip(&on_gpu.lm.layers).enumerate() {
        let (a, b) = (a.resident().unwrap(), b.resident().unwrap());
        for (j, (x, y)) in a.linears().iter().zip(b.linears()).enumerate() {
            let (x, y): (Vec<f32>, Vec<f32>) = (
                x.weight.flatten_all().unwrap().to_vec1().unwrap(),
                y.weight
                    .to_device(&candle_core::Device::Cpu)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            );
            assert_eq!(x, y, "layer {i}, linear {j}: the merged weights differ");
        }
    }
    println!("come on cuda: record {:?}, as on the cpu", gpu_summary.record);
}
