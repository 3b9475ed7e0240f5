//! `dsvl-gpu pipeline-stats [FILTER]`: what the Vulkan driver reports about each compiled
//! kernel (on NVIDIA: registers, shared memory, spills), through VK_KHR_pipeline_executable_properties.
//! wgpu does not expose these, and without them every occupancy argument about a kernel is a
//! guess. So this translates each pipeline variant to SPIR-V as wgpu does on Vulkan (naga, the
//! key's overrides applied, index bounds clamped, loops bounded) and compiles it on a bare
//! Vulkan device of its own, created with the statistics feature. Native Vulkan only.

use std::ffi::{c_char, CStr, CString};

use anyhow::{anyhow, bail, Context, Result};
use ash::vk;
use dsvl_gpu::gpu::{Bind, PipelineKey};

/// GEMV rows per group: each value the host picks (the variants list has the default only).
const CPG_VALUES: [u32; 3] = [1, 2, 4];

pub fn pipeline_stats(filter: Option<&str>) -> Result<()> {
    let mut keys: Vec<(PipelineKey, Vec<(String, f64)>)> = Vec::new();
    for key in dsvl_gpu::ops::all_variants() {
        let name = key.to_string();
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if key.constants.iter().any(|(n, _)| *n == "CPG") || !key.wgsl()?.contains("override CPG") {
            keys.push((key, Vec::new()));
        } else {
            for c in CPG_VALUES {
                keys.push((key.clone(), vec![("CPG".into(), f64::from(c))]));
            }
        }
    }
    if keys.is_empty() {
        bail!("no pipeline variant matches {:?}", filter.unwrap_or(""));
    }
    let vk = StatsDevice::new()?;
    println!("device: {}", vk.name);
    for (key, extra) in &keys {
        let words = spirv(key, extra)?;
        let label = if extra.is_empty() { key.to_string() } else { format!("{key} CPG={}", extra[0].1) };
        match vk.stats(key, &words) {
            Ok(stats) => println!("{label}: {stats}"),
            Err(e) => println!("{label}: error: {e:#}"),
        }
    }
    Ok(())
}

/// The variant's SPIR-V, written as wgpu 30 writes it for a Vulkan 1.3 device.
fn spirv(key: &PipelineKey, extra: &[(String, f64)]) -> Result<Vec<u32>> {
    use naga::back::spv;
    let src = key.wgsl()?;
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| anyhow!("{key}: {}", e.emit_to_string(&src)))?;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .map_err(|e| anyhow!("{key}: {}", e.emit_to_string(&src)))?;
    let mut constants = naga::back::PipelineConstants::default();
    for (name, value) in &key.constants {
        constants.insert(name.to_string(), f64::from(*value));
    }
    for (name, value) in extra {
        constants.insert(name.clone(), *value);
    }
    let entry = (naga::ShaderStage::Compute, key.kernel.entry);
    let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, Some(entry), &constants)
        .map_err(|e| anyhow!("{key}: overrides: {e}"))?;
    let options = spv::Options {
        lang_version: (1, 6),
        bounds_check_policies: naga::proc::BoundsCheckPolicies {
            index: naga::proc::BoundsCheckPolicy::Restrict,
            // wgpu leaves buffer bounds to robustBufferAccess2 where the device has it.
            buffer: naga::proc::BoundsCheckPolicy::Unchecked,
            image_load: naga::proc::BoundsCheckPolicy::Unchecked,
            binding_array: naga::proc::BoundsCheckPolicy::Unchecked,
        },
        force_loop_bounding: true,
        ..Default::default()
    };
    let stage = spv::PipelineOptions { entry_point: key.kernel.entry.to_string(), shader_stage: naga::ShaderStage::Compute };
    spv::write_vec(&module, &info, &options, Some(&stage)).map_err(|e| anyhow!("{key}: SPIR-V: {e}"))
}

/// A Vulkan device with every feature the adapter supports and the statistics extension.
struct StatsDevice {
    _entry: ash::Entry,
    instance: ash::Instance,
    device: ash::Device,
    exec: ash::khr::pipeline_executable_properties::Device,
    name: String,
}

