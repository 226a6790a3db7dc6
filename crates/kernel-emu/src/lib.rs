//! Runs cifar-kern's CUDA kernels (`kernels/*.cu`) on the CPU, for tests.
//!
//! `build.rs` compiles every kernel file as C++ with `cpp/cuda_emu.h` in
//! place of the CUDA built-ins and lists its `extern "C"` kernels with their
//! parameter layouts; `cpp/emu_runtime.cpp` runs a launch thread by thread.
//! This crate knows nothing of cifar-kern's Rust side (it would compile it
//! twice): cifar-kern's `emu_` tests hand it the launch plans the GPU path
//! runs, with addresses of [`Memory`] buffers in place of device memory.
//!
//! What a launch checks: the parameter struct against the C++ one (size, and
//! the name, offset and size of every field), out-of-bounds accesses to the
//! launch's buffers, shared-memory races between barriers, barriers that
//! threads reach at different places or after others exited, and warp
//! collectives whose lanes went elsewhere. The emulation proves a kernel's
//! logic, never the GPU's bits, timing or memory ordering between blocks.

use std::collections::BTreeSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

mod ffi {
    use super::*;

    #[repr(C)]
    pub struct EmuField {
        pub name: *const c_char,
        pub offset: u64,
        pub size: u64,
    }

    #[repr(C)]
    pub struct EmuKernel {
        pub module: *const c_char,
        pub name: *const c_char,
        pub entry: unsafe extern "C" fn(*const c_void),
        pub param_size: u64,
        pub fields: *const EmuField,
        pub field_count: u64,
    }

    #[repr(C)]
    pub struct EmuBuffer {
        pub base: u64,
        pub len: u64,
        pub label: *const c_char,
    }

    extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn emu_launch(
            kernel: *const EmuKernel,
            params: *const c_void,
            grid: *const u32,
            block: *const u32,
            dynamic_shared_bytes: u32,
            seed: u64,
            buffers: *const EmuBuffer,
            buffer_count: usize,
            error: *mut c_char,
            error_len: usize,
        ) -> c_int;
    }
}

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// One field of a parameter struct: `x`, or `s.n` for field `n` of the
/// nested struct `s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// One `extern "C"` kernel of a `kernels/<module>.cu`, as compiled here.
pub struct Kernel {
    pub module: &'static str,
    pub name: String,
    pub param_size: usize,
    pub fields: Vec<Field>,
    raw: *const ffi::EmuKernel,
}

// SAFETY: `raw` points into a static table that is never written.
unsafe impl Send for Kernel {}
unsafe impl Sync for Kernel {}

/// Every kernel of every `kernels/*.cu` of cifar-kern, in file and source
/// order.
pub fn kernels() -> &'static [Kernel] {
    &tables().0
}

/// The emulator's own check kernels (`selftest/*.cu`): each with one
/// deliberate mistake that a launch must report.
pub fn check_kernels() -> &'static [Kernel] {
    &tables().1
}

/// (cifar-kern's kernels, the check kernels)
fn tables() -> &'static (Vec<Kernel>, Vec<Kernel>) {
    static TABLES: OnceLock<(Vec<Kernel>, Vec<Kernel>)> = OnceLock::new();
    TABLES.get_or_init(|| {
        let (mut project_kernels, mut check_kernels) = (Vec::new(), Vec::new());
        for &(module, table, project) in MODULES {
            let all = if project {
                &mut project_kernels
            } else {
                &mut check_kernels
            };
            let mut count = 0usize;
            // SAFETY: the generated function returns its static table and length.
            let entries = unsafe { std::slice::from_raw_parts(table(&mut count), count) };
            for k in entries {
                // SAFETY: the table's strings are static C strings, its
                // fields array holds field_count entries.
                let text = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_string();
                let fields = unsafe { std::slice::from_raw_parts(k.fields, k.field_count as usize) };
                all.push(Kernel {
                    module,
                    name: text(k.name),
                    param_size: k.param_size as usize,
                    fields: fields
                        .iter()
                        .map(|f| Field {
                            name: text(f.name),
                            offset: f.offset as usize,
                            size: f.size as usize,
                        })
                        .collect(),
                    raw: k,
                });
            }
        }
        (project_kernels, check_kernels)
    })
}

/// Names of the kernels launched so far by this process (successfully or
/// not): what the `emu_` suite's coverage check compares with [`kernels`].
pub fn launched() -> BTreeSet<String> {
    LAUNCHED.lock().unwrap().clone()
}

static LAUNCHED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// One launch, as the GPU would take it.
pub struct Launch<'a> {
    pub module: &'a str,
    pub kernel: &'a str,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub dynamic_shared_bytes: u32,
    /// The parameter struct, passed by value.
    pub params: *const c_void,
    pub params_size: usize,
    /// Its layout on the Rust side, compared with the C++ struct's.
    pub fields: &'a [Field],
}

/// Unused bytes around every buffer, so an access just past one lands in
/// no buffer and is reported.
const RED_ZONE: usize = 256;
/// cudaMalloc's alignment.
const ALIGN: usize = 256;

