// Interpolation: resize_pass, one pass of a separable antialiased resize (PIL's bicubic of an 8-bit
// RGB image, torch's antialiased bilinear of a float image), filtering along x (default) or y
// (flag AXIS_V). The filter windows and coefficients are
// computed on the CPU (as PIL does) and stored in `plan` (u32 words): for output index i,
// bounds[2i] = first source index, bounds[2i+1] = count, and coef[i * ksize + t] = coefficient
// of source index first + t. With flag PIL8 coefficients are i32 fixed point with 22 fractional
// bits and the pass rounds and clamps to 0..255 exactly as PIL's 8-bit path does; without it
// they are f32 bits and values stay unrounded.
// The source is the image's packed RGB bytes (flag SRC_U8: row-major, 3 bytes per pixel, 4
// bytes per u32 word, pixel (x, y) at byte (y * src_row + x) * 3) or a planar f32 image of
// `chans` channels (value at c * src_plane + y * src_row + x). Output pixel (ox, oy) of the
// out_w x out_h pass reads source row oy + y0 (x pass) or column ox (y pass) and is written
// planar at dst_off + c * dst_plane + oy * dst_row + ox. A thread filters one pixel of 3
// channels (a group: channels 3g .. 3g + 2, fewer in the last group of a planar source).


struct ResizeParams {
    out_w: u32,
    out_h: u32,
    y0: u32,
    ksize: u32,
    bounds_off: u32,
    coef_off: u32,
    src_row: u32,
    src_plane: u32,
    dst_off: u32,
    dst_row: u32,
    dst_plane: u32,
    chans: u32,
}

@group(0) @binding(0) var<uniform> p: ResizeParams;
#ifdef SRC_U8
@group(0) @binding(1) var<storage, read> src: array<u32>;
#else
@group(0) @binding(1) var<storage, read> src: array<f32>;
#endif
@group(0) @binding(2) var<storage, read> plan: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

// PIL's 8-bit pass: fixed-point sums start at one half; the result is the integer part, clamped.
#ifdef PIL8
alias Acc = vec3<i32>;
fn acc_init() -> Acc {
    return vec3<i32>(1 << 21u);
}
fn acc_add(a: Acc, v: vec3<f32>, k: u32) -> Acc {
    return a + vec3<i32>(v) * bitcast<i32>(k);
}
fn acc_done(a: Acc) -> vec3<f32> {
    return vec3<f32>(clamp(a >> vec3<u32>(22u), vec3<i32>(0), vec3<i32>(255)));
}
#else
alias Acc = vec3<f32>;
fn acc_init() -> Acc {
    return vec3<f32>(0.0);
}
fn acc_add(a: Acc, v: vec3<f32>, k: u32) -> Acc {
    return fma(v, vec3<f32>(bitcast<f32>(k)), a);
}
fn acc_done(a: Acc) -> vec3<f32> {
    return a;
}
#endif

// Channels ch0 .. ch0 + 2 of source pixel (x, y) (zero past the last channel).
#ifdef SRC_U8
fn byte_at(i: u32) -> u32 {
    return (src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}
fn pixel(x: u32, y: u32, ch0: u32) -> vec3<f32> {
    let b = (y * p.src_row + x) * 3u;
    return vec3<f32>(f32(byte_at(b)), f32(byte_at(b + 1u)), f32(byte_at(b + 2u)));
}
#else
fn pixel(x: u32, y: u32, ch0: u32) -> vec3<f32> {
    let i = ch0 * p.src_plane + y * p.src_row + x;
    var v = vec3<f32>(src[i], 0.0, 0.0);
    if (ch0 + 1u < p.chans) {
        v.y = src[i + p.src_plane];
    }
    if (ch0 + 2u < p.chans) {
        v.z = src[i + 2u * p.src_plane];
    }
    return v;
}
#endif

@compute @workgroup_size(256)
fn resize_pass(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + lid;
    let px = p.out_w * p.out_h;
    if (i >= px * ((p.chans + 2u) / 3u)) {
        return;
    }
    let ch0 = 3u * (i / px);
    let ox = i % p.out_w;
    let oy = (i % px) / p.out_w;
#ifdef AXIS_V
    let o = oy;
#else
    let o = ox;
#endif
    let first = plan[p.bounds_off + 2u * o];
    let count = plan[p.bounds_off + 2u * o + 1u];
    var acc = acc_init();
    for (var t = 0u; t < count; t++) {
#ifdef AXIS_V
        let v = pixel(ox, first + t, ch0);
#else
        let v = pixel(first + t, oy + p.y0, ch0);
#endif
        acc = acc_add(acc, v, plan[p.coef_off + o * p.ksize + t]);
    }
    let r = acc_done(acc);
    let d = p.dst_off + ch0 * p.dst_plane + oy * p.dst_row + ox;
    dst[d] = r.x;
    if (ch0 + 1u < p.chans) {
        dst[d + p.dst_plane] = r.y;
    }
    if (ch0 + 2u < p.chans) {
        dst[d + 2u * p.dst_plane] = r.z;
    }
}
