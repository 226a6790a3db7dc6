//! Launch plans: every kernel launch is first planned, then run.
//!
//! A [`Launch`] holds everything a launch needs and nothing that needs a
//! GPU: the kernel's module and name, the grid and block, and the kernel's
//! one `#[repr(C)]` parameter struct, built from raw device addresses and
//! sizes. Each launcher module (`cuda/<family>.rs`) has `*_plan` functions
//! that build them and thin launchers that allocate, plan and hand the plan
//! to [`super::Gpu::run`]. The `emu_` tests run exactly these plans in the
//! CPU kernel emulator (`crates/kernel-emu`), with the emulator's addresses
//! in place of the GPU's, so what the emulator checks is what the GPU runs.
//!
//! Parameter structs are declared with [`kernel_params!`](crate::kernel_params), which also
//! describes their layout (field names, offsets, sizes, nested structs
//! flattened as `s.n`): the emulator compares it with the C++ struct's
//! `offsetof` at every launch.

use crate::float::Float;
use cudarc::driver::LaunchConfig;
use std::ffi::c_void;

/// One field of a parameter struct, as the emulator compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// `x`, or `s.n` for field `n` of the nested struct `s`.
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// The layout of a type that appears in a kernel's parameter struct:
/// scalars and arrays have no named fields of their own.
pub trait ParamLayout {
    fn fields() -> Vec<Field> {
        Vec::new()
    }
}

impl ParamLayout for u32 {}
impl ParamLayout for i32 {}
impl ParamLayout for u64 {}
impl ParamLayout for i64 {}
impl ParamLayout for f64 {}
impl<T, const N: usize> ParamLayout for [T; N] {}

/// Declares a kernel's `#[repr(C)]` parameter struct (the C++ struct's
/// twin, fields in the same order with the same names) and its layout.
#[macro_export]
macro_rules! kernel_params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        $vis struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl $crate::cuda::launch::ParamLayout for $name {
            fn fields() -> Vec<$crate::cuda::launch::Field> {
                let mut fields = Vec::new();
                $(
                    let offset = ::std::mem::offset_of!($name, $field);
                    fields.push($crate::cuda::launch::Field {
                        name: stringify!($field).to_string(),
                        offset,
                        size: ::std::mem::size_of::<$ty>(),
                    });
                    for inner in <$ty as $crate::cuda::launch::ParamLayout>::fields() {
                        fields.push($crate::cuda::launch::Field {
                            name: format!("{}.{}", stringify!($field), inner.name),
                            offset: offset + inner.offset,
                            size: inner.size,
                        });
                    }
                )*
                fields
            }
        }
    };
}

/// A parameter struct with its type erased: what a launch passes by value.
trait ParamBlock {
    fn as_ptr(&self) -> *const c_void;
    fn size(&self) -> usize;
    fn fields(&self) -> Vec<Field>;
}

impl<P: ParamLayout> ParamBlock for P {
    fn as_ptr(&self) -> *const c_void {
        self as *const P as *const c_void
    }
    fn size(&self) -> usize {
        std::mem::size_of::<P>()
    }
    fn fields(&self) -> Vec<Field> {
        P::fields()
    }
}

/// One planned kernel launch.
pub struct Launch {
    /// `kernels/<module>.cu`.
    pub module: &'static str,
    /// The kernel's full name, type suffix included (`conv_forward_f32`).
    pub kernel: String,
    pub cfg: LaunchConfig,
    params: Box<dyn ParamBlock>,
}

impl Launch {
    /// Kernel `name` of `kernels/<module>.cu` instantiated for T
    /// (`name_<T::NAME>`).
    pub fn new<T: Float, P: ParamLayout + 'static>(
        module: &'static str,
        name: &str,
        cfg: LaunchConfig,
        params: P,
    ) -> Self {
        Self::named(module, format!("{name}_{}", T::NAME), cfg, params)
    }

    /// A kernel by its full name (one that has no type suffix).
    pub fn named<P: ParamLayout + 'static>(module: &'static str, kernel: String, cfg: LaunchConfig, params: P) -> Self {
        Launch {
            module,
            kernel,
            cfg,
            params: Box::new(params),
        }
    }

    /// The parameter struct's bytes, which the kernel takes by value.
    pub fn params_ptr(&self) -> *const c_void {
        self.params.as_ptr()
    }

    pub fn params_size(&self) -> usize {
        self.params.size()
    }

    pub fn params_fields(&self) -> Vec<Field> {
        self.params.fields()
    }
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}::{} grid {:?} block {:?}",
            self.module, self.kernel, self.cfg.grid_dim, self.cfg.block_dim
        )
    }
}

/// The address of element `index` of a device array of E starting at `base`.
pub fn element_ptr<E>(base: u64, index: usize) -> u64 {
    base + (index * std::mem::size_of::<E>()) as u64
}

/// Checks every launch of `plan` against the embedded PTX: its kernel
/// exists and takes a parameter of the plan's size. Checks nothing when the
/// crate was built without nvcc.
#[cfg(test)]
pub(crate) fn assert_plan_matches_ptx(plan: &[Launch]) {
    for l in plan {
        if let Some(bytes) = super::ptx_param_bytes(l.module, &l.kernel) {
            assert_eq!(bytes, l.params_size(), "parameter size of {l:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::kernel_params! {
        struct Inner { a: i32, b: i32 }
    }
    crate::kernel_params! {
        struct Outer { p: u64, inner: Inner, scale: f64 }
    }

    #[test]
    fn layouts_flatten_nested_structs() {
        let names: Vec<_> = <Outer as ParamLayout>::fields()
            .into_iter()
            .map(|f| (f.name, f.offset, f.size))
            .collect();
        assert_eq!(
            names,
            [
                ("p".to_string(), 0, 8),
                ("inner".to_string(), 8, 8),
                ("inner.a".to_string(), 8, 4),
                ("inner.b".to_string(), 12, 4),
                ("scale".to_string(), 16, 8)
            ]
        );
    }

    #[test]
    fn a_launch_carries_its_params_by_value() {
        let params = Outer {
            p: 7,
            inner: Inner { a: 1, b: 2 },
            scale: 0.5,
        };
        let launch = Launch::new::<f32, _>("m", "k", crate::cuda::launch_1d(10), params);
        assert_eq!(launch.kernel, "k_f32");
        assert_eq!(launch.params_size(), 24);
        // SAFETY: the pointer addresses the boxed Outer.
        let back = unsafe { *(launch.params_ptr() as *const Outer) };
        assert_eq!(back, params);
    }
}
