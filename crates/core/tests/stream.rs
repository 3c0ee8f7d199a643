//! Layer-at-a-time execution (`stream`): every method and perplexity give the in-memory results bit
//! for bit, and a ~2 GB model is pruned with its anonymous memory under a third of its size.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use layerfold_core::calib::CalibrationKind;
use layerfold_core::eval::multiple_choice::{evaluate, EvalOptions};
use layerfold_core::eval::perplexity::{perplexity, PerplexityOptions};
use layerfold_core::methods::{prune, PruneRequest, Target, METHODS};
use layerfold_core::model::save::save;
use layerfold_core::{LoadOptions, Model, RunContext};

/// The tests of this file one at a time: the memory test samples the whole process.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn load_with(path: &Path, stream: bool) -> Model {
    Model::load(path, &LoadOptions { stream, ..LoadOptions::default() }, &RunContext::new())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

fn remove(k: usize) -> Target {
    Target { remove_layers: Some(k), ..Default::default() }
}

/// Every weight of `model` as bits, by HF name, read through its save (the one path both a
/// streamed and an in-memory model write through).
fn saved_files(model: &Model, dir: &Path) -> Vec<(String, Vec<u8>)> {
    save(model, dir, &Default::default(), &RunContext::new()).unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no safetensors written to {}", dir.display());
    files
}

#[test]
fn every_method_and_perplexity_match_the_in_memory_run_bit_for_bit() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let path = shared("models/stories260K");
    let (resident, streamed) = (load_with(&path, false), load_with(&path, true));
    assert!(resident.info().streamed.is_none());
    assert!(streamed.info().streamed.is_some());
    assert!(streamed.lm.layers.iter().all(|l| l.is_mapped()));
    assert_eq!(streamed.num_parameters(), resident.num_parameters());

    let corpus = layerfold_core::calib::text::TextSource::File(shared(
        "data/text/wikitext2_valid_tokenized.txt",
    ));
    let opts = PerplexityOptions { seq_len: Some(64), max_windows: Some(6), batch_size: Some(2) };
    let (a, b) = (
        perplexity(&resident, &corpus, &opts, &RunContext::new()).unwrap(),
        perplexity(&streamed, &corpus, &opts, &RunContext::new()).unwrap(),
    );
    assert_eq!(a.nll.to_bits(), b.nll.to_bits(), "perplexity: {} vs {}", a.ppl, b.ppl);

    // Zero-shot evaluation: every example's log-likelihoods, with several passes per trip
    // through the streamed layers.
    let opts = EvalOptions {
        tasks: Some(vec!["piqa".into(), "arc_easy".into()]),
        limit: Some(12),
        batch_size: Some(4),
        data_dir: Some(shared("data/eval")),
    };
    let (a, b) = (
        evaluate(&resident, &opts, &RunContext::new()).unwrap(),
        evaluate(&streamed, &opts, &RunContext::new()).unwrap(),
    );
    assert_eq!(a.samples.len(), 24);
    for (x, y) in a.samples.iter().zip(&b.samples) {
        let bits = |v: &[f64]| v.iter().map(|l| l.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x.loglik), bits(&y.loglik), "{} doc {}", x.task, x.doc);
    }

    let dir = tempfile::tempdir().unwrap();
    for m in METHODS {
        let req = PruneRequest {
            method: m.id.into(),
            options: serde_json::json!({}),
            target: remove(2),
            calibration: calibration(CalibrationKind::Chunked, 32, 6),
            distill: None,
        };
        let (p, sa) = prune(&resident, &req, &RunContext::new()).unwrap();
        let (q, sb) = prune(&streamed, &req, &RunContext::new()).unwrap();
        assert_eq!(sa.record, sb.record, "{}: merge record", m.id);
        assert_eq!(
            serde_json::to_string(&sa.report.steps).unwrap(),
            serde_json::to_string(&sb.report.steps).unwrap(),
            "{}: scores and decisions",
            m.id
        );
        let (fa, fb) = (
            saved_files(&p, &dir.path().join(format!("{}-memory", m.id))),
            saved_files(&q, &dir.path().join(format!("{}-stream", m.id))),
        );
        assert!(fa == fb, "{}: saved weights differ", m.id);
    }
}

/// A deterministic stream of uniform values in `[-scale, scale]` (xorshift64*), so that the test
/// can write weights one tensor at a time without holding the model.
struct Uniform(u64);

impl Uniform {
    fn next(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40; // 24 bits
        (bits as f32 / (1u64 << 23) as f32 - 1.0) * scale
    }
}

/// One tensor of the random model, generated when the writer asks for its bytes.
struct RandomTensor {
    shape: Vec<usize>,
    seed: u64,
    /// Norm weights are 1; matrices uniform with scale `1/sqrt(fan_in)`.
    norm: bool,
}

impl safetensors::View for RandomTensor {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let n: usize = self.shape.iter().product();
        let scale = 1.0 / (*self.shape.last().unwrap() as f32).sqrt();
        let mut rng = Uniform(self.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut out = Vec::with_capacity(n * 4);
        for _ in 0..n {
            let v = if self.norm { 1.0 } else { rng.next(scale) };
            out.extend_from_slice(&v.to_le_bytes());
        }
        std::borrow::Cow::Owned(out)
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * 4
    }
}

