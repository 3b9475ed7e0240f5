// Decoding packed weight codes (src/quant): int4 codes 8 per u32, int8 codes 4 per u32, lowest
// bits first; scales are f16 in their own array, read as u32 words (no SHADER_F16 needed).
// Included by qmatmul.wgsl and qembed.wgsl, which declare `scales: array<u32>`.
// Codes become floats without an int-to-float conversion (quarter rate on NVIDIA, and what
// bounded the int4 GEMV): a code OR-ed into the low mantissa bits of 2^23 reads as 2^23 + code,
// so one subtraction gives it exactly.
const MAGIC: u32 = 0x4B000000u;
const MAGIC_F: f32 = 8388608.0;

// Codes 0..3 and 4..7 of an int4 word, minus `off` (exact: all terms are integers below 2^24).
fn nib_lo_minus(w: u32, off: f32) -> vec4<f32> {
    let q = (vec4<u32>(w) >> vec4<u32>(0u, 4u, 8u, 12u)) & vec4<u32>(15u);
    return bitcast<vec4<f32>>(q | vec4<u32>(MAGIC)) - vec4<f32>(MAGIC_F + off);
}
fn nib_hi_minus(w: u32, off: f32) -> vec4<f32> {
    return nib_lo_minus(w >> 16u, off);
}
fn nib_lo(w: u32) -> vec4<f32> {
    return nib_lo_minus(w, 0.0);
}
fn nib_hi(w: u32) -> vec4<f32> {
    return nib_lo_minus(w >> 16u, 0.0);
}

// The four signed bytes of an int8 word: byte ^ 0x80 is the byte plus 128, as an unsigned code.
fn bytes4(w: u32) -> vec4<f32> {
    let b = ((vec4<u32>(w) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(255u)) ^ vec4<u32>(128u);
    return bitcast<vec4<f32>>(b | vec4<u32>(MAGIC)) - vec4<f32>(MAGIC_F + 128.0);
}

// Scale i of an array of f16 scales; (d, m) pair i of an array of pairs.
fn scale_half(i: u32) -> f32 {
    let pair = unpack2x16float(scales[i >> 1u]);
    return select(pair.x, pair.y, (i & 1u) == 1u);
}
fn scale_pair(i: u32) -> vec2<f32> {
    return unpack2x16float(scales[i]);
}
