// Shared by rope.wgsl and the GEMVs' fused rotary embedding (gemv_common.wgsl, ROPE).
// sin and cos of an f32 angle to ~1e-7, the same on every driver: WGSL only bounds the
// builtins' error inside [-pi, pi] (to 2^-11, and SwiftShader is ~1e-5 off there). Quadrant
// reduction with pi/2 split in three (Cody-Waite), then Taylor series on [-pi/4, pi/4].
fn sincos(ang: f32) -> vec2<f32> {
    let k = round(ang * 0.63661977236758134);
    let r = ((ang - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
    let r2 = r * r;
    let s = r + r * r2 * (-0.16666666666666666 + r2 * (0.008333333333333333 + r2 * (-1.984126984126984e-4 + r2 * 2.7557319223985893e-6)));
    let c = 1.0 + r2 * (-0.5 + r2 * (0.041666666666666664 + r2 * (-0.001388888888888889 + r2 * (2.48015873015873e-5 - r2 * 2.7557319223985888e-7))));
    switch (u32(i32(k) & 3)) {
        case 0u: { return vec2<f32>(s, c); }
        case 1u: { return vec2<f32>(c, -s); }
        case 2u: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}
