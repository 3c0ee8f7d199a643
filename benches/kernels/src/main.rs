//! The kernel-tuning harness (issue 12). On a GPU, for each of layerfold's kernels, over shapes of
//! real models (Llama-2-7B: d 4096, I 11008, V 32000; Llama-3-8B: V 128256; SmolLM2-135M: d 576,
//! I 1536) and a grid of launch parameters (block size, items per thread, vector width):
//! - the time per call, the bytes a call must move at least (inputs read once, output written
//!   once), the achieved GB/s and its share of the device's measured copy bandwidth;
//! - the best configuration of each kernel, written as `tuning.json` (the format build.rs reads:
//!   copy it over `crates/kernels/tuning.json` and rebuild);
//! - the fused distillation loss against the unfused candle composition (forward and backward):
//!   time, and peak memory from the CUDA memory pool's high-water mark;
//! - one CoMe merge step and a whole CoMe 32 → 22 run on a Llama-2-7B-shaped model with random
//!   bf16 weights made on the device (calibration 32 × 512 random token ids).
//!
//! `kernels [--out DIR] [--only copy,act,concat,loss,come] [--cpu-smoke]`. Results go to
//! `DIR/kernels.json` and `DIR/tuning.json` (DIR defaults to `$OUT`, else `out/kernels`); a table
//! goes to stdout. `--cpu-smoke` runs every stage on the CPU at toy sizes with one configuration:
//! it checks the harness, not the kernels (launch parameters mean nothing there).
//!
//! Built here with `cargo build --release -p layerfold-bench-kernels --features cuda`, carried to
//! the GPU machine by `benches/device-run.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use layerfold_core::calib::{CalibrationKind, CalibrationSet, CalibrationSummary};
use layerfold_core::methods::{come, concat, Goal};
use layerfold_core::model::config::Config;
use layerfold_core::model::decoder::{Attention, CausalLm, DecoderLayer, Linear, Mlp, RmsNorm};
use layerfold_core::model::origin::Origin;
use layerfold_core::{LoadOptions, Model, RunContext};
use layerfold_kernels::{self as kernels, Launch};
use serde_json::{json, Value};

struct Args {
    out: PathBuf,
    only: Option<Vec<String>>,
    smoke: bool,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        out: std::env::var_os("OUT").map_or_else(|| PathBuf::from("out/kernels"), PathBuf::from),
        only: None,
        smoke: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--out" => a.out = it.next().expect("--out DIR").into(),
            "--only" => {
                a.only =
                    Some(it.next().expect("--only STAGES").split(',').map(String::from).collect())
            }
            "--cpu-smoke" => a.smoke = true,
            other => {
                eprintln!("kernels: unknown argument {other}\nusage: kernels [--out DIR] [--only copy,act,concat,loss,come] [--cpu-smoke]");
                std::process::exit(2)
            }
        }
    }
    a
}

/// Seconds per call of `f`: one warm-up call (loads the module), then enough calls for ~50 ms.
fn time(dev: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    dev.synchronize()?;
    let t = Instant::now();
    f()?;
    dev.synchronize()?;
    let once = t.elapsed().as_secs_f64();
    let reps = ((0.05 / once.max(1e-7)).ceil() as usize).clamp(3, 500);
    let t = Instant::now();
    for _ in 0..reps {
        f()?;
    }
    dev.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / reps as f64)
}

/// The CUDA memory pool's high-water mark: candle allocates with `cuMemAllocAsync` from the
/// device's default pool, so this is the peak of every tensor alive at once. `None` on the CPU.
struct PeakMemory {
    #[cfg(feature = "cuda")]
    pool: Option<candle_core::cuda_backend::cudarc::driver::sys::CUmemoryPool>,
}

