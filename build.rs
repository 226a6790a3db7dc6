//! Compiles every `kernels/*.cu` to PTX with nvcc and writes
//! `$OUT_DIR/ptx_modules.rs`, a table of `(name, include_str!(ptx))` that
//! `src/cuda.rs` embeds. Without nvcc the table is empty and the crate is
//! CPU-only (with a cargo warning).
//!
//! nvcc is found through `NVCC`, then `CUDA_HOME`/`CUDA_PATH`, then PATH.
//! The PTX targets compute_80, so one module serves sm_80 and sm_90 cards.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn find_nvcc() -> Option<PathBuf> {
    if let Ok(p) = env::var("NVCC") {
        return Some(PathBuf::from(p));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Ok(home) = env::var(var) {
            let p = Path::new(&home).join("bin").join("nvcc");
            if p.exists() {
                return Some(p);
            }
        }
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path).map(|d| d.join("nvcc")).find(|p| p.exists())
}

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut sources: Vec<PathBuf> = fs::read_dir("kernels")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    sources.retain(|p| p.extension().is_some_and(|e| e == "cu"));
    sources.sort();

    let mut table = String::from("&[\n");
    match find_nvcc() {
        None => println!(
            "cargo:warning=nvcc not found (set NVCC or CUDA_HOME): building without GPU kernels; the CPU backend still works"
        ),
        Some(nvcc) => {
            for src in &sources {
                println!("cargo:rerun-if-changed={}", src.display());
                let name = src.file_stem().unwrap().to_str().unwrap();
                let ptx = out.join(format!("{name}.ptx"));
                let status = Command::new(&nvcc)
                    .args(["-ptx", "-O3", "-std=c++17", "-arch=compute_80", "-lineinfo", "-o"])
                    .arg(&ptx)
                    .arg(src)
                    .status()
                    .unwrap_or_else(|e| panic!("could not run {}: {e}", nvcc.display()));
                assert!(status.success(), "nvcc failed on {}", src.display());
                table += &format!("    ({name:?}, include_str!({:?})),\n", ptx.display().to_string());
            }
        }
    }
    table += "]\n";
    fs::write(out.join("ptx_modules.rs"), table).unwrap();
}
