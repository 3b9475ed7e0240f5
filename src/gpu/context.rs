//! Adapter choice, device creation with the adapter's own limits and features, and the
//! capabilities kernels are chosen by.

use std::sync::{Arc, Mutex};

use super::pipeline::PipelineCache;
use super::pool::BufferPool;
use crate::error::{Error, Result};

/// How to open the GPU. Defaults come from the environment:
/// `DSVL_ADAPTER` (name substring or index), `DSVL_MAX_BINDING` (bytes), `DSVL_NO_F16`,
/// `DSVL_NO_SUBGROUPS`, `DSVL_NO_COOP`, `DSVL_EMULATE_COOP`; `WGPU_BACKEND` is honoured by wgpu itself.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Adapter by index (as `dsvl-gpu info` lists them) or by a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Use at most this many bytes per storage binding (to test the split paths).
    pub max_binding: Option<u64>,
    /// Pretend the adapter has no SHADER_F16.
    pub disable_f16: bool,
    /// Pretend the adapter has no subgroup operations.
    pub disable_subgroups: bool,
    /// Do not use cooperative matrices (tensor cores) even where the adapter has them.
    pub disable_coop: bool,
    /// Where the adapter has no cooperative matrices but has SHADER_F16, run the tensor-core
    /// kernels on an emulation of them (`gpu::coop_emu`): far slower, only for checking those
    /// kernels on adapters such as lavapipe.
    pub emulate_coop: bool,
}

impl GpuOptions {
    pub fn from_env() -> Self {
        let flag = |k: &str| std::env::var(k).map(|v| !v.is_empty() && v != "0").unwrap_or(false);
        GpuOptions {
            adapter: std::env::var("DSVL_ADAPTER").ok().filter(|s| !s.is_empty()),
            max_binding: std::env::var("DSVL_MAX_BINDING").ok().and_then(|s| s.parse().ok()),
            disable_f16: flag("DSVL_NO_F16"),
            disable_subgroups: flag("DSVL_NO_SUBGROUPS"),
            disable_coop: flag("DSVL_NO_COOP"),
            emulate_coop: flag("DSVL_EMULATE_COOP"),
        }
    }
}

/// What kernels may rely on. Detected, never assumed.
#[derive(Clone, Debug)]
pub struct Caps {
    pub f16: bool,
    pub subgroups: bool,
    pub subgroup_min: u32,
    pub subgroup_max: u32,
    pub timestamps: bool,
    /// Cooperative matrices (tensor cores) of 16x16x16 f16 with f32 accumulation, subgroup
    /// scope, with subgroups of exactly 32 (native Vulkan/Metal adapters that report them).
    pub coop16: bool,
    /// `coop16` is an emulation (`GpuOptions::emulate_coop`): the tensor-core kernels are
    /// rewritten into plain WGSL when compiled, and need no subgroups.
    pub coop_emulated: bool,
    /// Largest storage binding we will create (the adapter's limit, or lower if asked).
    pub max_binding: u64,
    pub max_buffer: u64,
    pub storage_align: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub max_workgroups_per_dim: u32,
    pub max_storage_buffers: u32,
}

#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}, {}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {} {}", self.driver, self.driver_info)?;
        }
        write!(f, ")")
    }
}

/// An open GPU: device, queue, capabilities and the caches shared by all work on it.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterSummary,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    pub caps: Caps,
    pub(crate) pipelines: PipelineCache,
    pub(crate) pool: BufferPool,
    /// Errors wgpu reported outside any error scope; checked after every submission.
    pub(crate) uncaptured: Arc<Mutex<Vec<Uncaptured>>>,
    /// Set by wgpu's device-lost callback: why the device was lost. Every error after that is
    /// reported as `Error::DeviceLost`, so callers know to open a new `Gpu`.
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    /// Skip wgpu's shader bounds checks (native opt-in via DSVL_UNCHECKED_SHADERS=1).
    pub(crate) unchecked_shaders: bool,
    /// Browser only: pipeline-creation error scopes still to be resolved (they resolve
    /// asynchronously there); awaited before the next submission so errors name their kernel.
    #[cfg(target_arch = "wasm32")]
    pub(crate) pending_pipelines: std::cell::RefCell<Vec<super::pipeline::PendingPipeline>>,
}

