//! WGSL sources and the one small preprocessor that specialises them.
//!
//! Supported lines: `#ifdef NAME`, `#ifndef NAME`, `#else`, `#endif` (nestable) and
//! `#include NAME` (a snippet from `INCLUDES`, for code two shaders share). A variant
//! with the flag `F16` gets `enable f16;` prepended. `SUBGROUPS` variants get no directive:
//! naga 30 rejects `enable subgroups;` and gates the builtins by the device feature instead
//! (wgpu 30 does not expose subgroups in the browser, so those variants are native-only).
//! Numeric knobs use WGSL `override` constants instead.

use crate::error::{Error, Result};

/// Every shader file, by name. Kept in one place so tests can validate them all.
pub const SOURCES: &[(&str, &str)] = &[
    ("elementwise", include_str!("../../shaders/elementwise.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("matmul_coop", include_str!("../../shaders/matmul_coop.wgsl")),
    ("norm", include_str!("../../shaders/norm.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("attention_decode", include_str!("../../shaders/attention_decode.wgsl")),
    ("attention_coop", include_str!("../../shaders/attention_coop.wgsl")),
    ("im2col", include_str!("../../shaders/im2col.wgsl")),
    ("matmul_coop_staged", include_str!("../../shaders/matmul_coop_staged.wgsl")),
    ("qmatmul_coop", include_str!("../../shaders/qmatmul_coop.wgsl")),
    ("interp", include_str!("../../shaders/interp.wgsl")),
    ("embedding", include_str!("../../shaders/embedding.wgsl")),
    ("sample", include_str!("../../shaders/sample.wgsl")),
    ("bandwidth", include_str!("../../shaders/bandwidth.wgsl")),
    ("convert", include_str!("../../shaders/convert.wgsl")),
    ("patchify", include_str!("../../shaders/patchify.wgsl")),
    ("kv", include_str!("../../shaders/kv.wgsl")),
    ("normalise", include_str!("../../shaders/normalise.wgsl")),
    ("qmatmul", include_str!("../../shaders/qmatmul.wgsl")),
    ("qembed", include_str!("../../shaders/qembed.wgsl")),
    ("window", include_str!("../../shaders/window.wgsl")),
    ("quantise", include_str!("../../shaders/quantise.wgsl")),
];

/// Snippets inserted by `#include NAME`.
pub const INCLUDES: &[(&str, &str)] = &[
    ("gelu", include_str!("../../shaders/gelu.wgsl")),
    ("qmatmul_params", include_str!("../../shaders/qmatmul_params.wgsl")),
    ("coop_stage", include_str!("../../shaders/coop_stage.wgsl")),
    ("coop_main", include_str!("../../shaders/coop_main.wgsl")),
    ("coop_mma", include_str!("../../shaders/coop_mma.wgsl")),
    ("attn_params", include_str!("../../shaders/attn_params.wgsl")),
    ("epilogue", include_str!("../../shaders/epilogue.wgsl")),
    ("matmul_params", include_str!("../../shaders/matmul_params.wgsl")),
    ("qdecode", include_str!("../../shaders/qdecode.wgsl")),
    ("gemv_common", include_str!("../../shaders/gemv_common.wgsl")),
    ("sincos", include_str!("../../shaders/sincos.wgsl")),
];

pub fn source(name: &str) -> Result<&'static str> {
    SOURCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| Error::Shader { shader: name.into(), message: "no such shader file".into() })
}

/// Includes inside includes, at most (a snippet including itself would never end).
const MAX_INCLUDE_DEPTH: usize = 3;

/// Pastes every `#include` (includes may include, to `MAX_INCLUDE_DEPTH`), so the directives
/// inside an include see the same flags as the shader's own.
fn paste_includes(name: &str, src: &str) -> Result<String> {
    paste_at(name, src, 0)
}

fn paste_at(name: &str, src: &str, depth: usize) -> Result<String> {
    let mut out = String::with_capacity(src.len() + 4096);
    for (i, line) in src.lines().enumerate() {
        if let Some(rest) = line.trim_start().strip_prefix("#include ") {
            let inc = INCLUDES
                .iter()
                .find(|(n, _)| *n == rest.trim())
                .ok_or_else(|| Error::Shader { shader: name.into(), message: format!("line {}: unknown #include", i + 1) })?;
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(Error::Shader { shader: name.into(), message: format!("#include {} nested deeper than {MAX_INCLUDE_DEPTH}", inc.0) });
            }
            out.push_str(&paste_at(name, inc.1, depth + 1)?);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

/// Expands the preprocessor lines of `src` for the given flags.
pub fn preprocess(name: &str, src: &str, flags: &[&str]) -> Result<String> {
    let src = &paste_includes(name, src)?;
    let mut out = String::with_capacity(src.len() + 64);
    if flags.contains(&"F16") {
        out.push_str("enable f16;\n");
    }
    // Stack of (this branch active, parent active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |s: &Vec<(bool, bool)>| s.last().is_none_or(|&(a, p)| a && p);
    for (i, line) in src.lines().enumerate() {
        let t = line.trim_start();
        let err = |m: &str| Error::Shader { shader: name.into(), message: format!("line {}: {m}", i + 1) };
        if let Some(rest) = t.strip_prefix("#ifdef ") {
            let p = active(&stack);
            stack.push((flags.contains(&rest.trim()), p));
        } else if let Some(rest) = t.strip_prefix("#ifndef ") {
            let p = active(&stack);
            stack.push((!flags.contains(&rest.trim()), p));
        } else if t.starts_with("#else") {
            let top = stack.last_mut().ok_or_else(|| err("#else without #ifdef"))?;
            top.0 = !top.0;
        } else if t.starts_with("#endif") {
            stack.pop().ok_or_else(|| err("#endif without #ifdef"))?;
        } else if t.starts_with('#') {
            return Err(err("unknown directive"));
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        } else {
            // Keep line numbers stable so compiler messages point at the source line.
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(Error::Shader { shader: name.into(), message: "unterminated #ifdef".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_branches() {
        let src = "a\n#ifdef X\nb\n#ifndef Y\nc\n#else\nd\n#endif\n#else\ne\n#endif\nf\n";
        let keep = |s: String| s.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>().join(",");
        assert_eq!(keep(preprocess("t", src, &[]).unwrap()), "a,e,f");
        assert_eq!(keep(preprocess("t", src, &["X"]).unwrap()), "a,b,c,f");
        assert_eq!(keep(preprocess("t", src, &["X", "Y"]).unwrap()), "a,b,d,f");
        assert!(preprocess("t", "#ifdef X\n", &[]).is_err());
        assert!(preprocess("t", "#endif\n", &[]).is_err());
        assert!(preprocess("t", "#define X\n", &[]).is_err());
        assert!(preprocess("t", "#include nope\n", &[]).is_err());
        assert!(preprocess("t", "#include gelu\n", &[]).unwrap().contains("fn gelu_erf_f"));
        // Nested: coop_main pastes coop_mma, whose BN64 branch the flags pick.
        let nested = preprocess("t", "#include coop_main\n", &["BN64"]).unwrap();
        assert!(nested.contains("c11 = coopMultiplyAdd(a1, b1, c11)") && !nested.contains("c13 = coopMultiplyAdd"));
        assert!(preprocess("t", "x", &["F16"]).unwrap().starts_with("enable f16;"));
    }
}