impl PeakMemory {
    fn new(dev: &Device) -> Self {
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::driver::sys;
            let pool = dev.as_cuda_device().ok().and_then(|d| {
                let cu = d.cuda_stream().context().cu_device();
                let mut pool = std::ptr::null_mut();
                // SAFETY: a valid device handle and an out pointer.
                let r = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, cu) };
                (r == sys::CUresult::CUDA_SUCCESS).then_some(pool)
            });
            Self { pool }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = dev;
            Self {}
        }
    }

    #[cfg(feature = "cuda")]
    fn attr(
        &self,
        attr: candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute,
        set: Option<u64>,
    ) -> Option<u64> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let pool = self.pool?;
        let mut v: u64 = set.unwrap_or(0);
        // SAFETY: `pool` is the device's default pool; the attributes used are u64-valued.
        let r = unsafe {
            match set {
                Some(_) => sys::cuMemPoolSetAttribute(pool, attr, &mut v as *mut u64 as *mut _),
                None => sys::cuMemPoolGetAttribute(pool, attr, &mut v as *mut u64 as *mut _),
            }
        };
        (r == sys::CUresult::CUDA_SUCCESS).then_some(v)
    }

    /// Bytes in use now; resets the high-water mark to it.
    fn reset(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
            self.attr(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH, Some(0))?;
            self.attr(A::CU_MEMPOOL_ATTR_USED_MEM_CURRENT, None)
        }
        #[cfg(not(feature = "cuda"))]
        None
    }

    /// The high-water mark since the last reset.
    fn peak(&self) -> Option<u64> {
        #[cfg(feature = "cuda")]
        {
            use candle_core::cuda_backend::cudarc::driver::sys::CUmemPool_attribute as A;
            self.attr(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH, None)
        }
        #[cfg(not(feature = "cuda"))]
        None
    }
}

/// Random values of `shape` on `dev`, in `dtype`.
fn randn(shape: &[usize], std: f64, dtype: DType, dev: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, std as f32, shape, dev)?.to_dtype(dtype)
}

/// One measured configuration.
fn row(
    kernel: &str,
    shape: &str,
    launch: Option<Launch>,
    secs: f64,
    bytes: f64,
    copy_gbs: f64,
) -> Value {
    let gbs = bytes / secs / 1e9;
    let l = launch.map(|l| json!({"block": l.block, "items": l.items, "vec": l.vec}));
    json!({"kernel": kernel, "shape": shape, "launch": l, "us": secs * 1e6, "gbs": gbs,
           "copyPct": 100.0 * gbs / copy_gbs})
}

struct Bench {
    dev: Device,
    smoke: bool,
    copy_gbs: f64,
    rows: Vec<Value>,
    best: BTreeMap<&'static str, Launch>,
}

impl Bench {
    fn grid(&self, blocks: &[u32], items: &[u32], vecs: &[u32]) -> Vec<Launch> {
        if self.smoke {
            return vec![Launch { block: 256, items: items[0], vec: vecs[0] }];
        }
        let mut g = Vec::new();
        for &block in blocks {
            for &items in items {
                for &vec in vecs {
                    g.push(Launch { block, items, vec });
                }
            }
        }
        g
    }

