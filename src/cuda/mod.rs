//! The CUDA runtime: finding a usable GPU without panicking on machines that
//! have none, the PTX modules `build.rs` compiled from `kernels/*.cu` (every
//! kernel resolved once, when the GPU is opened, from one table, like
//! candle's), device tensors, and launches.
//!
//! Every kernel takes one `#[repr(C)]` parameter struct by value, holding raw
//! device pointers and sizes; its C++ twin sits at the top of the kernel's
//! `.cu` file. Every launch is first planned without a GPU ([`launch`]),
//! then run by [`Gpu::run`]. One stream of our own does all the work (the
//! legacy default stream cannot be captured into a CUDA graph), so cudarc's
//! per-slice event tracking is switched off: nothing runs concurrently that
//! it could order. A failed driver call (out of memory, a refused launch, a
//! fault) ends the op through `crate::failure`, never with a panic.
//!
//! One launcher module per kernel family (`kernels/<family>.cu`), each
//! mirroring the CPU op of `crate::ops` it replaces (`crate::backend` sends
//! GPU tensors here; this module never imports `ops`), with a `*_plan` fn
//! per op that builds its launches from raw device addresses. Every kernel
//! runs in `cargo test` on any machine through the CPU kernel emulator
//! (`crates/kernel-emu`, the `emu_` tests). On an H200 the `gpu_*` parity
//! tests of the first runtime passed (all but `gpu_step`, whose flat bound
//! was too tight) and the tutorial's checkpoints scored its table, with f64
//! parity bounds of 1e-5; this runtime (flat parameters, device-side epoch
//! totals, pinned batches, errors instead of panics) and the 1e-10 bounds
//! have not run on a GPU yet. `scripts/gpu/` runs the GPU checks
//! (`tests/gpu/`, ignored by `cargo test` where no GPU is usable) when a GPU
//! is at hand.

pub mod augment;
pub mod batchnorm;
pub mod concat;
pub mod conv;
pub mod conv_shape;
pub mod conv_tiles;
pub mod dense;
pub mod elementwise;
pub mod graph;
pub mod launch;
pub mod loss;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod tensor_core_check;

use crate::arena::{self, Arena, Buffer, Key};
use crate::counters::{self, Event};
use crate::failure::OrFail;
use crate::float::Float;
use crate::tensor::Tensor;
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PinnedHostSlice,
};
use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

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

/// GPU 0 in one line for `cifar-kern info`: its name, memory, compute
/// capability and the CUDA version of the driver; or why no GPU can be used.
pub fn device_summary() -> Result<String, String> {
    if let Some(why) = unavailable_reason() {
        return Err(why);
    }
    let describe = || -> Result<String, cudarc::driver::DriverError> {
        let ctx = CudaContext::new(0)?;
        let (major, minor) = ctx.compute_capability()?;
        let gib = ctx.total_mem()? as f64 / (1u64 << 30) as f64;
        let mut version = 0;
        // SAFETY: the driver writes one int.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut version) }.result()?;
        Ok(format!(
            "{} ({gib:.0} GiB, compute capability {major}.{minor}, driver for CUDA {}.{})",
            ctx.name()?,
            version / 1000,
            version % 1000 / 10
        ))
    };
    describe().map_err(|e| format!("GPU 0 does not answer: {e}"))
}

/// An element type the kernels are instantiated for: every [`Float`]; the
/// kernel `name` of type T is `name_<T::NAME>` in the PTX.
pub trait DeviceFloat: Float {}
impl<T: Float> DeviceFloat for T {}

/// A GPU tensor is a [`Tensor`] whose storage is device memory.
pub type GpuTensor<T> = Tensor<T>;

/// Device memory of a plain element type that tensors do not hold (labels,
/// image bytes, records, counters), as a flat array on the GPU's stream.
pub struct DeviceBuffer<T> {
    /// Shared with the step arena when it lent the buffer.
    data: Arc<CudaSlice<T>>,
}

