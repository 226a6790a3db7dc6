//! The CUDA runtime: finding a usable GPU without panicking on machines that
//! have none, the PTX modules `build.rs` compiled from `kernels/*.cu` (loaded
//! by name from one table, like candle's), device tensors, and launches.
//!
//! Every kernel takes one `#[repr(C)]` parameter struct by value, holding raw
//! device pointers and sizes; its C++ twin sits at the top of the kernel's
//! `.cu` file. One stream does all the work, so cudarc's per-slice event
//! tracking is switched off (nothing runs concurrently that it could order),
//! which also keeps launches capturable into a CUDA graph.
//!
//! Status: the runtime and the element-wise family exist; the other kernel
//! families and the GPU training path are the CUDA-backend issue's work.

pub mod batchnorm;
pub mod concat;
pub mod elementwise;
pub mod pool;
pub mod reduce;

use crate::float::Float;
use crate::tensor::Tensor;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::Arc;

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
    match CudaContext::device_count() {
        Ok(n) if n > 0 => None,
        Ok(_) => Some("the CUDA driver reports no device".into()),
        Err(e) => Some(format!("the CUDA driver failed to start: {e}")),
    }
}

/// An element type the kernels are instantiated for; kernel `name` of type
/// T is `name_<SUFFIX>` in the PTX.
pub trait DeviceFloat: Float + DeviceRepr + ValidAsZeroBits {
    const SUFFIX: &'static str;
}
impl DeviceFloat for f32 {
    const SUFFIX: &'static str = "f32";
}
impl DeviceFloat for f64 {
    const SUFFIX: &'static str = "f64";
}

/// A tensor in GPU memory (row-major, same layouts as [`Tensor`]).
pub struct GpuTensor<T> {
    shape: Vec<usize>,
    data: CudaSlice<T>,
}

impl<T> GpuTensor<T> {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Device 0, its stream and the loaded modules.
pub struct Gpu {
    stream: Arc<CudaStream>,
    modules: HashMap<&'static str, Arc<CudaModule>>,
    /// Fill every allocation with NaN (all bits set), so a kernel that
    /// misses part of its output fails a parity test instead of passing on
    /// stale data. On for `gpu_*` tests.
    poison: bool,
}

impl Gpu {
    /// Opens device 0 and loads every embedded module; the error says why
    /// no GPU can be used.
    pub fn open() -> Result<Self, String> {
        if let Some(why) = unavailable_reason() {
            return Err(why);
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e}"))?;
        // SAFETY: every launch and copy goes through the one stream below.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let mut modules = HashMap::new();
        for &(name, ptx) in PTX_MODULES {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| format!("the driver rejected kernels/{name}.cu's PTX: {e}"))?;
            modules.insert(name, module);
        }
        Ok(Gpu {
            stream,
            modules,
            poison: false,
        })
    }

    /// For `gpu_*` tests: the GPU, or None after printing why it is skipped.
    pub fn for_tests() -> Option<Self> {
        match Self::open() {
            Ok(gpu) => Some(Gpu { poison: true, ..gpu }),
            Err(why) => {
                println!("skipped: no GPU ({why})");
                None
            }
        }
    }

    /// Kernel `name` (without its type suffix) of `kernels/<module>.cu`, for T.
    pub fn function<T: DeviceFloat>(&self, module: &str, name: &str) -> CudaFunction {
        let full = format!("{name}_{}", T::SUFFIX);
        self.modules
            .get(module)
            .unwrap_or_else(|| panic!("no kernel module {module:?} was embedded"))
            .load_function(&full)
            .unwrap_or_else(|e| panic!("kernels/{module}.cu has no kernel {full}: {e}"))
    }

    /// Launches `f` with its parameter struct.
    ///
    /// # Safety
    /// `params` must match the kernel's C++ struct, and its pointers must
    /// address live allocations large enough for the launch.
    pub unsafe fn launch<P: DeviceRepr>(&self, f: &CudaFunction, cfg: LaunchConfig, params: P) {
        self.stream
            .launch_builder(f)
            .arg(&params)
            .launch(cfg)
            .expect("kernel launch failed");
    }

    pub fn upload<T: DeviceFloat>(&self, t: &Tensor<T>) -> GpuTensor<T> {
        let data = self.stream.clone_htod(t.data()).expect("host-to-device copy failed");
        GpuTensor {
            shape: t.shape().to_vec(),
            data,
        }
    }

    pub fn download<T: DeviceFloat>(&self, t: &GpuTensor<T>) -> Tensor<T> {
        Tensor::new(
            &t.shape,
            self.stream.clone_dtoh(&t.data).expect("device-to-host copy failed"),
        )
    }

    /// An uninitialised tensor: every kernel that returns one writes all of it.
    pub fn alloc<T: DeviceFloat>(&self, shape: &[usize]) -> GpuTensor<T> {
        // SAFETY: the memory is only read after a kernel has written it.
        let data = unsafe { self.stream.alloc::<T>(shape.iter().product()) }.expect("GPU out of memory");
        let t = GpuTensor {
            shape: shape.to_vec(),
            data,
        };
        if self.poison {
            let bytes = t.numel() * std::mem::size_of::<T>();
            // SAFETY: writes exactly the allocation's bytes, on its stream.
            unsafe { cudarc::driver::result::memset_d8_async(self.ptr(&t), 0xff, bytes, self.stream.cu_stream()) }
                .expect("poisoning an allocation failed");
        }
        t
    }

    /// The raw address of `t`'s memory, for a parameter struct.
    pub fn ptr<T>(&self, t: &GpuTensor<T>) -> u64 {
        let (ptr, _no_sync) = t.data.device_ptr(&self.stream);
        ptr
    }

    pub fn synchronize(&self) {
        self.stream.synchronize().expect("GPU work failed");
    }

    /// Uninitialised device memory for `len` elements of a non-float type
    /// (max-pool's u32 argmax), poisoned with all bits set like [`Gpu::alloc`].
    pub fn alloc_buffer<E: DeviceRepr>(&self, len: usize) -> CudaSlice<E> {
        // SAFETY: the memory is only read after a kernel has written it.
        let buffer = unsafe { self.stream.alloc::<E>(len) }.expect("GPU out of memory");
        if self.poison {
            // SAFETY: writes exactly the allocation's bytes, on its stream.
            unsafe {
                cudarc::driver::result::memset_d8_async(
                    self.buffer_ptr(&buffer),
                    0xff,
                    len * std::mem::size_of::<E>(),
                    self.stream.cu_stream(),
                )
            }
            .expect("poisoning an allocation failed");
        }
        buffer
    }

    /// The raw address of a device buffer, for a parameter struct.
    pub fn buffer_ptr<E>(&self, buffer: &CudaSlice<E>) -> u64 {
        let (ptr, _no_sync) = buffer.device_ptr(&self.stream);
        ptr
    }

    /// A host copy of a device buffer.
    pub fn download_buffer<E: DeviceRepr>(&self, buffer: &CudaSlice<E>) -> Vec<E> {
        self.stream.clone_dtoh(buffer).expect("device-to-host copy failed")
    }
}

/// A 1-D launch covering `n` threads, 256 per block, capped so grid-stride
/// kernels keep every SM busy without oversubscribing.
pub fn launch_1d(n: usize) -> LaunchConfig {
    const THREADS: usize = 256;
    let blocks = n.div_ceil(THREADS).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}