    /// Times `call` over `grid` for each shape, prints and records each, and returns the launch
    /// with the smallest total of per-shape times relative to each shape's best.
    fn sweep(
        &mut self,
        kernel: &'static str,
        shapes: &[(String, f64)],
        grid: &[Launch],
        mut call: impl FnMut(usize, Launch) -> Result<()>,
    ) -> Result<Launch> {
        let mut times = vec![vec![f64::INFINITY; grid.len()]; shapes.len()];
        for (s, (name, bytes)) in shapes.iter().enumerate() {
            for (g, &launch) in grid.iter().enumerate() {
                let secs = match time(&self.dev, || call(s, launch)) {
                    Ok(t) => t,
                    // A configuration the device cannot launch (too many threads, say) is skipped.
                    Err(e) => {
                        eprintln!("{kernel} {name} {launch:?}: {e}");
                        continue;
                    }
                };
                times[s][g] = secs;
                self.rows.push(row(kernel, name, Some(launch), secs, *bytes, self.copy_gbs));
            }
            let (g, secs) = times[s]
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(g, &t)| (g, t))
                .unwrap();
            let gbs = bytes / secs / 1e9;
            println!(
                "{kernel:<14} {name:<28} best {:>5} {:>3} {:>1}  {:>9.1} us  {:>7.0} GB/s  {:>5.1}% of copy",
                grid[g].block, grid[g].items, grid[g].vec, secs * 1e6, gbs, 100.0 * gbs / self.copy_gbs
            );
        }
        let score = |g: usize| -> f64 {
            times.iter().map(|t| t[g] / t.iter().cloned().fold(f64::INFINITY, f64::min)).sum()
        };
        let best = (0..grid.len()).min_by(|&a, &b| score(a).total_cmp(&score(b))).unwrap();
        Ok(grid[best])
    }

    /// [`Bench::sweep`], keeping its best launch as `kernel`'s tuned one.
    fn tune(
        &mut self,
        kernel: &'static str,
        shapes: &[(String, f64)],
        grid: &[Launch],
        call: impl FnMut(usize, Launch) -> Result<()>,
    ) -> Result<()> {
        let best = self.sweep(kernel, shapes, grid, call)?;
        self.best.insert(kernel, best);
        Ok(())
    }

    /// Two `[r, c]` bf16 matrices per shape and the index list that keeps every other row
    /// (`Rows`) or column (`Cols`) of each, as a 0.5 merge ratio does, with the bytes a call moves
    /// (the kept part read once, the output written once).
    #[allow(clippy::type_complexity)]
    fn merge_inputs(
        &self,
        shapes: &[(&str, usize, usize)],
        rows: bool,
    ) -> Result<(Vec<(Tensor, Tensor, Vec<u32>)>, Vec<(String, f64)>)> {
        let (mut inputs, mut sizes) = (Vec::new(), Vec::new());
        for &(name, r, c) in shapes {
            let a = randn(&[r, c], 1.0, DType::BF16, &self.dev)?;
            let b = randn(&[r, c], 1.0, DType::BF16, &self.dev)?;
            let along = if rows { r } else { c } as u32;
            let idx: Vec<u32> =
                (0..along).step_by(2).chain((along..2 * along).step_by(2)).collect();
            let out_elems = idx.len() * if rows { c } else { r };
            sizes.push((format!("{name} [{r},{c}]x2 bf16"), (2 * out_elems * 2) as f64));
            inputs.push((a, b, idx));
        }
        Ok((inputs, sizes))
    }

    /// Device-to-device copy of 1 GiB (bytes read + written): the ceiling the kernels are held to.
    fn copy(&mut self) -> Result<()> {
        let n = if self.smoke { 1 << 20 } else { 1 << 28 };
        let x = Tensor::zeros(n, DType::F32, &self.dev)?;
        let secs = time(&self.dev, || x.copy().map(drop))?;
        self.copy_gbs = (2 * 4 * n) as f64 / secs / 1e9;
        println!(
            "copy {} MiB: {:.1} us, {:.0} GB/s (read + write)",
            (4 * n) >> 20,
            secs * 1e6,
            self.copy_gbs
        );
        self.rows.push(
            json!({"kernel": "copy", "bytes": 4 * n, "us": secs * 1e6, "gbs": self.copy_gbs}),
        );
        Ok(())
    }

    fn act_intensity(&mut self) -> Result<()> {
        let tokens = if self.smoke { 64 } else { 32 * 512 };
        let widths: &[(&str, usize)] = if self.smoke {
            &[("toy", 96)]
        } else {
            &[
                ("llama2-7b ffn", 11008),
                ("llama2-7b attn", 4096),
                ("smollm2 ffn", 1536),
                ("smollm2 attn", 576),
            ]
        };
        let w = Tensor::ones(tokens, DType::F32, &self.dev)?;
        let xs: Vec<Tensor> = widths
            .iter()
            .map(|&(_, c)| randn(&[tokens, c], 1.0, DType::BF16, &self.dev))
            .collect::<Result<_>>()?;
        let shapes: Vec<(String, f64)> = widths
            .iter()
            .map(|&(name, c)| {
                (
                    format!("{name} [{tokens},{c}] bf16"),
                    (tokens * c * 2 + tokens * 4 + c * 4) as f64,
                )
            })
            .collect();
        let grid = self.grid(&[64, 128, 256, 512, 1024], &[16, 64, 256], &[1, 2, 4, 8]);
        self.tune("act_intensity", &shapes, &grid, |s, l| {
            kernels::act_intensity_with(&xs[s], Some(&w), l).map(drop)
        })
    }

    fn concat(&mut self) -> Result<()> {
        // (name, rows, columns) of each layer's matrix: gate/up and q of Llama-2-7B, SmolLM2's gate.
        let rows_shapes: &[(&str, usize, usize)] = if self.smoke {
            &[("toy", 40, 24)]
        } else {
            &[
                ("llama2-7b gate", 11008, 4096),
                ("llama2-7b q", 4096, 4096),
                ("smollm2 gate", 1536, 576),
            ]
        };
        let (inputs, shapes) = self.merge_inputs(rows_shapes, true)?;
        let grid = self.grid(&[64, 128, 256, 512, 1024], &[1], &[1, 2, 4]);
        self.tune("concat_rows", &shapes, &grid, |s, l| {
            let (a, b, idx) = &inputs[s];
            kernels::concat_rows_with(a, b, idx, l).map(drop)
        })?;
        // Columns: down and o of Llama-2-7B, SmolLM2's down.
        let cols_shapes: &[(&str, usize, usize)] = if self.smoke {
            &[("toy", 24, 40)]
        } else {
            &[
                ("llama2-7b down", 4096, 11008),
                ("llama2-7b o", 4096, 4096),
                ("smollm2 down", 576, 1536),
            ]
        };
        let (inputs, shapes) = self.merge_inputs(cols_shapes, false)?;
        let grid = self.grid(&[64, 128, 256, 512, 1024], &[1, 4, 16, 64], &[1]);
        self.tune("concat_cols", &shapes, &grid, |s, l| {
            let (a, b, idx) = &inputs[s];
            kernels::concat_cols_with(a, b, idx, l).map(drop)
        })
    }

    /// The loss kernels' grids, then fused against unfused (forward + backward, time and peak).
    fn loss(&mut self) -> Result<()> {
        let n = if self.smoke { 8 } else { 2048 };
        let vocabs: &[(&str, usize)] = if self.smoke {
            &[("toy", 300)]
        } else {
            &[("llama2-7b", 32000), ("llama3-8b", 128256)]
        };
        let pairs: Vec<(Tensor, Tensor)> = vocabs
            .iter()
            .map(|&(_, v)| {
                Ok((
                    randn(&[n, v], 3.0, DType::BF16, &self.dev)?,
                    randn(&[n, v], 3.0, DType::BF16, &self.dev)?,
                ))
            })
            .collect::<Result<_>>()?;
        let grid = self.grid(&[128, 256, 512, 1024], &[1], &[1]);
        let fwd: Vec<(String, f64)> = vocabs
            .iter()
            .map(|&(name, v)| {
                (format!("{name} fwd [{n},{v}] bf16"), (2 * n * v * 2 + n * 4) as f64)
            })
            .collect();
        self.tune("kl_div", &fwd, &grid, |s, l| {
            kernels::kl_div_with(&pairs[s].0, &pairs[s].1, 1.0, l).map(drop)
        })?;
        let g = Tensor::ones(n, DType::F32, &self.dev)?;
        let bwd: Vec<(String, f64)> = vocabs
            .iter()
            .map(|&(name, v)| {
                (format!("{name} bwd [{n},{v}] bf16"), (3 * n * v * 2 + n * 4) as f64)
            })
            .collect();
        // Reported, not tuned: one launch configuration serves both directions (the backward takes
        // the forward's).
        self.sweep("kl_div_bwd", &bwd, &grid, |s, l| {
            kernels::kl_div_grad_with(&pairs[s].0, &pairs[s].1, &g, 1.0, l).map(drop)
        })?;
        let d = if self.smoke { 64 } else { 4096 };
        let (hs, ht) = (
            randn(&[n * 4, d], 1.0, DType::BF16, &self.dev)?,
            randn(&[n * 4, d], 1.0, DType::BF16, &self.dev)?,
        );
        let shapes =
            vec![(format!("llama2-7b hidden [{},{d}] bf16", n * 4), (2 * n * 4 * d * 2) as f64)];
        self.tune("hidden_mse", &shapes, &grid, |_, l| {
            kernels::hidden_mse_with(&hs, &ht, l).map(drop)
        })?;

        let peak = PeakMemory::new(&self.dev);
        for ((name, v), (s, t)) in vocabs.iter().zip(&pairs) {
            for dtype in [DType::F32, DType::BF16] {
                let (s, t) = (s.to_dtype(dtype)?, t.to_dtype(dtype)?);
                let mut sides = Vec::new();
                for fused in [true, false] {
                    let step = || -> Result<()> {
                        let var = Var::from_tensor(&s)?;
                        let rows = if fused {
                            kernels::kl_div(var.as_tensor(), &t, 1.0)?
                        } else {
                            kernels::kl_div_slow(var.as_tensor(), &t, 1.0)?
                        };
                        let grads = rows.to_dtype(DType::F32)?.sum_all()?.backward()?;
                        grads.get(var.as_tensor()).expect("a gradient");
                        Ok(())
                    };
                    self.dev.synchronize()?;
                    let base = peak.reset();
                    step()?;
                    self.dev.synchronize()?;
                    let high = peak.peak();
                    let secs = time(&self.dev, step)?;
                    sides.push((secs, base.zip(high).map(|(b, h)| h.saturating_sub(b))));
                }
                let ((tf, mf), (tu, mu)) = (sides[0], sides[1]);
                let mib = |m: Option<u64>| {
                    m.map_or("n/a".into(), |m| format!("{:.0} MiB", m as f64 / 1048576.0))
                };
                println!(
                    "loss fwd+bwd {name} [{n},{v}] {dtype:?}: fused {:.0} us, {} above inputs; unfused {:.0} us, {}; {:.2}x faster, memory {}",
                    tf * 1e6, mib(mf), tu * 1e6, mib(mu), tu / tf,
                    mf.zip(mu).map_or("n/a".into(), |(f, u)| format!("{:.2} of unfused", f as f64 / u.max(1) as f64))
                );
                self.rows.push(json!({"kernel": "loss fused vs unfused", "shape": format!("{name} [{n},{v}] {dtype:?}"),
                    "fusedUs": tf * 1e6, "unfusedUs": tu * 1e6, "speedup": tu / tf,
                    "fusedPeakBytes": mf, "unfusedPeakBytes": mu}));
            }
        }
        Ok(())
    }

    /// CoMe 32 → 22 on a Llama-2-7B-shaped model with random bf16 weights, and one merge step
    /// (the merged layer's construction) on its own.
    fn come(&mut self, stories: &std::path::Path) -> Result<()> {
        let ctx = RunContext::new();
        let err = |e: layerfold_core::Error| candle_core::Error::Msg(e.to_string());
        // The tokenizer and file plumbing of a real (tiny) model; its weights are replaced.
        let mut model = Model::load(stories, &LoadOptions::default(), &ctx).map_err(err)?;
        let (layers, remove, samples, seq) =
            if self.smoke { (6, 2, 4, 64) } else { (32, 10, 32, 512) };
        let cfg = Config {
            vocab_size: if self.smoke { 512 } else { 32000 },
            hidden_size: if self.smoke { 128 } else { 4096 },
            intermediate_size: if self.smoke { 344 } else { 11008 },
            num_hidden_layers: layers,
            num_attention_heads: if self.smoke { 4 } else { 32 },
            num_key_value_heads: if self.smoke { 4 } else { 32 },
            head_dim: if self.smoke { 32 } else { 128 },
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: None,
            tie_word_embeddings: false,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            sliding_window: None,
            ..model.config.clone()
        };
        let dtype = if self.smoke { DType::F32 } else { DType::BF16 };
        let t = Instant::now();
        model.lm = random_llama(&cfg, dtype, &self.dev)?;
        self.dev.synchronize()?;
        let made = t.elapsed().as_secs_f64();
        model.config = cfg.clone();
        model.origins = (0..layers).map(Origin::Layer).collect();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut id = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % cfg.vocab_size as u64) as u32
        };
        let calib = CalibrationSet {
            samples: (0..samples).map(|_| (0..seq).map(|_| id()).collect()).collect(),
            summary: CalibrationSummary {
                kind: CalibrationKind::Chunked,
                seq_len: seq,
                n_samples: samples,
                seed: 0,
                tokens: samples * seq,
                source: "random token ids".into(),
            },
            warnings: Vec::new(),
        };
        let in_memory = |i: usize| model.lm.layers[i].resident().expect("built in memory");
        let (a, b) = (in_memory(0), in_memory(1));
        let half = |w: usize| -> Vec<usize> { (0..w).step_by(2).collect() };
        let plan = concat::MergePlan {
            ratio: 0.5,
            ffn_a: half(cfg.intermediate_size),
            ffn_b: half(cfg.intermediate_size),
            kv_a: half(cfg.num_key_value_heads),
            kv_b: half(cfg.num_key_value_heads),
        };
        let merge = time(&self.dev, || {
            concat::concat_layers(a, b, &plan, concat::GqaLayout::Grouped).map(drop).map_err(err)
        })?;
        println!("come merge step (build one merged layer, {dtype:?}): {:.2} ms", merge * 1e3);
        let t = Instant::now();
        let out =
            come::run(&model, Some(&calib), &come::Config::default(), Goal::Remove(remove), &ctx)
                .map_err(err)?;
        self.dev.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "come {layers} -> {} on a {} model ({dtype:?}, calibration {samples} x {seq}): {secs:.1} s (stages {:?}); weights made in {made:.1} s",
            out.model.num_layers(),
            if self.smoke { "toy" } else { "Llama-2-7B-shaped" },
            out.report.timings
        );
        self.rows.push(json!({"kernel": "come", "layers": [layers, out.model.num_layers()], "dtype": format!("{dtype:?}"),
            "calibration": [samples, seq], "seconds": secs, "mergeStepMs": merge * 1e3, "stages": out.report.timings}));
        Ok(())
    }
}