impl<T> DeviceBuffer<T> {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }
}

/// A buffer of the step arena: device memory of any element type, in use
/// while a tensor or buffer besides the arena holds it.
struct ArenaBuffer(Arc<dyn Any + Send + Sync>);

impl Buffer for ArenaBuffer {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.0) > 1
    }
}

/// Device 0, its stream and every kernel of the embedded modules.
pub struct Gpu {
    stream: Arc<CudaStream>,
    /// Every kernel, resolved once when the GPU is opened: by module
    /// (`kernels/<module>.cu`), then by full name.
    kernels: HashMap<&'static str, HashMap<String, CudaFunction>>,
    /// Fill every allocation with NaN (all bits set), so a kernel that
    /// misses part of its output fails a parity test instead of passing on
    /// stale data. On for `gpu_*` tests.
    poison: bool,
    /// 1 as a scalar of f32 and of f64, uploaded once: the seed of every
    /// backward from a loss, so no step uploads it.
    ones: (Tensor<f32>, Tensor<f64>),
    /// The ticket word of the one-launch reductions (`kernels/batchnorm.cu`):
    /// zero between launches, which run one at a time on the one stream.
    ticket: DeviceBuffer<u32>,
    /// The step arena, while one is in use ([`Gpu::use_arena`]): every
    /// allocation is lent from it.
    arena: Mutex<Option<Arena<ArenaBuffer>>>,
    /// While some, every launch of [`Gpu::run`] is bracketed by a pair of
    /// events here ([`Gpu::time_launches`]).
    launch_events: Mutex<Option<Vec<(CudaEvent, CudaEvent)>>>,
    /// Capture-safety: waiting for the GPU is an error ([`Gpu::forbid_waits`]).
    waits_forbidden: AtomicBool,
    /// Compute capability as 10 x major + minor (90 for H100 and H200).
    arch: u32,
    sm_count: usize,
    /// The tensor-core conv variants: the committed table, else the
    /// heuristic for this card.
    conv_tiles: conv_tiles::TileTable,
}

/// When `1`, a `gpu_*` test on a machine without a usable GPU fails instead
/// of being ignored (`scripts/gpu/run.sh` sets it on the GPU host).
pub const REQUIRE_GPU_VAR: &str = "CIFAR_KERN_REQUIRE_GPU";

/// The process's GPU, opened on first use (by [`Gpu::global`] or
/// [`Gpu::for_tests`]), or why there is none.
static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();

/// A conv tile table that replaces the committed one ([`use_conv_tiles`]).
static CONV_TILES: OnceLock<conv_tiles::TileTable> = OnceLock::new();

/// Makes the GPU, when it opens, choose its tensor-core conv variants from
/// `table` instead of the committed `conv_tiles.txt`: for `cifar-kern bench
/// --tiles` and the `gpu_conv` bench, to time a table `cifar-kern tune` has
/// just written. An error once the GPU is open or a table was chosen.
pub fn use_conv_tiles(table: conv_tiles::TileTable) -> Result<(), String> {
    if GPU.get().is_some() {
        return Err("the GPU is already open: choose the conv tile table first".into());
    }
    CONV_TILES
        .set(table)
        .map_err(|_| "a conv tile table was already chosen".to_string())
}

/// The GPU every GPU tensor lives on. Panics if none was opened, which
/// cannot happen for a program that holds a GPU tensor.
pub fn gpu() -> &'static Gpu {
    GPU.get()
        .and_then(|g| g.as_ref().ok())
        .expect("a GPU tensor exists only after the GPU was opened")
}