struct Region {
    _storage: Vec<u64>,
    base: u64,
    len: usize,
    label: CString,
}

/// Host memory standing in for device memory: buffers with real addresses
/// that parameter structs can carry, each one a bounds-checked region for
/// the kernels.
#[derive(Default)]
pub struct Memory {
    regions: Vec<Region>,
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// `bytes` of uninitialised memory, poisoned (all bits set: NaN in every
    /// float), so a kernel that leaves part of its output unwritten fails.
    pub fn alloc(&mut self, bytes: usize, label: &str) -> u64 {
        let words = (bytes + 2 * RED_ZONE + ALIGN).div_ceil(8);
        let mut storage = vec![u64::MAX; words];
        let start = storage.as_mut_ptr() as usize + RED_ZONE;
        let base = start.next_multiple_of(ALIGN) as u64;
        self.regions.push(Region {
            _storage: storage,
            base,
            len: bytes,
            label: CString::new(label).expect("a label without NUL"),
        });
        base
    }

    /// A buffer holding a copy of `data`.
    pub fn upload<T: Copy>(&mut self, data: &[T], label: &str) -> u64 {
        let base = self.alloc(std::mem::size_of_val(data), label);
        self.write(base, data);
        base
    }

    fn region(&self, addr: u64, bytes: usize) -> &Region {
        self.regions
            .iter()
            .find(|r| addr >= r.base && addr + bytes as u64 <= r.base + r.len as u64)
            .unwrap_or_else(|| panic!("{bytes} bytes at {addr:#x} are not inside one buffer"))
    }

    /// `len` elements of T at `addr`.
    pub fn read<T: Copy>(&self, addr: u64, len: usize) -> Vec<T> {
        let bytes = len * std::mem::size_of::<T>();
        self.region(addr, bytes);
        let mut out = Vec::with_capacity(len);
        // SAFETY: the range lies inside a live region (checked above); reads
        // are unaligned-safe.
        for i in 0..len {
            out.push(unsafe { std::ptr::read_unaligned((addr as *const T).add(i)) });
        }
        out
    }

    /// Writes `data` at `addr`.
    pub fn write<T: Copy>(&mut self, addr: u64, data: &[T]) {
        self.region(addr, std::mem::size_of_val(data));
        // SAFETY: the range lies inside a live region that this &mut owns.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr() as *const u8, addr as *mut u8, std::mem::size_of_val(data))
        };
    }

    /// Runs one launch over these buffers, thread by thread, the order drawn
    /// from `seed`. Every address the kernel dereferences must lie in one of
    /// this memory's buffers.
    pub fn launch(&mut self, l: &Launch<'_>, seed: u64) -> Result<(), String> {
        LAUNCHED.lock().unwrap().insert(l.kernel.to_string());
        let kernel = kernels()
            .iter()
            .chain(check_kernels())
            .find(|k| k.module == l.module && k.name == l.kernel)
            .ok_or_else(|| format!("kernels/{}.cu has no kernel {}", l.module, l.kernel))?;
        check_layout(kernel, l)?;
        let buffers: Vec<ffi::EmuBuffer> = self
            .regions
            .iter()
            .map(|r| ffi::EmuBuffer {
                base: r.base,
                len: r.len as u64,
                label: r.label.as_ptr(),
            })
            .collect();
        let mut error = vec![0 as c_char; 2048];
        // SAFETY: the kernel entry is from the static table; the parameter
        // bytes are params_size long (checked against the C++ size); every
        // buffer is a live region owned by self, which is borrowed mutably
        // for the launch.
        let status = unsafe {
            ffi::emu_launch(
                kernel.raw,
                l.params,
                l.grid.as_ptr(),
                l.block.as_ptr(),
                l.dynamic_shared_bytes,
                seed,
                buffers.as_ptr(),
                buffers.len(),
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if status == 0 {
            Ok(())
        } else {
            // SAFETY: emu_launch wrote a NUL-terminated message.
            Err(unsafe { CStr::from_ptr(error.as_ptr()) }.to_string_lossy().into_owned())
        }
    }
}

/// The launch's parameter struct must be the C++ one, field for field.
fn check_layout(kernel: &Kernel, l: &Launch<'_>) -> Result<(), String> {
    let mut problems = Vec::new();
    if l.params_size != kernel.param_size {
        problems.push(format!("{} bytes in Rust, {} in C++", l.params_size, kernel.param_size));
    }
    for f in &kernel.fields {
        match l.fields.iter().find(|r| r.name == f.name) {
            None => problems.push(format!("field `{}` is missing in Rust", f.name)),
            Some(r) if (r.offset, r.size) != (f.offset, f.size) => problems.push(format!(
                "field `{}` is at offset {} ({} bytes) in Rust, {} ({} bytes) in C++",
                f.name, r.offset, r.size, f.offset, f.size
            )),
            Some(_) => {}
        }
    }
    for r in l.fields {
        if !kernel.fields.iter().any(|f| f.name == r.name) {
            problems.push(format!("field `{}` is missing in C++", r.name));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: the Rust parameter struct differs from the C++ one: {}",
            l.kernel,
            problems.join("; ")
        ))
    }
}
