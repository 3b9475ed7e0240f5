//! The GPU runtime: device and capabilities, tensors, the buffer pool, the pipeline cache
//! and recorded step lists.

mod context;
pub mod coop_emu;
mod pipeline;
mod plan;
mod pool;
mod profile;
mod readback;
pub mod shader;
mod tensor;

pub use context::{AdapterSummary, Caps, Gpu, GpuOptions};
pub use pipeline::{Bind, Kernel, PipelineKey};
pub use plan::{grid, Recorder, StepList};
pub use pool::PoolStats;
pub use profile::ReplayTiming;
pub use readback::InFlightRead;
pub use tensor::{DType, RowSplit, Tensor};

/// A `#[repr(C)]` parameter struct shared with WGSL. `FIELDS` lists (name, byte offset) so a
/// test can check the Rust layout against the WGSL struct that naga reports.
pub trait Params: bytemuck::Pod {
    const WGSL_NAME: &'static str;
    const FIELDS: &'static [(&'static str, usize)];
}

/// Defines a parameter struct once: the Rust struct and its field table.
#[macro_export]
macro_rules! params_struct {
    ($(#[$m:meta])* $name:ident ($wgsl:literal) { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $(pub $field: $ty),* }
        impl $crate::gpu::Params for $name {
            const WGSL_NAME: &'static str = $wgsl;
            const FIELDS: &'static [(&'static str, usize)] =
                &[$((stringify!($field), core::mem::offset_of!($name, $field))),*];
        }
    };
}
