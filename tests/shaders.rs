//! Shader checks that need no GPU: every pipeline variant preprocesses, parses and validates
//! with naga and translates to SPIR-V as wgpu does for Vulkan (so the tensor-core variants, which
//! lavapipe cannot run, are translated too), every shader file is used, and every Rust parameter
//! struct matches its WGSL twin.

use dsvl_gpu::gpu::shader;
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn parse(label: &str, src: &str) -> naga::Module {
    naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(src)))
}

#[test]
fn every_variant_validates() {
    let variants = dsvl_gpu::ops::all_variants();
    assert!(!variants.is_empty());
    for key in &variants {
        let src = key.wgsl().unwrap_or_else(|e| panic!("{key}: {e}"));
        let module = parse(&key.to_string(), &src);
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{key}: {}", e.emit_to_string(&src)));
        // As wgpu does on Vulkan: the key's override constants applied, then SPIR-V 1.6 (what
        // it writes for a Vulkan 1.3 device such as the H200's).
        let mut constants = naga::back::PipelineConstants::default();
        for (name, value) in &key.constants {
            constants.insert(name.to_string(), f64::from(*value));
        }
        let entry = (naga::ShaderStage::Compute, key.kernel.entry);
        let (module, info) = naga::back::pipeline_constants::process_overrides(&module, &info, Some(entry), &constants)
            .unwrap_or_else(|e| panic!("{key}: overrides: {e}"));
        let spv = naga::back::spv::Options { lang_version: (1, 6), ..Default::default() };
        let stage = naga::back::spv::PipelineOptions { entry_point: key.kernel.entry.to_string(), shader_stage: naga::ShaderStage::Compute };
        let words = naga::back::spv::write_vec(&module, &info, &spv, Some(&stage)).unwrap_or_else(|e| panic!("{key}: SPIR-V: {e}"));
        assert_eq!(words.first(), Some(&0x0723_0203), "{key}: not a SPIR-V module");
        assert!(
            module.entry_points.iter().any(|ep| ep.name == key.kernel.entry),
            "{key}: no entry point {}",
            key.kernel.entry
        );
        // Bindings the shader declares must match the kernel's declared binding list.
        for (_, var) in module.global_variables.iter() {
            if let Some(b) = &var.binding {
                assert_eq!(b.group, 0, "{key}: only group 0 is used");
                assert!((b.binding as usize) < key.kernel.binds.len(), "{key}: binding {} not declared in Rust", b.binding);
            }
        }
    }
    for (name, _) in shader::SOURCES {
        assert!(variants.iter().any(|k| k.kernel.shader == *name), "shader {name} is never used by an op");
    }
}

/// Every tensor-core variant also rewrites into valid plain WGSL for `gpu::coop_emu` (what
/// tests/coop_emulated.rs runs on lavapipe), including those too big for lavapipe's 32 KiB.
#[test]
fn every_tensor_core_variant_emulates() {
    let mut n = 0;
    for key in dsvl_gpu::ops::all_variants() {
        let src = key.wgsl().unwrap();
        if !src.contains("wgpu_cooperative_matrix") {
            continue;
        }
        let out = dsvl_gpu::gpu::coop_emu::rewrite(key.kernel.shader, &src).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(!out.contains("coop_mat16x16") && !out.contains("coopLoad") && !out.contains("subgroup_id"), "{key}: not fully rewritten");
        let module = parse(&format!("{key} (emulated)"), &out);
        Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{key} (emulated): {}", e.emit_to_string(&out)));
        n += 1;
    }
    assert!(n >= 10, "only {n} tensor-core variants");
}

#[test]
fn param_structs_match_wgsl() {
    for (file, wgsl_name, size, fields) in dsvl_gpu::ops::param_layouts() {
        let src = shader::preprocess(file, shader::source(file).unwrap(), &[]).unwrap();
        let module = parse(file, &src);
        let (_, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(wgsl_name))
            .unwrap_or_else(|| panic!("{file}: no struct {wgsl_name}"));
        let naga::TypeInner::Struct { members, span } = &ty.inner else { panic!("{wgsl_name} is not a struct") };
        let wgsl: Vec<(String, usize)> =
            members.iter().map(|m| (m.name.clone().unwrap_or_default(), m.offset as usize)).collect();
        let rust: Vec<(String, usize)> = fields.iter().map(|(n, o)| (n.to_string(), *o)).collect();
        assert_eq!(rust, wgsl, "{file}::{wgsl_name}: Rust fields/offsets differ from WGSL");
        assert_eq!(size, *span as usize, "{file}::{wgsl_name}: Rust size {size} vs WGSL span {span}");
    }
}
