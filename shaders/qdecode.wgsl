// Decoding packed weight codes (src/quant): int4 codes 8 per u32, int8 codes 4 per u32, lowest
// bits first; scales are f16 in their own array, read as u32 words (no SHADER_F16 needed).
// Included by qmatmul.wgsl and qembed.wgsl, which declare `scales: array<u32>`.

// Codes 0..3 and 4..7 of an int4 word.
fn nib_lo(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u));
}
fn nib_hi(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(w) >> vec4<u32>(16u, 20u, 24u, 28u)) & vec4<u32>(15u));
}

// The four signed bytes of an int8 word (shift each to the top, then arithmetic shift down).
fn bytes4(w: u32) -> vec4<f32> {
    return vec4<f32>((vec4<i32>(bitcast<i32>(w)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u));
}

// Scale i of an array of f16 scales; (d, m) pair i of an array of pairs.
fn scale_half(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
fn scale_pair(i: u32) -> vec2<f32> {
    return unpack2x16float(scales[i]);
}
