//! Shared by the GPU integration tests: one device per test binary.

use std::sync::OnceLock;

use dsvl_gpu::{Gpu, GpuOptions};

#[allow(dead_code)] // not used by tests/coop_emulated.rs, which opens its own
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        pollster::block_on(Gpu::new(&GpuOptions::from_env())).unwrap_or_else(|e| panic!("no GPU for tests: {e}"))
    })
}

/// Runs a named check from the library's registry.
#[allow(dead_code)] // used by tests/kernels.rs, not by every test binary that shares this module
pub fn run_check(gpu: &Gpu, name: &str) {
    let (_, f) = dsvl_gpu::check::all()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no check named {name}"));
    match pollster::block_on(f(gpu)) {
        Ok(summary) => eprintln!("{name} on {}: {summary}", gpu.adapter.name),
        Err(e) => panic!("{name} on {}: {e}", gpu.adapter.name),
    }
}