impl Gpu {
    /// The process's GPU (device 0 with every embedded module loaded), or
    /// why no GPU can be used.
    pub fn global() -> Result<&'static Gpu, String> {
        GPU.get_or_init(|| Self::open(false)).as_ref().map_err(Clone::clone)
    }

    /// For `gpu_*` tests: the GPU with poisoned allocations, or why there is
    /// none. The test harness (`tests/harness/`) reports the tests as ignored
    /// with that reason, or as failed when [`REQUIRE_GPU_VAR`] is `1`.
    pub fn for_tests() -> Result<&'static Gpu, String> {
        GPU.get_or_init(|| Self::open(true)).as_ref().map_err(Clone::clone)
    }

    fn open(poison: bool) -> Result<Self, String> {
        if let Some(why) = unavailable_reason() {
            return Err(why);
        }
        let ctx = CudaContext::new(0).map_err(|e| format!("cannot open GPU 0: {e}"))?;
        // SAFETY: every launch and copy goes through the one stream below.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured
        // into a CUDA graph.
        let stream = ctx
            .new_stream()
            .map_err(|e| format!("cannot create a stream on GPU 0: {e}"))?;
        let mut kernels = HashMap::new();
        for &(module_name, ptx) in PTX_MODULES {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| format!("the driver rejected kernels/{module_name}.cu's PTX: {e}"))?;
            let functions = entry_points(ptx)
                .map(|kernel| {
                    let f = module.load_function(kernel);
                    f.map(|f| (kernel.to_string(), f))
                        .map_err(|e| format!("kernels/{module_name}.cu: cannot load kernel {kernel}: {e}"))
                })
                .collect::<Result<_, _>>()?;
            kernels.insert(module_name, functions);
        }
        let ones = (upload_one(&stream)?, upload_one(&stream)?);
        let ticket = DeviceBuffer {
            data: Arc::new(
                stream
                    .clone_htod(&[0u32])
                    .map_err(|e| format!("cannot use GPU 0: {e}"))?,
            ),
        };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| format!("GPU 0 does not tell its compute capability: {e}"))?;
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| format!("GPU 0 does not tell its SM count: {e}"))?;
        Ok(Gpu {
            stream,
            kernels,
            poison,
            ones,
            ticket,
            arena: Mutex::new(None),
            launch_events: Mutex::new(None),
            waits_forbidden: AtomicBool::new(false),
            arch: (major * 10 + minor) as u32,
            sm_count: sm_count as usize,
            conv_tiles: CONV_TILES
                .get()
                .cloned()
                .unwrap_or_else(conv_tiles::TileTable::committed),
        })
    }

    /// Compute capability as 10 x major + minor (the conv tile table's key).
    pub fn arch(&self) -> u32 {
        self.arch
    }

    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// The tensor-core variant for direction `dir` of conv `s` on this card.
    pub fn conv_variant(&self, dir: conv_tiles::Direction, s: &conv_shape::ConvShape) -> conv_tiles::Variant {
        self.conv_tiles.choose(self.arch, self.sm_count, dir, s)
    }

    /// The conv tile table this GPU chooses from.
    pub fn conv_tiles(&self) -> &conv_tiles::TileTable {
        &self.conv_tiles
    }

    /// GPU 0's name, as the driver gives it.
    pub fn name(&self) -> String {
        let name = self.stream.context().name();
        name.unwrap_or_else(|e| format!("GPU 0 (no name: {e})"))
    }

    /// Milliseconds of GPU time of each of `iters` calls of `f` (given the
    /// call's index): a pair of CUDA events recorded around each call on
    /// this GPU's stream, read after one wait at the end. Host time between
    /// the events counts only where the GPU runs dry waiting for the host
    /// (queue a long copy first to keep it busy). For benches.
    pub fn time_each_ms<E>(&self, iters: usize, mut f: impl FnMut(usize) -> Result<(), E>) -> Result<Vec<f32>, E> {
        let pairs: Vec<(CudaEvent, CudaEvent)> = (0..iters).map(|_| (self.event(), self.event())).collect();
        for (i, (start, end)) in pairs.iter().enumerate() {
            self.record(start);
            f(i)?;
            self.record(end);
        }
        counters::add(Event::HostSync, 1);
        self.stream.synchronize().or_fail(|| "waiting for the GPU".into());
        let elapsed =
            |(start, end): &(CudaEvent, CudaEvent)| start.elapsed_ms(end).or_fail(|| "reading an event".into());
        Ok(pairs.iter().map(elapsed).collect())
    }

    /// The device's memory pool, which every allocation and upload of this
    /// runtime draws from (stream-ordered allocation); None where the
    /// driver has no pools.
    fn memory_pool(&self) -> Option<cudarc::driver::sys::CUmemoryPool> {
        let ctx = self.stream.context();
        if !ctx.has_async_alloc() {
            return None;
        }
        ctx.bind_to_thread().ok()?;
        // SAFETY: the context's own device.
        unsafe { cudarc::driver::result::device::get_mem_pool(ctx.cu_device()) }.ok()
    }

    /// The most bytes in use at once from the device's memory pool since
    /// [`Gpu::reset_peak_pool_bytes`]: every tensor and buffer of this
    /// runtime (parameters, optimiser state, activations, workspaces), not
    /// the CUDA context, the kernels' code or pinned host memory. None where
    /// the driver has no memory pools.
    pub fn peak_pool_bytes(&self) -> Option<u64> {
        let pool = self.memory_pool()?;
        let mut bytes = 0u64;
        let attr = cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
        // SAFETY: the attribute is a 64-bit value.
        unsafe { cudarc::driver::result::mem_pool::get_attribute(pool, attr, &mut bytes as *mut u64 as *mut _) }
            .ok()?;
        Some(bytes)
    }

    /// Starts [`Gpu::peak_pool_bytes`] over (from what is in use now on).
    pub fn reset_peak_pool_bytes(&self) {
        if let Some(pool) = self.memory_pool() {
            let mut zero = 0u64;
            let attr = cudarc::driver::sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH;
            // SAFETY: the attribute is a 64-bit value; 0 is the only one it takes.
            let reset =
                unsafe { cudarc::driver::result::mem_pool::set_attribute(pool, attr, &mut zero as *mut u64 as *mut _) };
            reset.or_fail(|| "resetting the memory pool's peak".into());
        }
    }

    /// Runs planned launches in order on the GPU's stream.
    ///
    /// # Safety
    /// Every address in the plans' parameter structs must point into live
    /// device memory as large as the plan that built them assumed.
    pub unsafe fn run(&self, plan: &[launch::Launch]) {
        counters::add(Event::KernelLaunch, plan.len() as u64);
        let mut timed = self.launch_events.lock().expect("the launch events' lock");
        for l in plan {
            let events = timed.as_mut().map(|events| {
                let pair = (self.event(), self.event());
                self.record(&pair.0);
                events.push(pair);
                events.len() - 1
            });
            let f = self
                .kernels
                .get(l.module)
                .and_then(|m| m.get(l.kernel.as_str()))
                .unwrap_or_else(|| panic!("kernels/{}.cu has no kernel {}", l.module, l.kernel));
            // The kernel's one argument: a pointer to its parameter struct,
            // which the driver copies at launch.
            let mut args = [l.params_ptr() as *mut std::ffi::c_void];
            // SAFETY: the caller vouches for the addresses; the struct is
            // laid out as the kernel's (checked by the emu_ tests).
            unsafe {
                cudarc::driver::result::launch_kernel(
                    f.cu_function(),
                    l.cfg.grid_dim,
                    l.cfg.block_dim,
                    l.cfg.shared_mem_bytes,
                    self.stream.cu_stream(),
                    &mut args,
                )
            }
            .or_fail(|| format!("launching {l:?}"));
            if let (Some(events), Some(i)) = (timed.as_ref(), events) {
                self.record(&events[i].1);
            }
        }
    }

    /// A new CUDA event, which also times (never recorded yet: waiting on
    /// it returns at once).
    pub fn event(&self) -> CudaEvent {
        let flags = Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);
        let event = self.stream.context().new_event(flags);
        event.or_fail(|| "creating an event".into())
    }

    /// Records `event` on the stream: it completes when the work enqueued
    /// so far has.
    pub fn record(&self, event: &CudaEvent) {
        event.record(&self.stream).or_fail(|| "recording an event".into());
    }

    /// While `on`, every kernel launch is bracketed by a pair of CUDA
    /// events, so [`Gpu::launch_times_ms`] can sum the kernels' own times
    /// (the sum a replayed graph of the same launches cannot beat). Costs
    /// two event records a launch: for `bench`, never for training.
    pub fn time_launches(&self, on: bool) {
        *self.launch_events.lock().expect("the launch events' lock") = on.then(Vec::new);
    }

    /// Milliseconds of each launch bracketed since [`Gpu::time_launches`]
    /// (or the last call), after waiting for them.
    pub fn launch_times_ms(&self) -> Vec<f32> {
        self.synchronize();
        let mut timed = self.launch_events.lock().expect("the launch events' lock");
        let events = timed.as_mut().map(std::mem::take).unwrap_or_default();
        let elapsed =
            |(start, end): &(CudaEvent, CudaEvent)| start.elapsed_ms(end).or_fail(|| "reading an event".into());
        events.iter().map(elapsed).collect()
    }

    /// Capture-safety: while `forbidden`, any wait for the GPU (a download,
    /// a synchronisation) is an error, as it is inside a CUDA graph capture.
    /// `bench --capture-safe` runs its eager steps after the first so.
    pub fn forbid_waits(&self, forbidden: bool) {
        self.waits_forbidden.store(forbidden, Ordering::Relaxed);
    }

    /// Counts a wait for the GPU, refused while waits are forbidden.
    fn wait(&self, what: &str) {
        assert!(
            !self.waits_forbidden.load(Ordering::Relaxed),
            "capture-safety: {what} waits for the GPU in a step after the first"
        );
        counters::add(Event::HostSync, 1);
    }

    /// 1 as a scalar GPU tensor (shared: never written).
    pub fn one<T: Float>(&self) -> Tensor<T> {
        let (f32_one, f64_one): (&dyn Any, &dyn Any) = (&self.ones.0, &self.ones.1);
        let one = f32_one.downcast_ref::<Tensor<T>>().or(f64_one.downcast_ref());
        one.expect("a Float is f32 or f64").clone()
    }

    /// The address of the reductions' ticket word (see `Gpu::ticket`'s field).
    pub fn ticket(&self) -> u64 {
        self.buffer_ptr(&self.ticket)
    }

    /// A GPU copy of a host tensor.
    pub fn upload<T: Float>(&self, t: &Tensor<T>) -> Tensor<T> {
        counters::add(Event::DeviceAllocation, 1);
        Tensor::from_gpu(
            t.shape(),
            self.stream
                .clone_htod(t.data())
                .or_fail(|| format!("uploading {}", size(t.shape(), std::mem::size_of::<T>()))),
        )
    }

    /// Page-locked host memory for `len` elements, uninitialised: for
    /// copies the stream runs asynchronously (the training batches' records).
    pub fn alloc_pinned<E: DeviceRepr>(&self, len: usize) -> PinnedHostSlice<E> {
        let bytes = len * std::mem::size_of::<E>();
        // SAFETY: the caller writes the memory before copying it.
        unsafe { self.stream.context().alloc_pinned::<E>(len) }
            .or_fail(|| format!("allocating {bytes} bytes of pinned host memory"))
    }

    /// Enqueues a copy of `b` into pinned host memory and returns an event
    /// that completes when it has landed; the host does not wait.
    pub fn download_async<T: DeviceRepr>(&self, b: &DeviceBuffer<T>, into: &mut PinnedHostSlice<T>) -> CudaEvent {
        self.stream
            .memcpy_dtoh(&*b.data, into)
            .or_fail(|| "copying a buffer to the host".into());
        let event = self.event();
        self.record(&event);
        event
    }

    /// A host copy of a GPU tensor.
    pub fn download<T: Float>(&self, t: &Tensor<T>) -> Tensor<T> {
        let data = t.gpu_data().expect("download() of a host tensor");
        self.wait("a download");
        Tensor::new(
            t.shape(),
            self.stream
                .clone_dtoh(&data)
                .or_fail(|| format!("downloading {}", size(t.shape(), std::mem::size_of::<T>()))),
        )
    }

    /// Uninitialised device memory for `len` elements: lent by the step
    /// arena while one is in use, else from the memory pool. Counted as an
    /// allocation only when new memory is taken; poisoned (all bits set)
    /// for `gpu_*` tests either way, so a kernel that misses part of its
    /// output fails a parity test instead of passing on stale data.
    fn alloc_slice<E: DeviceRepr + Send + Sync + 'static>(&self, len: usize) -> Arc<CudaSlice<E>> {
        let bytes = len * std::mem::size_of::<E>();
        let fresh = || {
            counters::add(Event::DeviceAllocation, 1);
            // SAFETY: the memory is only read after a kernel has written it.
            let data = unsafe { self.stream.alloc::<E>(len) };
            Arc::new(data.or_fail(|| format!("allocating {}", size(&[len], std::mem::size_of::<E>()))))
        };
        let lent = match self.arena().as_mut() {
            None => Ok(fresh()),
            Some(arena) => {
                let key = Key::of::<E>(std::any::type_name::<E>(), len);
                let lent = arena.lend(key, || ArenaBuffer(fresh()));
                lent.map(|b| Arc::clone(&b.0).downcast().expect("a buffer of the key's element type"))
            }
        };
        // Outside the arena's lock: a panic must not poison it.
        let data = lent.unwrap_or_else(|unplanned| panic!("{unplanned} (capture-safety mode)"));
        if self.poison {
            let (ptr, _no_sync) = data.device_ptr(&self.stream);
            // SAFETY: writes exactly the buffer's bytes, on its stream.
            unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xff, bytes, self.stream.cu_stream()) }
                .or_fail(|| "poisoning an allocation".into());
        }
        data
    }

    /// An uninitialised GPU tensor: every kernel that returns one writes all of it.
    pub fn alloc<T: Float>(&self, shape: &[usize]) -> Tensor<T> {
        Tensor::from_shared_gpu(shape, self.alloc_slice::<T>(shape.iter().product()))
    }

    /// From now on every allocation is lent by a step arena (`on`), or
    /// taken from the memory pool as before (`!on`: the arena is dropped;
    /// its buffers that tensors still hold live on with them). The trainer
    /// and `bench` turn it on, so every step after the first allocates
    /// nothing and reuses the same addresses; see `crate::arena`.
    pub fn use_arena(&self, on: bool) {
        let mut arena = self.arena();
        match on {
            true => {
                arena.get_or_insert_with(Arena::default);
            }
            false => *arena = None,
        }
    }

    /// The arena's state. A panic while it was held (an allocation that
    /// failed inside `lend`) leaves it consistent: `lend` adds a buffer
    /// only once it was made.
    fn arena(&self) -> std::sync::MutexGuard<'_, Option<Arena<ArenaBuffer>>> {
        self.arena.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The arena's requests and new buffers since the last call (zeros
    /// without an arena), and the bytes it holds.
    pub fn arena_counts(&self) -> (arena::Counts, usize) {
        let mut arena = self.arena();
        arena.as_mut().map(|a| (a.take_counts(), a.bytes())).unwrap_or_default()
    }

    /// Capture-safety: while sealed, a step that needs a buffer the arena
    /// has no free one of fails (instead of allocating).
    pub fn seal_arena(&self, sealed: bool) {
        if let Some(a) = self.arena().as_mut() {
            a.seal(sealed);
        }
    }

    /// A new tensor of zeros (one memset on the stream).
    pub fn zeros<T: Float>(&self, shape: &[usize]) -> Tensor<T> {
        let t = self.alloc::<T>(shape);
        let bytes = t.numel() * std::mem::size_of::<T>();
        // SAFETY: writes exactly the allocation's bytes, on its stream.
        unsafe { cudarc::driver::result::memset_d8_async(self.ptr(&t), 0, bytes, self.stream.cu_stream()) }
            .or_fail(|| "zeroing an allocation".into());
        t
    }

    /// The raw address of a GPU tensor's memory, for a parameter struct.
    pub fn ptr<T: Float>(&self, t: &Tensor<T>) -> u64 {
        let data = t.gpu_data().expect("a kernel argument must be a GPU tensor");
        let (ptr, _no_sync) = data.device_ptr(&self.stream);
        ptr
    }

    /// The raw address of a GPU tensor's memory for a kernel to write in
    /// place: the tensor's own buffer, copied first if another tensor
    /// shares it (so the write cannot show through the other tensor).
    pub fn ptr_mut<T: Float>(&self, t: &mut Tensor<T>) -> u64 {
        let mut data = t.gpu_data_mut().expect("a kernel argument must be a GPU tensor");
        let (ptr, _no_sync) = data.device_ptr_mut(&self.stream);
        ptr
    }

    /// Copies `src` into `dst`'s memory (GPU to GPU), which may be a view:
    /// every view of `dst`'s buffer sees the new elements.
    pub fn copy<T: Float>(&self, src: &Tensor<T>, dst: &Tensor<T>) {
        assert_eq!(src.shape(), dst.shape(), "copy between shapes");
        counters::add(Event::DeviceCopy, 1);
        let bytes = src.numel() * std::mem::size_of::<T>();
        // SAFETY: both addresses hold `bytes` bytes (same shape), on our stream.
        unsafe {
            cudarc::driver::result::memcpy_dtod_async(self.ptr(dst), self.ptr(src), bytes, self.stream.cu_stream())
        }
        .or_fail(|| format!("copying {} on the GPU", size(src.shape(), std::mem::size_of::<T>())));
    }

    pub fn synchronize(&self) {
        self.wait("a synchronisation");
        self.stream.synchronize().or_fail(|| "waiting for the GPU".into());
    }

    /// Uninitialised device memory for `len` elements of a non-float type
    /// (max-pool's u32 argmax), poisoned with all bits set like [`Gpu::alloc`].
    pub fn alloc_buffer<E: DeviceRepr + Send + Sync + 'static>(&self, len: usize) -> DeviceBuffer<E> {
        DeviceBuffer {
            data: self.alloc_slice(len),
        }
    }

    /// A device copy of `data`.
    pub fn upload_buffer<T: DeviceRepr>(&self, data: &[T]) -> DeviceBuffer<T> {
        counters::add(Event::DeviceAllocation, 1);
        DeviceBuffer {
            data: Arc::new(self.stream.clone_htod(data).or_fail(|| "uploading a buffer".into())),
        }
    }

    /// A host copy of a buffer.
    pub fn download_buffer<T: DeviceRepr>(&self, b: &DeviceBuffer<T>) -> Vec<T> {
        self.wait("a download");
        self.stream
            .clone_dtoh(&*b.data)
            .or_fail(|| "downloading a buffer".into())
    }

    /// Sets every byte of `b` to zero (enqueued; `b` keeps its address).
    pub fn zero_buffer<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, b: &mut DeviceBuffer<T>) {
        let bytes = b.len() * std::mem::size_of::<T>();
        // SAFETY: writes exactly the buffer's bytes, on its stream; `b` is
        // borrowed mutably.
        unsafe { cudarc::driver::result::memset_d8_async(self.buffer_ptr(b), 0, bytes, self.stream.cu_stream()) }
            .or_fail(|| "zeroing a buffer".into());
    }

    /// Overwrites all of `b` with `data`; `b` keeps its address, so a
    /// captured graph that reads it sees the new values.
    pub fn write_buffer<T: DeviceRepr>(&self, b: &mut DeviceBuffer<T>, data: &[T]) {
        assert_eq!(
            b.len(),
            data.len(),
            "write_buffer: {} values into {}",
            data.len(),
            b.len()
        );
        // SAFETY: `data` fills exactly the buffer (checked above), on its
        // stream; `b` is borrowed mutably. From pageable memory the call
        // returns once `data` is staged, so the caller may reuse it at once.
        unsafe { cudarc::driver::result::memcpy_htod_async(self.buffer_ptr(b), data, self.stream.cu_stream()) }
            .or_fail(|| "uploading a buffer".into());
    }

    /// The raw address of a buffer, for a parameter struct.
    pub fn buffer_ptr<T>(&self, b: &DeviceBuffer<T>) -> u64 {
        let (ptr, _no_sync) = b.data.device_ptr(&self.stream);
        ptr
    }
}

