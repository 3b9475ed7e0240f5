//! Cooperative matrices emulated in plain WGSL, so the tensor-core kernels run on adapters
//! without them (slowly): lavapipe then checks their index arithmetic against the f64
//! references, which before only a lent GPU could. Opt-in with `DSVL_EMULATE_COOP=1`, for tests.
//!
//! The 32 invocations of a nominal subgroup (local index / 32) share each 16x16 matrix as the
//! hardware does, 8 values each: lane l holds row l / 2, columns 8 (l % 2) to 8 (l % 2) + 7.
//! A multiply passes both operands through workgroup memory between two barriers (so it needs
//! the uniform control flow that cooperative operations need anyway); loads and stores touch
//! only the lane's own elements, so a kernel that reads another lane's stores without a barrier
//! fails here as it may on hardware. f16 operands are exact in f32; sums are f32, as the
//! hardware's. `coopLoad`/`coopStore` are column-major, the `T` forms row-major (naga's
//! reading), with offsets and strides in elements of the array they point into (a vec4 slot
//! counts as one element of 4 values).
//!
//! (Lanes holding whole operands instead, so that a multiply needs no exchange, made lavapipe
//! take twice as long to compile the attention kernel: 270 s against 140.)

use crate::error::{Error, Result};

/// The emulated matrix, whatever its role: a lane's 8 values.
const MAT: &str = "CoopEmu";
/// The matrix types emulated: f16 operands, f32 accumulators.
const TYPES: [&str; 3] = ["f16,A", "f16,B", "f32,C"];

/// `src` (preprocessed) with every cooperative-matrix type, load, store and multiply replaced,
/// and the entry point's subgroup builtins derived from its local invocation index.
pub fn rewrite(shader: &str, src: &str) -> Result<String> {
    let err = |m: String| Error::Shader { shader: shader.into(), message: format!("cooperative-matrix emulation: {m}") };
    if let Some(op) = ["subgroupAdd", "subgroupBroadcast", "subgroupShuffle", "subgroupMax", "subgroupMin"].iter().find(|op| src.contains(*op)) {
        return Err(err(format!("{op} needs real 32-wide subgroups")));
    }
    let mut rest = src;
    while let Some(at) = rest.find("coop_mat16x16<") {
        let open = at + "coop_mat16x16".len();
        let close = closing_angle(rest, open).ok_or_else(|| err("unclosed coop_mat16x16<".into()))?;
        let ty = rest[open + 1..close].replace(' ', "");
        if !TYPES.contains(&ty.as_str()) {
            return Err(err(format!("matrix type `{ty}` is not emulated")));
        }
        rest = &rest[close..];
    }
    // Comments may name the functions being replaced; WGSL has no string literals to spare.
    let src: String = src.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let src = src.replace("enable wgpu_cooperative_matrix;", "");
    let src = rewrite_builtins(&src).map_err(err)?;
    let mut accessors: Vec<Accessor> = Vec::new();
    let src = rewrite_calls(&src, &mut accessors).map_err(err)?;
    let src = replace_types(&src);
    let size = workgroup_size(&src).ok_or_else(|| err("a literal 1-D @workgroup_size that is a multiple of 32 is needed".into()))?;
    let mut out = src;
    out.push_str(&format!("\nalias {MAT} = array<f32, 8>;"));
    // Loop bounds come from a variable set at run time (8), so they are not unrolled at every
    // inlined call site: lavapipe's cold compile of the attention check went 152 -> 138 s.
    out.push_str("\nvar<private> coop_emu_lane: u32;\nvar<private> coop_emu_sg: u32;\nvar<private> coop_emu_n: u32;\n");
    // Per nominal subgroup: an A and a B operand (f16: what they hold is f16).
    out.push_str(&format!("var<workgroup> coop_emu_x: array<f16, {}>;\n", size / 32 * 512));
    out.push_str(MAD);
    for (name, store, row_major) in &accessors {
        let elem = element_type(&out, name).ok_or_else(|| err(format!("no array declaration for `{name}`")))?;
        out.push_str(&accessor(name, &elem, *store, *row_major).map_err(err)?);
    }
    Ok(out)
}

