//! With the `cuda` feature: compiles every `src/*.cu` to PTX in OUT_DIR with nvcc (for
//! `CUDA_COMPUTE_CAP`, default 90) and turns `tuning.json` into launch constants. Without it,
//! nothing: the CPU build needs no CUDA file.
use std::path::{Path, PathBuf};
use std::process::Command;

const KERNELS: [&str; 3] = ["act_intensity", "concat_layers", "distill_loss"];

/// The static MKL archives linked when `LAYERFOLD_MKL_DIR` names a folder holding them (sequential
/// threading: rayon splits the work, so no OpenMP pool competes with it; see src/blas.rs).
const MKL_LIBS: [&str; 3] = ["mkl_intel_lp64", "mkl_sequential", "mkl_core"];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    link_mkl();
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    write_tuning(Path::new("tuning.json"), &out.join("tuning.rs"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    println!("cargo:rerun-if-changed=src/common.cuh");
    for name in KERNELS {
        let src = format!("src/{name}.cu");
        println!("cargo:rerun-if-changed={src}");
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["-ptx", "-O3", "-std=c++17", &format!("-arch=sm_{cap}"), "-o"])
            .arg(&ptx)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "`{nvcc}` could not run ({e}): the cuda feature needs nvcc on PATH; \
                     `source scripts/cuda-toolchain.sh` makes one from PyPI wheels"
                )
            });
        assert!(status.success(), "nvcc failed on {src}");
    }
}

/// MKL from the folder `LAYERFOLD_MKL_DIR` names (scripts/mkl.mjs unpacks it there from the
/// `mkl-static` wheel on PyPI), with `cfg(layerfold_mkl)` for src/blas.rs; none without it, and the
/// CPU matmuls stay candle's (the gemm crate).
fn link_mkl() {
    println!("cargo:rustc-check-cfg=cfg(layerfold_mkl)");
    println!("cargo:rerun-if-env-changed=LAYERFOLD_MKL_DIR");
    let Some(dir) = std::env::var_os("LAYERFOLD_MKL_DIR").filter(|d| !d.is_empty()) else {
        return;
    };
    let dir = PathBuf::from(dir);
    for lib in MKL_LIBS {
        let file = dir.join(format!("lib{lib}.a"));
        assert!(
            file.is_file(),
            "LAYERFOLD_MKL_DIR is {} but {} is missing: run `node scripts/mkl.mjs`, or unset it to \
             build without MKL",
            dir.display(),
            file.display()
        );
        println!("cargo:rerun-if-changed={}", file.display());
    }
    // The three archives refer to each other in a cycle, which MKL's own link line closes with
    // --start-group/--end-group and rustc's -l flags cannot express: a linker script that GROUPs
    // them stands in for one library (the trick TOOLCHAIN.md §3 uses for cudart). The archives
    // are read at the final link, not copied into this crate's rlib.
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("mkl");
    std::fs::create_dir_all(&out).unwrap();
    let group: Vec<String> =
        MKL_LIBS.iter().map(|l| format!("{}", dir.join(format!("lib{l}.a")).display())).collect();
    std::fs::write(out.join("liblayerfold_mkl.so"), format!("GROUP ( {} )\n", group.join(" ")))
        .unwrap();
    println!("cargo:rustc-cfg=layerfold_mkl");
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=dylib=layerfold_mkl");
    for lib in ["pthread", "m", "dl"] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
}

/// `tuning.json` → `pub const <KERNEL>: Launch = Launch { block, items, vec };` per kernel.
fn write_tuning(src: &Path, dst: &Path) {
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(src).expect("crates/kernels/tuning.json");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("tuning.json is JSON");
    let mut code = format!(
        "/// The device the launch parameters were tuned on.\npub const TUNED_ON: &str = {:?};\n",
        doc["device"].as_str().unwrap_or("untuned")
    );
    for kernel in ["act_intensity", "concat_rows", "concat_cols", "kl_div", "hidden_mse"] {
        let field = |f: &str| {
            doc[kernel][f]
                .as_u64()
                .unwrap_or_else(|| panic!("tuning.json: {kernel}.{f} is missing"))
        };
        code += &format!(
            "pub const {}: Launch = Launch {{ block: {}, items: {}, vec: {} }};\n",
            kernel.to_uppercase(),
            field("block"),
            field("items"),
            field("vec")
        );
    }
    std::fs::write(dst, code).unwrap();
}