/// A Llama of shape `cfg` with N(0, 0.02) weights and unit norms, made on `dev`.
fn random_llama(cfg: &Config, dtype: DType, dev: &Device) -> Result<CausalLm> {
    let (h, i, dh) = (cfg.hidden_size, cfg.intermediate_size, cfg.head_dim);
    let (q, kv) = (cfg.num_attention_heads * dh, cfg.num_key_value_heads * dh);
    let lin = |out: usize, inp: usize| -> Result<Linear> {
        Ok(Linear::new(randn(&[out, inp], 0.02, dtype, dev)?, None))
    };
    let norm = || -> Result<RmsNorm> {
        Ok(RmsNorm { weight: Tensor::ones(h, dtype, dev)?, eps: cfg.rms_norm_eps })
    };
    let layers = (0..cfg.num_hidden_layers)
        .map(|_| {
            Ok(DecoderLayer {
                self_attn: Attention {
                    q_proj: lin(q, h)?,
                    k_proj: lin(kv, h)?,
                    v_proj: lin(kv, h)?,
                    o_proj: lin(h, q)?,
                    q_norm: None,
                    k_norm: None,
                    head_dim: dh,
                },
                mlp: Mlp { gate_proj: lin(i, h)?, up_proj: lin(i, h)?, down_proj: lin(h, i)? },
                input_layernorm: norm()?,
                post_attention_layernorm: norm()?,
            }
            .into())
        })
        .collect::<Result<_>>()?;
    Ok(CausalLm {
        embed_tokens: randn(&[cfg.vocab_size, h], 0.02, dtype, dev)?,
        layers,
        norm: norm()?,
        lm_head: Some(randn(&[cfg.vocab_size, h], 0.02, dtype, dev)?),
    })
}