/// An error wgpu reported outside any scope, reduced to text: the handler must be `Send`, and
/// `wgpu::Error` is not `Send` on wasm32.
pub(crate) enum Uncaptured {
    OutOfMemory,
    Validation(String),
    Internal(String),
}

impl From<wgpu::Error> for Uncaptured {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Uncaptured::OutOfMemory,
            wgpu::Error::Validation { description, .. } => Uncaptured::Validation(description),
            wgpu::Error::Internal { description, .. } => Uncaptured::Internal(description),
        }
    }
}

/// Features we use when the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

fn summarize(info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
    }
}

impl Gpu {
    /// Lists the adapters wgpu can see (native only; the browser offers one).
    pub async fn list_adapters() -> Vec<AdapterSummary> {
        let inst = instance();
        inst.enumerate_adapters(wgpu::Backends::all()).await.iter().map(|a| summarize(&a.get_info())).collect()
    }

    /// Opens the adapter chosen by `opts` (high-performance by default).
    pub async fn new(opts: &GpuOptions) -> Result<Gpu> {
        let inst = instance();
        let adapter = match &opts.adapter {
            Some(sel) => {
                let all = inst.enumerate_adapters(wgpu::Backends::all()).await;
                let pick = match sel.parse::<usize>() {
                    Ok(i) => all.into_iter().nth(i),
                    Err(_) => {
                        let s = sel.to_lowercase();
                        all.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&s))
                    }
                };
                match pick {
                    Some(a) => a,
                    None => {
                        let names: Vec<String> = Gpu::list_adapters()
                            .await
                            .iter()
                            .enumerate()
                            .map(|(i, a)| format!("[{i}] {}", a.name))
                            .collect();
                        if names.is_empty() {
                            // Nothing to choose from: say what to install, not just what is missing.
                            return Err(Error::NoAdapter(format!("none at all, so none matches `{sel}`")));
                        }
                        return Err(Error::AdapterNotFound { wanted: sel.clone(), available: names.join(", ") });
                    }
                }
            }
            None => inst
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| Error::NoAdapter(e.to_string()))?,
        };
        Gpu::from_adapter(adapter, opts).await
    }

    async fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        let summary = summarize(&info);
        let mut features = adapter.features() & wanted_features();
        if opts.disable_f16 {
            features.remove(wgpu::Features::SHADER_F16);
        }
        if opts.disable_subgroups {
            features.remove(wgpu::Features::SUBGROUP);
        }
        let coop16 = !opts.disable_coop
            && features.contains(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP)
            && adapter.features().contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            && info.subgroup_min_size == 32
            && info.subgroup_max_size == 32
            && adapter.cooperative_matrix_properties().iter().any(|p| {
                (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
                    && p.ab_type == wgpu::CooperativeScalarType::F16
                    && p.cr_type == wgpu::CooperativeScalarType::F32
            });
        if coop16 {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let coop_emulated = !coop16 && !opts.disable_coop && opts.emulate_coop && features.contains(wgpu::Features::SHADER_F16);
        // SAFETY (of the token): wgpu marks cooperative matrices experimental. We only use
        // them in one GEMM kernel, with shapes checked on the host (whole 16x16 tiles inside
        // the bindings), and the kernel checks compare it with the f64 reference; DSVL_NO_COOP=1
        // turns the path off.
        let experimental = if coop16 { unsafe { wgpu::ExperimentalFeatures::enabled() } } else { wgpu::ExperimentalFeatures::disabled() };
        // Ask for everything the adapter offers: wgpu's defaults (128 MiB bindings, 16 KiB
        // workgroup memory) would hide what the hardware can do.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("dsvl-gpu"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: experimental,
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::RequestDevice { adapter: summary.to_string(), message: e.to_string() })?;
        let uncaptured: Arc<Mutex<Vec<Uncaptured>>> = Arc::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.into());
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut l) = flag.lock() {
                l.get_or_insert_with(|| crate::error::one_line(&format!("{reason:?}: {message}")));
            }
        });
        let max_binding = opts
            .max_binding
            .map_or(limits.max_storage_buffer_binding_size, |m| m.min(limits.max_storage_buffer_binding_size));
        let caps = Caps {
            f16: features.contains(wgpu::Features::SHADER_F16),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_min: info.subgroup_min_size,
            subgroup_max: info.subgroup_max_size,
            timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
            coop16: coop16 || coop_emulated,
            coop_emulated,
            max_binding,
            max_buffer: limits.max_buffer_size,
            storage_align: limits.min_storage_buffer_offset_alignment as u64,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers: limits.max_storage_buffers_per_shader_stage,
        };
        Ok(Gpu {
            device,
            queue,
            adapter: summary,
            features,
            limits,
            caps,
            pipelines: PipelineCache::default(),
            pool: BufferPool::default(),
            uncaptured,
            lost,
            unchecked_shaders: cfg!(not(target_arch = "wasm32"))
                && std::env::var("DSVL_UNCHECKED_SHADERS").is_ok_and(|v| v == "1"),
            #[cfg(target_arch = "wasm32")]
            pending_pipelines: Default::default(),
        })
    }

    /// Why the device was lost, if it was: then nothing on this `Gpu` works again; open a new one.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// `e`, or `Error::DeviceLost` when the device is gone (what failed is then only a symptom).
    pub(crate) fn lost_or(&self, context: &str, e: Error) -> Error {
        match self.lost() {
            Some(why) => Error::DeviceLost(format!("{why} (during {context})")),
            None => e,
        }
    }

    /// Returns (and clears) the first error wgpu reported outside our error scopes.
    pub(crate) fn take_uncaptured(&self, context: &str) -> Result<()> {
        if let Some(why) = self.lost() {
            return Err(Error::DeviceLost(format!("{why} (during {context})")));
        }
        let first = self.uncaptured.lock().ok().and_then(|mut v| if v.is_empty() { None } else { Some(v.remove(0)) });
        let context = context.to_string();
        match first {
            Some(Uncaptured::OutOfMemory) => Err(Error::OutOfMemory { context }),
            Some(Uncaptured::Validation(d)) => Err(Error::Validation { context, message: crate::error::one_line(&d) }),
            Some(Uncaptured::Internal(d)) => Err(Error::Internal { context, message: crate::error::one_line(&d) }),
            None => Ok(()),
        }
    }

    /// Buffer pool counters: bytes live, bytes cached for reuse, allocations made.
    pub fn pool_stats(&self) -> super::PoolStats {
        self.pool.stats()
    }

    /// Human-readable adapter, features and limits (for `dsvl-gpu info`).
    pub fn describe(&self) -> String {
        let c = &self.caps;
        let l = &self.limits;
        let mut s = String::new();
        s += &format!("adapter: {}\n", self.adapter);
        s += &format!("features: {:?}\n", self.features);
        s += &format!(
            "kernel paths: f16 {}, subgroups {} (size {}..{}), timestamps {}, cooperative matrix 16x16 f16 {}{}\n",
            yes(c.f16),
            yes(c.subgroups),
            c.subgroup_min,
            c.subgroup_max,
            yes(c.timestamps),
            yes(c.coop16),
            if c.coop_emulated { " (emulated, DSVL_EMULATE_COOP)" } else { "" }
        );
        s += &format!("max_storage_buffer_binding_size: {} (using {})\n", l.max_storage_buffer_binding_size, c.max_binding);
        s += &format!("max_buffer_size: {}\n", l.max_buffer_size);
        s += &format!("max_compute_workgroup_storage_size: {}\n", l.max_compute_workgroup_storage_size);
        s += &format!("max_compute_invocations_per_workgroup: {}\n", l.max_compute_invocations_per_workgroup);
        s += &format!("max_compute_workgroups_per_dimension: {}\n", l.max_compute_workgroups_per_dimension);
        s += &format!("max_storage_buffers_per_shader_stage: {}\n", l.max_storage_buffers_per_shader_stage);
        s += &format!("min_storage_buffer_offset_alignment: {}\n", l.min_storage_buffer_offset_alignment);
        s
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

impl Gpu {
    /// Frees the pool's cached (unused) buffers.
    pub fn trim_pool(&self) {
        self.pool.trim();
    }
}