/// `shape` of `element_bytes`-byte elements, for messages: "a [128, 32, 32, 16] tensor (8.0 MiB)".
fn size(shape: &[usize], element_bytes: usize) -> String {
    let bytes = shape.iter().product::<usize>() * element_bytes;
    format!("a {shape:?} tensor ({:.1} MiB)", bytes as f64 / (1u64 << 20) as f64)
}

/// The names of the kernels a PTX module defines (its `.entry` lines).
fn entry_points(ptx: &str) -> impl Iterator<Item = &str> {
    ptx.lines().filter_map(|line| {
        let (_, rest) = line.split_once(".entry ")?;
        rest.split('(').next().map(str::trim)
    })
}

/// 1 as a scalar GPU tensor of T.
fn upload_one<T: Float>(stream: &Arc<CudaStream>) -> Result<Tensor<T>, String> {
    let one = stream.clone_htod(&[T::one()]);
    Ok(Tensor::from_gpu(
        &[],
        one.map_err(|e| format!("cannot use GPU 0: {e}"))?,
    ))
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

/// Bytes of the one parameter of kernel `name` (suffix included) in the
/// embedded PTX of `module`, or None when the crate was built without nvcc:
/// lets host tests check a `#[repr(C)]` parameter struct against its C++
/// twin without a GPU.
#[cfg(test)]
pub(crate) fn ptx_param_bytes(module: &str, name: &str) -> Option<usize> {
    let ptx = ptx(module)?;
    let entry = ptx
        .find(&format!(".entry {name}("))
        .unwrap_or_else(|| panic!("kernels/{module}.cu has no kernel {name}"));
    let mut lines = ptx[entry..].lines().skip(1);
    let param = lines.next().expect("a parameter").trim();
    assert_eq!(lines.next().map(str::trim), Some(")"), "{name} takes one parameter");
    Some(match param.split_once('[') {
        Some((_, size)) => size.trim_end_matches(']').parse().expect("a parameter size"),
        None if param.starts_with(".param .u64 ") => 8,
        None => panic!("{name}: unexpected parameter {param}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_are_the_kernels() {
        let text = ".visible .entry add_f32(\n\t.param .u64 p\n)\n{\n}\n.visible .entry relu_f64(\n";
        assert_eq!(entry_points(text).collect::<Vec<_>>(), ["add_f32", "relu_f64"]);
        if let Some(loss) = ptx("loss") {
            let mut names: Vec<_> = entry_points(loss).collect();
            names.sort();
            let kernels = ["accumulate_step", "cross_entropy_backward", "cross_entropy"];
            let want: Vec<String> = kernels
                .iter()
                .flat_map(|k| [format!("{k}_f32"), format!("{k}_f64")])
                .collect();
            assert_eq!(names, want);
        }
    }
}