impl StatsDevice {
    fn new() -> Result<Self> {
        // SAFETY: loads the system's Vulkan loader; every handle made here is destroyed in Drop.
        unsafe {
            let entry = ash::Entry::load().context("no Vulkan loader")?;
            let app = vk::ApplicationInfo::default().api_version(vk::API_VERSION_1_3);
            let instance = entry.create_instance(&vk::InstanceCreateInfo::default().application_info(&app), None).context("vkCreateInstance")?;
            // The loader (`entry`) stays loaded until the instance is destroyed, on either path.
            match Self::open(&instance) {
                Ok((device, exec, name)) => Ok(StatsDevice { _entry: entry, instance, device, exec, name }),
                Err(e) => {
                    instance.destroy_instance(None);
                    Err(e)
                }
            }
        }
    }

    fn open(instance: &ash::Instance) -> Result<(ash::Device, ash::khr::pipeline_executable_properties::Device, String)> {
        // SAFETY: queries and device creation on a live instance, with structures that outlive
        // the calls that read them.
        unsafe {
            let has = |pd: vk::PhysicalDevice, ext: &CStr| {
                instance.enumerate_device_extension_properties(pd).unwrap_or_default().iter().any(|e| e.extension_name_as_c_str() == Ok(ext))
            };
            let stats_ext = ash::khr::pipeline_executable_properties::NAME;
            let coop_ext = ash::khr::cooperative_matrix::NAME;
            let mut pds = instance.enumerate_physical_devices().context("vkEnumeratePhysicalDevices")?;
            pds.retain(|&pd| has(pd, stats_ext));
            // A discrete GPU first (the one wgpu would pick for high performance).
            pds.sort_by_key(|&pd| instance.get_physical_device_properties(pd).device_type != vk::PhysicalDeviceType::DISCRETE_GPU);
            let pd = *pds.first().ok_or_else(|| anyhow!("no Vulkan device offers VK_KHR_pipeline_executable_properties"))?;
            let props = instance.get_physical_device_properties(pd);
            let name = props.device_name_as_c_str().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let coop = has(pd, coop_ext);
            // Every supported feature on: the shaders need f16, 16-bit storage, the memory model,
            // subgroups and cooperative matrices, and enabling what is supported is always valid.
            let mut v11 = vk::PhysicalDeviceVulkan11Features::default();
            let mut v12 = vk::PhysicalDeviceVulkan12Features::default();
            let mut v13 = vk::PhysicalDeviceVulkan13Features::default();
            let mut cm = vk::PhysicalDeviceCooperativeMatrixFeaturesKHR::default();
            let mut ex = vk::PhysicalDevicePipelineExecutablePropertiesFeaturesKHR::default();
            let base = {
                let mut f2 = vk::PhysicalDeviceFeatures2::default().push_next(&mut v11).push_next(&mut v12).push_next(&mut v13).push_next(&mut ex);
                if coop {
                    f2 = f2.push_next(&mut cm);
                }
                instance.get_physical_device_features2(pd, &mut f2);
                f2.features
            };
            if ex.pipeline_executable_info == vk::FALSE {
                bail!("{name}: pipelineExecutableInfo is not supported");
            }
            // The same structures, filled in, chained again for creation.
            v11.p_next = std::ptr::null_mut();
            v12.p_next = std::ptr::null_mut();
            v13.p_next = std::ptr::null_mut();
            ex.p_next = std::ptr::null_mut();
            cm.p_next = std::ptr::null_mut();
            let mut f2 = vk::PhysicalDeviceFeatures2::default().features(base).push_next(&mut v11).push_next(&mut v12).push_next(&mut v13).push_next(&mut ex);
            if coop {
                f2 = f2.push_next(&mut cm);
            }
            let mut exts: Vec<*const c_char> = vec![stats_ext.as_ptr()];
            if coop {
                exts.push(coop_ext.as_ptr());
            }
            let family = instance
                .get_physical_device_queue_family_properties(pd)
                .iter()
                .position(|q| q.queue_flags.contains(vk::QueueFlags::COMPUTE))
                .ok_or_else(|| anyhow!("{name}: no compute queue"))? as u32;
            let prio = [1.0f32];
            let queues = [vk::DeviceQueueCreateInfo::default().queue_family_index(family).queue_priorities(&prio)];
            let info = vk::DeviceCreateInfo::default().queue_create_infos(&queues).enabled_extension_names(&exts).push_next(&mut f2);
            let device = instance.create_device(pd, &info, None).context("vkCreateDevice")?;
            let exec = ash::khr::pipeline_executable_properties::Device::new(instance, &device);
            Ok((device, exec, name))
        }
    }