/// Writes a Llama of about 2 GB in f32 (21 layers of width 1536, FFN 4096, GQA 24/4 heads: 98 MB
/// a layer) with random weights and stories260K's tokenizer into `dir`; returns its size in bytes.
fn write_random_llama(dir: &Path) -> u64 {
    let (layers, d, ff, heads, kv, dh, vocab) = (21, 1536, 4096, 24, 4, 64, 512);
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": dh,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false,
        "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(shared("models/stories260K/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, bool)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, d], false),
        ("model.norm.weight".into(), vec![d], true),
        ("lm_head.weight".into(), vec![vocab, d], false),
    ];
    for i in 0..layers {
        let p = format!("model.layers.{i}");
        for (name, shape, norm) in [
            ("self_attn.q_proj.weight", vec![heads * dh, d], false),
            ("self_attn.k_proj.weight", vec![kv * dh, d], false),
            ("self_attn.v_proj.weight", vec![kv * dh, d], false),
            ("self_attn.o_proj.weight", vec![d, heads * dh], false),
            ("mlp.gate_proj.weight", vec![ff, d], false),
            ("mlp.up_proj.weight", vec![ff, d], false),
            ("mlp.down_proj.weight", vec![d, ff], false),
            ("input_layernorm.weight", vec![d], true),
            ("post_attention_layernorm.weight", vec![d], true),
        ] {
            tensors.push((format!("{p}.{name}"), shape, norm));
        }
    }
    let views = tensors
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape, norm))| (name, RandomTensor { shape, seed: k as u64 + 1, norm }));
    let file = dir.join("model.safetensors");
    safetensors::serialize_to_file(views, None, &file).unwrap();
    std::fs::metadata(&file).unwrap().len()
}

/// The process's anonymous resident memory (mapped files excluded), in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line =
        status.lines().find(|l| l.starts_with("RssAnon:")).expect("RssAnon in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Runs `f` while a thread samples [`rss_anon`] every 5 ms; returns `f`'s value and the peak.
fn peak_rss_anon<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = rss_anon();
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_anon());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak.max(rss_anon())
        })
    };
    let out = f();
    done.store(true, Ordering::Relaxed);
    (out, sampler.join().unwrap())
}

/// drop-bi and CoMe on a ~2 GB random Llama: the streamed runs (load, prune, save) keep their
/// anonymous memory under a third of the model, and their merge records and saved weights equal
/// the in-memory runs' bit for bit. The streamed runs go first, so that no freed in-memory model
/// lingers in the allocator while memory is sampled.
#[test]
fn a_two_gigabyte_model_prunes_layer_by_layer_in_a_third_of_its_size() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let model_dir = dir.path().join("random-llama");
    let size = write_random_llama(&model_dir);
    assert!(size > 2_000_000_000, "the model is {size} bytes");
    let before = std::fs::read(model_dir.join("config.json")).unwrap();
    let calib = calibration(CalibrationKind::Chunked, 64, 8);
    let runs = [("drop-bi", 3), ("come", 2)];
    let mut report = std::io::stderr();
    let mut streamed = Vec::new();
    for (method, k) in runs {
        let req = PruneRequest {
            method: method.into(),
            options: serde_json::json!({}),
            target: remove(k),
            calibration: calib.clone(),
            distill: None,
        };
        let out = dir.path().join(format!("{method}-stream"));
        let (started, idle) = (std::time::Instant::now(), rss_anon());
        let (summary, peak) = peak_rss_anon(|| {
            let model = load_with(&model_dir, true);
            let (pruned, summary) = prune(&model, &req, &RunContext::new()).unwrap();
            save(&pruned, &out, &Default::default(), &RunContext::new()).unwrap();
            summary
        });
        writeln!(
            report,
            "{method} --stream: peak RssAnon {} MB ({} MB before loading) of a {} MB model, {:.1} s",
            peak >> 20,
            idle >> 20,
            size >> 20,
            started.elapsed().as_secs_f64()
        )
        .unwrap();
        assert!(
            peak < size / 3,
            "{method}: RssAnon peaked at {peak} bytes, a third of the model is {}",
            size / 3
        );
        streamed.push((req, summary, out));
    }
    for (req, summary, out) in streamed {
        let started = std::time::Instant::now();
        let (files, peak) = peak_rss_anon(|| {
            let model = load_with(&model_dir, false);
            let (pruned, memory) = prune(&model, &req, &RunContext::new()).unwrap();
            assert_eq!(memory.record, summary.record, "{}: merge record", req.method);
            saved_files(&pruned, &dir.path().join(format!("{}-memory", req.method)))
        });
        writeln!(
            report,
            "{} in memory: peak RssAnon {} MB, {:.1} s",
            req.method,
            peak >> 20,
            started.elapsed().as_secs_f64()
        )
        .unwrap();
        let streamed_file = std::fs::read(out.join("model.safetensors")).unwrap();
        assert_eq!(files.len(), 1);
        assert!(files[0].1 == streamed_file, "{}: saved weights differ", req.method);
        // Two copies of a 2 GB model per method: free the disk before the next.
        std::fs::remove_dir_all(&out).unwrap();
        std::fs::remove_dir_all(dir.path().join(format!("{}-memory", req.method))).unwrap();
    }
    assert_eq!(
        std::fs::read(model_dir.join("config.json")).unwrap(),
        before,
        "the input is untouched"
    );
}
