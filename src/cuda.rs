//! The CUDA side, as far as it goes today: finding a usable GPU without
//! panicking on machines that have none, and the PTX modules that `build.rs`
//! compiled from `kernels/*.cu` (loaded by name, like candle's module table).

/// `(module name, PTX text)` for every `kernels/*.cu`; empty when the crate
/// was built without nvcc.
pub const PTX_MODULES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/ptx_modules.rs"));

/// The PTX of the module built from `kernels/<name>.cu`.
pub fn ptx(name: &str) -> Option<&'static str> {
    PTX_MODULES.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Why no GPU can be used, or None when one can.
pub fn unavailable_reason() -> Option<String> {
    if PTX_MODULES.is_empty() {
        return Some("this binary was built without nvcc, so it has no GPU kernels".into());
    }
    // cudarc panics on first use when libcuda is missing: ask the loader first.
    // SAFETY: only dlopen()s the driver library and closes it again.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some("no CUDA driver (libcuda) found".into());
    }
    match cudarc::driver::CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver reports no device".into()),
        Err(e) => Some(format!("the CUDA driver failed to start: {e}")),
    }
}