    /// Compiles one variant with statistics capture on and formats what the driver reports.
    fn stats(&self, key: &PipelineKey, words: &[u32]) -> Result<String> {
        let d = &self.device;
        let bindings: Vec<vk::DescriptorSetLayoutBinding> = key
            .kernel
            .binds
            .iter()
            .enumerate()
            .map(|(i, b)| {
                vk::DescriptorSetLayoutBinding::default()
                    .binding(i as u32)
                    .descriptor_type(if matches!(b, Bind::Uniform) { vk::DescriptorType::UNIFORM_BUFFER } else { vk::DescriptorType::STORAGE_BUFFER })
                    .descriptor_count(1)
                    .stage_flags(vk::ShaderStageFlags::COMPUTE)
            })
            .collect();
        let entry = CString::new(key.kernel.entry)?;
        // SAFETY: plain object creation on our own device; each object is destroyed before return.
        unsafe {
            let set = d.create_descriptor_set_layout(&vk::DescriptorSetLayoutCreateInfo::default().bindings(&bindings), None)?;
            let sets = [set];
            let layout = d.create_pipeline_layout(&vk::PipelineLayoutCreateInfo::default().set_layouts(&sets), None);
            let module = d.create_shader_module(&vk::ShaderModuleCreateInfo::default().code(words), None);
            let result = match (layout, module) {
                (Ok(layout), Ok(module)) => {
                    let stage = vk::PipelineShaderStageCreateInfo::default().stage(vk::ShaderStageFlags::COMPUTE).module(module).name(&entry);
                    let info = vk::ComputePipelineCreateInfo::default().stage(stage).layout(layout).flags(vk::PipelineCreateFlags::CAPTURE_STATISTICS_KHR);
                    let r = match d.create_compute_pipelines(vk::PipelineCache::null(), &[info], None) {
                        Ok(p) => {
                            let r = self.describe(p[0]);
                            d.destroy_pipeline(p[0], None);
                            r
                        }
                        Err((_, e)) => Err(anyhow!("vkCreateComputePipelines: {e}")),
                    };
                    d.destroy_shader_module(module, None);
                    d.destroy_pipeline_layout(layout, None);
                    r
                }
                (l, m) => {
                    if let Ok(l) = l {
                        d.destroy_pipeline_layout(l, None);
                    }
                    if let Ok(m) = m {
                        d.destroy_shader_module(m, None);
                    }
                    Err(anyhow!("pipeline layout or shader module creation failed"))
                }
            };
            d.destroy_descriptor_set_layout(set, None);
            result
        }
    }

    fn describe(&self, pipeline: vk::Pipeline) -> Result<String> {
        // SAFETY: `pipeline` is live and was created with statistics capture; the union member
        // read is the one `format` names.
        unsafe {
            let execs = self.exec.get_pipeline_executable_properties(&vk::PipelineInfoKHR::default().pipeline(pipeline))?;
            let mut out = Vec::new();
            for i in 0..execs.len() as u32 {
                let stats = self.exec.get_pipeline_executable_statistics(&vk::PipelineExecutableInfoKHR::default().pipeline(pipeline).executable_index(i))?;
                for s in stats {
                    let name = CStr::from_ptr(s.name.as_ptr()).to_string_lossy().into_owned();
                    let value = match s.format {
                        vk::PipelineExecutableStatisticFormatKHR::BOOL32 => (s.value.b32 != 0).to_string(),
                        vk::PipelineExecutableStatisticFormatKHR::INT64 => s.value.i64.to_string(),
                        vk::PipelineExecutableStatisticFormatKHR::UINT64 => s.value.u64.to_string(),
                        vk::PipelineExecutableStatisticFormatKHR::FLOAT64 => format!("{:.3}", s.value.f64),
                        _ => "?".into(),
                    };
                    out.push(format!("{name}={value}"));
                }
            }
            Ok(if out.is_empty() { "no statistics".into() } else { out.join(", ") })
        }
    }
}

impl Drop for StatsDevice {
    fn drop(&mut self) {
        // SAFETY: nothing created on the device outlives `stats`.
        unsafe {
            self.device.destroy_device(None);
            self.instance.destroy_instance(None);
        }
    }
}