fn main() -> Result<()> {
    let args = args();
    let dev = if args.smoke {
        Device::Cpu
    } else {
        match Device::new_cuda(0) {
            Ok(d) => d,
            Err(e) => {
                eprintln!(
                    "kernels: needs a CUDA device ({e}); --cpu-smoke checks the harness on the CPU"
                );
                std::process::exit(2)
            }
        }
    };
    let stages = args
        .only
        .clone()
        .unwrap_or_else(|| ["copy", "act", "concat", "loss", "come"].map(String::from).to_vec());
    let name = if args.smoke { "cpu (smoke)".to_string() } else { device_name(&dev) };
    println!("device: {name}");
    let mut bench = Bench {
        dev,
        smoke: args.smoke,
        copy_gbs: f64::NAN,
        rows: Vec::new(),
        best: BTreeMap::new(),
    };
    // Every share is of the copy bandwidth, so it is measured whatever `--only` says.
    bench.copy()?;
    for stage in &stages {
        match stage.as_str() {
            "copy" => {}
            "act" => bench.act_intensity()?,
            "concat" => bench.concat()?,
            "loss" => bench.loss()?,
            "come" => {
                let shared = std::env::var_os("LAYERFOLD_SHARED")
                    .map_or_else(|| PathBuf::from("../shared"), PathBuf::from);
                bench.come(&shared.join("models/stories260K"))?
            }
            other => {
                eprintln!("kernels: unknown stage {other}");
                std::process::exit(2)
            }
        }
    }
    std::fs::create_dir_all(&args.out)?;
    let results = json!({"device": name, "copyGBs": bench.copy_gbs, "rows": bench.rows});
    std::fs::write(args.out.join("kernels.json"), serde_json::to_string_pretty(&results).unwrap())?;
    // Kernels this run did not measure keep the values the build has now.
    let mut tuning: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("../../../crates/kernels/tuning.json")).unwrap();
    tuning.insert("_comment".into(), json!("Written by benches/kernels (the kernel-tuning harness): the fastest launch parameters it measured. Copy over crates/kernels/tuning.json and rebuild."));
    tuning.insert("device".into(), json!(name));
    for (kernel, l) in &bench.best {
        tuning
            .insert(kernel.to_string(), json!({"block": l.block, "items": l.items, "vec": l.vec}));
    }
    std::fs::write(
        args.out.join("tuning.json"),
        serde_json::to_string_pretty(&tuning).unwrap() + "\n",
    )?;
    println!("wrote {}/kernels.json and tuning.json", args.out.display());
    Ok(())
}

fn device_name(dev: &Device) -> String {
    #[cfg(feature = "cuda")]
    if let Ok(d) = dev.as_cuda_device() {
        return d.cuda_stream().context().name().unwrap_or_else(|_| "cuda".into());
    }
    format!("{dev:?}")
}
