//! Compute pipelines, created once per deterministic key and cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::shader;
use crate::error::{Error, Result};
use crate::gpu::Gpu;

/// One binding slot of a kernel, in binding order starting at 0 in group 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bind {
    Uniform,
    Read,
    ReadWrite,
}

/// A kernel: an entry point of a shader file and the bindings it declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub binds: &'static [Bind],
}

/// What defines a pipeline: kernel, preprocessor flags and override constants (both sorted).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: Kernel,
    pub flags: Vec<&'static str>,
    pub constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    pub fn new(kernel: Kernel, flags: &[&'static str], constants: &[(&'static str, u32)]) -> Self {
        let mut flags = flags.to_vec();
        flags.sort_unstable();
        flags.dedup();
        let mut constants = constants.to_vec();
        constants.sort_unstable();
        PipelineKey { kernel, flags, constants }
    }

    /// The source this key compiles, after preprocessing.
    pub fn wgsl(&self) -> Result<String> {
        shader::preprocess(self.kernel.shader, shader::source(self.kernel.shader)?, &self.flags)
    }
}

impl std::fmt::Display for PipelineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.kernel.shader, self.kernel.entry)?;
        if !self.flags.is_empty() {
            write!(f, "[{}]", self.flags.join(","))?;
        }
        for (k, v) in &self.constants {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

pub(crate) struct CachedPipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    pub label: String,
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    map: Mutex<HashMap<PipelineKey, Arc<CachedPipeline>>>,
}

impl Gpu {
    /// The pipeline for `key`, compiled on first use. Compile and validation errors come back
    /// as `Error::Kernel` naming the key.
    pub(crate) fn pipeline(&self, key: &PipelineKey) -> Result<Arc<CachedPipeline>> {
        if let Some(p) = self.pipelines.map.lock().map_err(poisoned)?.get(key) {
            return Ok(p.clone());
        }
        let label = key.to_string();
        if key.flags.contains(&"F16") && !self.caps.f16 {
            return Err(Error::MissingFeature { op: key.kernel.entry, feature: "SHADER_F16" });
        }
        if key.flags.contains(&"SUBGROUPS") && !self.caps.subgroups {
            return Err(Error::MissingFeature { op: key.kernel.entry, feature: "SUBGROUP" });
        }
        let mut src = key.wgsl()?;
        if self.caps.coop_emulated && src.contains("wgpu_cooperative_matrix") {
            src = super::coop_emu::rewrite(key.kernel.shader, &src)?;
        }
        if std::env::var_os("DSVL_DUMP_KERNELS").is_some() {
            eprintln!("// ---- {label}\n{src}");
        }
        // Natively the scope resolves at once, so the error names this kernel. In the browser it
        // resolves later: the pop is kept and awaited before the next submission.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc = wgpu::ShaderModuleDescriptor { label: Some(&label), source: wgpu::ShaderSource::Wgsl(src.into()) };
        let module = if self.unchecked_shaders {
            // SAFETY: opt-in (DSVL_UNCHECKED_SHADERS=1, for measuring the cost of wgpu's
            // injected bounds checks and loop bounding). Our kernels bound every index
            // themselves, which the kernel checks exercise on poisoned outputs.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        } else {
            self.device.create_shader_module(desc)
        };
        let entries: Vec<wgpu::BindGroupLayoutEntry> = key
            .kernel
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Bind::Uniform => wgpu::BufferBindingType::Uniform,
                        Bind::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Bind::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(&label), entries: &entries });
        let pl = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(&label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let constants: Vec<(&str, f64)> = key.constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(key.kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                // Our kernels initialise what they read from workgroup memory.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Kernel { kernel: label, message: crate::error::one_line(&e.to_string()) });
        }
        #[cfg(target_arch = "wasm32")]
        self.pending_pipelines.borrow_mut().push(PendingPipeline { key: key.clone(), label: label.clone(), error: Box::pin(scope.pop()) });
        let p = Arc::new(CachedPipeline { pipeline, layout, label });
        self.pipelines.map.lock().map_err(poisoned)?.insert(key.clone(), p.clone());
        Ok(p)
    }

    /// Browser: waits for the error scopes of pipelines created since the last call. A failed
    /// pipeline is dropped from the cache (so a later attempt recompiles rather than reusing an
    /// invalid object) and reported as `Error::Kernel` naming it.
    #[cfg(target_arch = "wasm32")]
    pub(crate) async fn check_pending_pipelines(&self) -> Result<()> {
        let pending: Vec<PendingPipeline> = self.pending_pipelines.borrow_mut().drain(..).collect();
        let mut first = None;
        for p in pending {
            if let Some(e) = p.error.await {
                if let Ok(mut m) = self.pipelines.map.lock() {
                    m.remove(&p.key);
                }
                first.get_or_insert(Error::Kernel { kernel: p.label, message: crate::error::one_line(&e.to_string()) });
            }
        }
        if first.is_some() {
            // Later errors from objects built on the failed pipeline belong to this failure.
            if let Ok(mut v) = self.uncaptured.lock() {
                v.clear();
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The labels of the pipelines compiled so far (`shader.entry[FLAGS] CONST=v`), sorted.
    pub fn compiled_kernels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pipelines.map.lock().map(|m| m.values().map(|p| p.label.clone()).collect()).unwrap_or_default();
        v.sort();
        v
    }

    /// Number of distinct pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.pipelines.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Internal { context: "pipeline cache".into(), message: "lock poisoned by an earlier panic".into() }
}

#[cfg(target_arch = "wasm32")]
pub(crate) struct PendingPipeline {
    pub key: PipelineKey,
    pub label: String,
    pub error: std::pin::Pin<Box<dyn std::future::Future<Output = Option<wgpu::Error>>>>,
}