const MAD: &str = "
fn coop_emu_mad(a: CoopEmu, b: CoopEmu, c: CoopEmu) -> CoopEmu {
    let base = coop_emu_sg * 512u;
    let own = coop_emu_lane * 8u;
    for (var j = 0u; j < coop_emu_n; j++) {
        coop_emu_x[base + own + j] = f16(a[j]);
        coop_emu_x[base + 256u + own + j] = f16(b[j]);
    }
    workgroupBarrier();
    let row = coop_emu_lane / 2u;
    let col = (coop_emu_lane % 2u) * 8u;
    var d = c;
    for (var j = 0u; j < coop_emu_n; j++) {
        var s = d[j];
        for (var k = 0u; k < 2u * coop_emu_n; k++) {
            s = fma(f32(coop_emu_x[base + row * 16u + k]), f32(coop_emu_x[base + 256u + k * 16u + col + j]), s);
        }
        d[j] = s;
    }
    workgroupBarrier();
    return d;
}
";

/// Index of the bracket closing the one at `open` (`(` or `[`; both kinds counted).
fn closing(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, ch) in s[open..].char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Index of the `>` closing the template `<` at `open`.
fn closing_angle(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (i, ch) in s[open..].char_indices() {
        match ch {
            '<' => depth += 1,
            '>' => {
                depth -= 1;
                if depth == 0 {
                    return Some(open + i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits an argument list at its top-level commas.
fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = s[start..].trim();
    if !last.is_empty() {
        out.push(last);
    }
    out
}

/// `&name[index]` → (name, index).
fn pointer_arg(arg: &str) -> std::result::Result<(&str, &str), String> {
    let a = arg.strip_prefix('&').ok_or_else(|| format!("`{arg}`: expected `&array[index]`"))?.trim();
    let open = a.find('[').ok_or_else(|| format!("`{arg}`: expected `&array[index]`"))?;
    let name = a[..open].trim();
    if closing(a, open) != Some(a.len() - 1) || name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!("`{arg}`: expected `&array[index]`"));
    }
    Ok((name, &a[open + 1..a.len() - 1]))
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// (array, store, row-major) of a load or store function the rewritten source calls.
type Accessor = (String, bool, bool);

/// Rewrites `coopLoad[T]<type>(&a[i], stride)`, `coopStore[T](m, &a[i], stride)` and
/// `coopMultiplyAdd(...)`, recording which accessors are needed.
fn rewrite_calls(src: &str, accessors: &mut Vec<Accessor>) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("coop") {
        out.push_str(&rest[..at]);
        let word_start = !out.chars().next_back().is_some_and(is_ident_char);
        let name_len = rest[at..].find(|c: char| !is_ident_char(c)).unwrap_or(rest.len() - at);
        let name = &rest[at..at + name_len];
        let op = match name {
            "coopLoad" | "coopLoadT" | "coopStore" | "coopStoreT" if word_start => name,
            "coopMultiplyAdd" if word_start => {
                out.push_str("coop_emu_mad");
                rest = &rest[at + name_len..];
                continue;
            }
            _ => {
                out.push_str(name);
                rest = &rest[at + name_len..];
                continue;
            }
        };
        let mut after = at + name_len;
        // A load's matrix type (checked in `rewrite`): every role loads alike.
        if rest[after..].starts_with('<') {
            after = closing_angle(rest, after).ok_or_else(|| format!("{op}: unclosed template"))? + 1;
        }
        if !rest[after..].starts_with('(') {
            return Err(format!("{op}: expected `(`"));
        }
        let close = closing(rest, after).ok_or_else(|| format!("{op}: unclosed call"))?;
        let args = split_args(&rest[after + 1..close]);
        let row_major = op.ends_with('T');
        let store = op.starts_with("coopStore");
        let (matrix, ptr, stride) = match (store, args.as_slice()) {
            (false, [p, s]) => (None, *p, *s),
            (true, [m, p, s]) => (Some(*m), *p, *s),
            _ => return Err(format!("{op}: expected {} arguments with the stride given", if store { 3 } else { 2 })),
        };
        let (array, index) = pointer_arg(ptr)?;
        let func = accessor_name(array, store, row_major);
        // The index and stride may hold further calls (none are cooperative ones today).
        let index = rewrite_calls(index, accessors)?;
        let stride = rewrite_calls(stride, accessors)?;
        match matrix {
            Some(m) => out.push_str(&format!("{func}({}, {index}, {stride})", rewrite_calls(m, accessors)?)),
            None => out.push_str(&format!("{func}({index}, {stride})")),
        }
        let key = (array.to_string(), store, row_major);
        if !accessors.contains(&key) {
            accessors.push(key);
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn accessor_name(array: &str, store: bool, row_major: bool) -> String {
    format!("coop_emu_{}{}_{array}", if store { "store" } else { "load" }, if row_major { "T" } else { "" })
}

/// Every `coop_mat16x16<...>` becomes the emulated matrix type.
fn replace_types(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(at) = rest.find("coop_mat16x16<") {
        out.push_str(&rest[..at]);
        out.push_str(MAT);
        // `rewrite` found every template closed.
        let close = closing_angle(rest, at + "coop_mat16x16".len()).unwrap_or(rest.len() - 1);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The entry point's `@builtin(subgroup_id)` and `@builtin(subgroup_invocation_id)` parameters
/// become `let`s over its local invocation index (32 invocations per nominal subgroup).
fn rewrite_builtins(src: &str) -> std::result::Result<String, String> {
    let Some(b) = src.find("@builtin(subgroup_id)").or_else(|| src.find("@builtin(subgroup_invocation_id)")) else {
        return Ok(src.to_string());
    };
    let fn_at = src[..b].rfind("fn ").ok_or("subgroup builtin outside a function")?;
    let open = fn_at + src[fn_at..].find('(').ok_or("entry point without parameters")?;
    let close = closing(src, open).ok_or("unclosed parameter list")?;
    let mut kept = Vec::new();
    let (mut sid, mut lane, mut lid) = (None, None, None);
    for param in split_args(&src[open + 1..close]) {
        let name_of = |p: &str| p.split(')').nth(1).and_then(|r| r.split(':').next()).map(|n| n.trim().to_string());
        if param.contains("@builtin(subgroup_id)") {
            sid = name_of(param);
        } else if param.contains("@builtin(subgroup_invocation_id)") {
            lane = name_of(param);
        } else {
            if param.contains("@builtin(local_invocation_index)") {
                lid = name_of(param);
            }
            kept.push(param.to_string());
        }
    }
    let lid = lid.unwrap_or_else(|| {
        kept.push("@builtin(local_invocation_index) coop_emu_lid: u32".into());
        "coop_emu_lid".into()
    });
    let body = close + src[close..].find('{').ok_or("entry point without a body")?;
    let mut lets = format!(" coop_emu_lane = {lid} % 32u; coop_emu_sg = {lid} / 32u; coop_emu_n = 8u;");
    if let Some(s) = sid {
        lets += &format!(" let {s} = {lid} / 32u;");
    }
    if let Some(l) = lane {
        lets += &format!(" let {l} = {lid} % 32u;");
    }
    if src[body..].contains("@builtin(subgroup") {
        return Err("subgroup builtins in more than one entry point".into());
    }
    Ok(format!("{}({}){}{{{lets}{}", &src[..open], kept.join(", "), &src[close + 1..body], &src[body + 1..]))
}

/// The entry point's workgroup size: a literal, 1-D, a multiple of 32.
fn workgroup_size(src: &str) -> Option<u32> {
    let at = src.find("@workgroup_size(")? + "@workgroup_size(".len();
    let n: u32 = src[at..].split(')').next()?.trim().trim_end_matches('u').parse().ok()?;
    (n > 0 && n.is_multiple_of(32)).then_some(n)
}

/// The element type of the module-scope array `name` (`var<...> name: array<T, N>`).
fn element_type(src: &str, name: &str) -> Option<String> {
    let pat = format!(" {name}: array<");
    let at = src.lines().find(|l| l.find(&pat).is_some_and(|i| l[..i].contains("var")))?;
    let start = at.find(&pat)? + pat.len() - 1;
    let close = closing_angle(at, start)?;
    let inner = &at[start + 1..close];
    // Up to the top-level comma (the length), if any.
    let mut depth = 0;
    for (i, ch) in inner.char_indices() {
        match ch {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth == 0 => return Some(inner[..i].trim().to_string()),
            _ => {}
        }
    }
    Some(inner.trim().to_string())
}

/// The load or store function for array `name` of `elem` elements.
fn accessor(name: &str, elem: &str, store: bool, row_major: bool) -> std::result::Result<String, String> {
    let (unit, scalar) = match elem {
        "f16" | "f32" => (1u32, elem),
        "vec4<f16>" => (4, "f16"),
        "vec4<f32>" => (4, "f32"),
        "vec2<f16>" => (2, "f16"),
        "vec2<f32>" => (2, "f32"),
        _ => return Err(format!("array `{name}` of {elem}: not emulated")),
    };
    let at = if unit == 1 { format!("{name}[i]") } else { format!("{name}[i / {unit}u][i % {unit}u]") };
    // Element (r, c): rows (row-major) or columns are `stride` elements apart.
    let index = if row_major { format!("(at + r * stride) * {unit}u + c") } else { format!("(at + c * stride) * {unit}u + r") };
    let fname = accessor_name(name, store, row_major);
    let (sig, decl, body, ret) = if store {
        (format!("fn {fname}(m: {MAT}, at: u32, stride: u32)"), String::new(), format!("{at} = {scalar}(m[j]);"), "")
    } else {
        (format!("fn {fname}(at: u32, stride: u32) -> {MAT}"), format!("\n    var m: {MAT};"), format!("m[j] = f32({at});"), "\n    return m;")
    };
    Ok(format!(
        "
{sig} {{{decl}
    for (var j = 0u; j < coop_emu_n; j++) {{
        let r = coop_emu_lane / 2u;
        let c = (coop_emu_lane % 2u) * 8u + j;
        let i = {index};
        {body}
    }}{ret}
}}
"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_loads_stores_types_and_builtins() {
        let src = "enable f16;\nenable wgpu_cooperative_matrix;\nvar<workgroup> t: array<vec4<f16>, 64>;\nvar<workgroup> s: array<f32, 256>;\n\
            @compute @workgroup_size(128)\nfn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_id) sid: u32, @builtin(subgroup_invocation_id) lane: u32) {\n\
            var c: coop_mat16x16<f32, C>;\n\
            c = coopMultiplyAdd(coopLoadT<coop_mat16x16<f16, A>>(&t[sid * 4u], 2u), coopLoad<coop_mat16x16<f16, B>>(&t[min(lane, 3u)], 2u), c);\n\
            coopStoreT(c, &s[0], 16u);\n}\n";
        let out = rewrite("t", src).unwrap();
        assert!(out.contains("fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) coop_emu_lid: u32) { coop_emu_lane = coop_emu_lid % 32u; coop_emu_sg = coop_emu_lid / 32u; coop_emu_n = 8u; let sid = coop_emu_lid / 32u; let lane = coop_emu_lid % 32u;"), "{out}");
        assert!(out.contains("c = coop_emu_mad(coop_emu_loadT_t(sid * 4u, 2u), coop_emu_load_t(min(lane, 3u), 2u), c);"), "{out}");
        assert!(out.contains("coop_emu_storeT_s(c, 0, 16u);") && out.contains("var c: CoopEmu;"), "{out}");
        assert!(!out.contains("coop_mat") && !out.contains("wgpu_cooperative_matrix"), "{out}");
        naga::front::wgsl::parse_str(&out).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&out)));
    }

    #[test]
    fn refuses_what_it_cannot_emulate() {
        assert!(rewrite("t", "fn f() { let x = coopLoad<coop_mat16x16<f16, A>>(q, 4u); }").is_err());
        assert!(rewrite("t", "fn f() { let x = subgroupAdd(1.0); }").is_err());
        assert!(rewrite("t", "fn f() { var x: coop_mat16x16<f16, C>; }").is_err());
        assert!(rewrite("t", "fn f() { let x = coopLoad<coop_mat16x16<f16, A>>(&nowhere[0], 4u); }").is_err());
    }
}
