// Load-time quantisation: rows of a checkpoint matrix, uploaded as the file's bytes (bf16, f16
// or f32 in u32 words), into the packed codes and f16 scales the qmatmul kernels read
// (src/quant). One invocation per (row, group) runs the CPU twin (src/quant/cpu.rs) step for
// step, summing in the same order, so the codes and scales come out bit-identical:
// - f32 +, -, * are correctly rounded in WGSL, but a compiler may fuse a*b+c into one fma
//   (one rounding instead of two). `keep` hides every product that feeds a sum behind an OR
//   with a uniform zero, so it is rounded on its own as on the CPU.
// - `/` may be off by 2.5 ulp in WGSL: `div_rn` divides exactly (integer long division).
// - f32 -> f16 rounding, f16 -> f32 and round-half-away-from-zero are integer bit operations,
//   whatever the implementation's conversions do.
// What is left open: implementations may flush subnormal f32 values (below 1.2e-38) to zero.
// Entry points: quant_q8 (q8c / q8gN), quant_q4 (q4gN), quant_q4z (q4gNz). Source dtype flags:
// SRC_BF16, SRC_F16, or neither for f32.

struct QuantParams {
    // Rows in this chunk, columns per row.
    rows: u32,
    cols: u32,
    // Row of the part (codes, scales) the chunk's first row goes to.
    out_row0: u32,
    // Row of the whole matrix the chunk's first row is, for the non-finite report.
    row_base: u32,
    group: u32,
    row_words: u32,
    row_groups: u32,
    // Always 0: the opaque operand of `keep`.
    zero: u32,
    // The CPU twin's constants (quant::cpu): the floor of the sum of squared codes, the
    // number of candidate steps and their numerators.
    tiny: f32,
    fit_steps: u32,
    _pad0: u32,
    _pad1: u32,
    steps: array<vec4<f32>, 3>,
}

@group(0) @binding(0) var<uniform> p: QuantParams;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> codes: array<u32>;
// f16 scales, two per word. Symmetric formats with an odd number of scales per row share words
// between rows, so they are OR-ed in (the part's buffer starts zeroed).
@group(0) @binding(3) var<storage, read_write> scales: array<atomic<u32>>;
// The lowest row (of the whole matrix) holding a non-finite value; u32::MAX when none.
@group(0) @binding(4) var<storage, read_write> bad: array<atomic<u32>>;

// A product rounded on its own (never fused into the sum it feeds).
fn keep(x: f32) -> f32 {
    return bitcast<f32>(bitcast<u32>(x) | p.zero);
}

// f16 bits -> f32, exactly.
fn h2f(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    if (e == 0u) {
        // Zero or subnormal: m * 2^-24, exact in f32 (a power-of-two scaling of a small integer).
        let v = f32(m) * 5.9604644775390625e-8;
        return select(v, -v, sign != 0u);
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// f32 -> f16 bits, rounded to nearest, ties to even (as `half::f16::from_f32`).
fn f16_rn(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u;
    }
    if (a >= 0x477ff000u) {
        // 65520 and above round to infinity.
        return sign | 0x7c00u;
    }
    if (a >= 0x38800000u) {
        // Normal: rebias the exponent, drop 13 mantissa bits rounding to even.
        let m = a - 0x38000000u;
        return sign | ((m + 0x0fffu + ((m >> 13u) & 1u)) >> 13u);
    }
    if (a < 0x33000000u) {
        // Below 2^-25 (half the smallest subnormal): zero. 2^-25 itself ties to even, zero too.
        return sign;
    }
    // Subnormal f16: the significand in units of 2^-24, rounded to even.
    let e = a >> 23u;
    let mant = (a & 0x7fffffu) | 0x800000u;
    let shift = 126u - e;
    let q = mant >> shift;
    let rem = mant & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    let up = rem > half || (rem == half && (q & 1u) == 1u);
    return sign | (q + select(0u, 1u, up));
}

fn finite16(h: u32) -> bool {
    return (h & 0x7c00u) != 0x7c00u;
}

// The f16 at least as large in magnitude as x (cpu.rs `f16_away`).
fn f16_away(x: f32) -> u32 {
    let h = f16_rn(x);
    return select(h, h + 1u, abs(h2f(h)) < abs(x));
}

// The f16 no larger than x (cpu.rs `f16_down`).
fn f16_down(x: f32) -> u32 {
    let h = f16_rn(x);
    let hf = h2f(h);
    if (hf <= x) {
        return h;
    }
    return select(h + 1u, h - 1u, hf > 0.0);
}

// Significand in [2^23, 2^24) and biased exponent of a finite non-zero |x| (subnormals normalised).
fn unpack_f32(a: u32) -> vec2<i32> {
    let e = i32(a >> 23u);
    let m = a & 0x7fffffu;
    if (e == 0) {
        let s = countLeadingZeros(m) - 8u;
        return vec2<i32>(i32(m << s), 1 - i32(s));
    }
    return vec2<i32>(i32(m | 0x800000u), e);
}

// a / b correctly rounded (ties to even), as IEEE division on the CPU.
fn div_rn(a: f32, b: f32) -> f32 {
    let ab = bitcast<u32>(a);
    let bb = bitcast<u32>(b);
    let sign = (ab ^ bb) & 0x80000000u;
    let aa = ab & 0x7fffffffu;
    let ba = bb & 0x7fffffffu;
    if (aa > 0x7f800000u || ba > 0x7f800000u || (aa == 0u && ba == 0u) || (aa == 0x7f800000u && ba == 0x7f800000u)) {
        // A NaN (built at run time: WGSL rejects a constant one).
        return bitcast<f32>(0x7fc00000u | p.zero);
    }
    if (aa == 0x7f800000u || ba == 0u) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (aa == 0u || ba == 0x7f800000u) {
        return bitcast<f32>(sign);
    }
    let ua = unpack_f32(aa);
    let ub = unpack_f32(ba);
    let mb = u32(ub.x);
    var r = u32(ua.x);
    // Biased exponent of the quotient's leading bit.
    var e = ua.y - ub.y + 127;
    if (r < mb) {
        r = r << 1u;
        e = e - 1;
    }
    // 25 quotient bits (24 of significand and a round bit); r stays below 2^26.
    var q = 0u;
    for (var i = 0u; i < 25u; i++) {
        q = q << 1u;
        if (r >= mb) {
            r = r - mb;
            q = q | 1u;
        }
        r = r << 1u;
    }
    let sticky = r != 0u;
    if (e >= 1) {
        var m = q >> 1u;
        if ((q & 1u) == 1u && (sticky || (m & 1u) == 1u)) {
            m = m + 1u;
        }
        if (m == 0x1000000u) {
            m = 0x800000u;
            e = e + 1;
        }
        if (e >= 255) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
        return bitcast<f32>(sign | (u32(e) << 23u) | (m & 0x7fffffu));
    }
    // Subnormal result: units of 2^-149 are q * 2^(e - 2).
    let shift = u32(2 - e);
    if (shift >= 32u) {
        return bitcast<f32>(sign);
    }
    let qq = q >> shift;
    let rem = q & ((1u << shift) - 1u);
    let half = 1u << (shift - 1u);
    let up = rem > half || (rem == half && (sticky || (qq & 1u) == 1u));
    return bitcast<f32>(sign | (qq + select(0u, 1u, up)));
}

// Rounds half away from zero as cpu.rs `rnd`: trunc(|x| + 0.5) with the sign of x (the f32 add
// included), NaN to 0; magnitudes from 256 on give 256, which every caller clamps lower.
fn rnd(x: f32) -> f32 {
    let b = bitcast<u32>(x);
    // |x|, opaque like `keep` (a compiler could see |a * b| + 0.5 as a fused multiply-add).
    let a = (b & 0x7fffffffu) | p.zero;
    if (a > 0x7f800000u) {
        return 0.0;
    }
    var t = 256.0;
    if (a < 0x43800000u) {
        t = trunc(bitcast<f32>(a) + 0.5);
    }
    return select(t, -t, (b >> 31u) == 1u);
}

// Element i of the chunk as f32 (exact for every source dtype).
fn val(i: u32) -> f32 {
#ifdef SRC_BF16
    let w = src[i >> 1u];
    return bitcast<f32>(select(w & 0xffffu, w >> 16u, (i & 1u) == 1u) << 16u);
#else
#ifdef SRC_F16
    let w = src[i >> 1u];
    return h2f(select(w & 0xffffu, w >> 16u, (i & 1u) == 1u));
#else
    return bitcast<f32>(src[i]);
#endif
#endif
}

fn step_num(s: u32) -> f32 {
    return p.steps[s >> 2u][s & 3u];
}

// The invocation's (row, group) and the group's element range [at, at + n) in the chunk, or
// none when out of range or when the group holds a non-finite value (reported in `bad`).
struct Job {
    ok: bool,
    row: u32,
    g: u32,
    at: u32,
    n: u32,
}

fn job(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> Job {
    let t = (wid.x + wid.y * nwg.x) * 64u + lid;
    var j = Job(false, 0u, 0u, 0u, 0u);
    if (t >= p.rows * p.row_groups) {
        return j;
    }
    j.row = t / p.row_groups;
    j.g = t % p.row_groups;
    let lo = j.g * p.group;
    j.at = j.row * p.cols + lo;
    j.n = min(p.group, p.cols - lo);
    for (var c = 0u; c < j.n; c++) {
        if ((bitcast<u32>(val(j.at + c)) & 0x7f800000u) == 0x7f800000u) {
            atomicMin(&bad[0], p.row_base + j.row);
            return j;
        }
    }
    j.ok = true;
    return j;
}

// Index of the group's first scale value (f16 units) in the part.
fn scale_index(j: Job) -> u32 {
    return (p.out_row0 + j.row) * p.row_groups + j.g;
}

fn put_half(s: u32, h: u32) {
    atomicOr(&scales[s >> 1u], h << ((s & 1u) * 16u));
}

fn inv(d: u32) -> f32 {
    let f = h2f(d);
    return select(div_rn(1.0, f), 0.0, f == 0.0);
}

@compute @workgroup_size(64)
fn quant_q8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = job(wid, nwg, lid);
    if (!j.ok) {
        return;
    }
    var amax = 0.0;
    for (var c = 0u; c < j.n; c++) {
        amax = max(amax, abs(val(j.at + c)));
    }
    let d = f16_away(div_rn(amax, 127.0));
    let i = inv(d);
    let base = (p.out_row0 + j.row) * p.row_words + j.g * p.group / 4u;
    for (var w = 0u; w < p.group / 4u; w++) {
        var word = 0u;
        for (var k = 0u; k < 4u; k++) {
            let c = w * 4u + k;
            if (c < j.n) {
                let q = i32(clamp(rnd(val(j.at + c) * i), -127.0, 127.0));
                word = word | ((u32(q) & 0xffu) << (k * 8u));
            }
        }
        codes[base + w] = word;
    }
    put_half(scale_index(j), d);
}

// Scale of a scale-only int4 group (cpu.rs `fit_scale`).
fn fit_scale(at: u32, n: u32) -> u32 {
    var mx = 0.0;
    for (var c = 0u; c < n; c++) {
        let v = val(at + c);
        if (abs(v) > abs(mx)) {
            mx = v;
        }
    }
    let base = f16_away(div_rn(mx, -8.0));
    if (mx == 0.0) {
        return base;
    }
    let bf = h2f(base);
    let ib = div_rn(1.0, bf);
    var base_err = 0.0;
    var sx2 = 0.0;
    for (var c = 0u; c < n; c++) {
        let v = val(at + c);
        let t = keep(bf * clamp(rnd(v * ib), -8.0, 7.0)) - v;
        base_err = base_err + keep(t * t);
        sx2 = sx2 + keep(v * v);
    }
    var best = base;
    var best_err = base_err;
    for (var s = 0u; s < p.fit_steps; s++) {
        let iscale = div_rn(-step_num(s), mx);
        var sxl = 0.0;
        var sl2 = 0.0;
        for (var c = 0u; c < n; c++) {
            let v = val(at + c);
            let l = clamp(rnd(v * iscale), -8.0, 7.0);
            sxl = sxl + keep(v * l);
            sl2 = sl2 + keep(l * l);
        }
        let den = max(sl2, p.tiny);
        let e = sx2 - div_rn(sxl * sxl, den);
        let d = f16_rn(div_rn(sxl, den));
        if (e < best_err && h2f(d) != 0.0 && finite16(d)) {
            best = d;
            best_err = e;
        }
    }
    return best;
}

@compute @workgroup_size(64)
fn quant_q4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = job(wid, nwg, lid);
    if (!j.ok) {
        return;
    }
    let d = fit_scale(j.at, j.n);
    let i = inv(d);
    let base = (p.out_row0 + j.row) * p.row_words + j.g * p.group / 8u;
    for (var w = 0u; w < p.group / 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 8u; k++) {
            let c = w * 8u + k;
            // Past the row's end: the code of zero.
            var q = 8u;
            if (c < j.n) {
                q = u32(clamp(rnd(val(j.at + c) * i) + 8.0, 0.0, 15.0));
            }
            word = word | (q << (k * 4u));
        }
        codes[base + w] = word;
    }
    put_half(scale_index(j), d);
}

// -0 as +0 (cpu.rs `plus_zero`): min/max may return either zero when both meet.
fn plus_zero(x: f32) -> f32 {
    return select(x, 0.0, (bitcast<u32>(x) & 0x7fffffffu) == 0u);
}

// Scale and offset of an int4 group, packed d | m << 16 (cpu.rs `fit_offset`).
fn fit_offset(at: u32, n: u32) -> u32 {
    var lo = val(at);
    var hi = lo;
    for (var c = 1u; c < n; c++) {
        let v = val(at + c);
        lo = min(lo, v);
        hi = max(hi, v);
    }
    lo = plus_zero(lo);
    hi = plus_zero(hi);
    let m0 = f16_down(lo);
    let mf = h2f(m0);
    let d0 = f16_away(div_rn(hi - mf, 15.0));
    if (hi <= lo) {
        return d0 | (m0 << 16u);
    }
    let df = h2f(d0);
    let i0 = div_rn(1.0, df);
    var best_err = 0.0;
    for (var c = 0u; c < n; c++) {
        let v = val(at + c);
        let t = (keep(df * clamp(rnd((v - mf) * i0), 0.0, 15.0)) + mf) - v;
        best_err = best_err + keep(t * t);
    }
    var best = d0 | (m0 << 16u);
    let nf = f32(n);
    var sx = 0.0;
    var sx2 = 0.0;
    for (var c = 0u; c < n; c++) {
        let v = val(at + c);
        sx = sx + v;
        sx2 = sx2 + keep(v * v);
    }
    for (var s = 0u; s < p.fit_steps; s++) {
        let iscale = div_rn(step_num(s), hi - lo);
        var sl = 0.0;
        var sl2 = 0.0;
        var sxl = 0.0;
        for (var c = 0u; c < n; c++) {
            let v = val(at + c);
            let l = min(rnd((v - lo) * iscale), 15.0);
            sl = sl + l;
            sl2 = sl2 + keep(l * l);
            sxl = sxl + keep(v * l);
        }
        let det = keep(nf * sl2) - keep(sl * sl);
        if (det <= 0.0) {
            continue;
        }
        let d = div_rn(keep(nf * sxl) - keep(sx * sl), det);
        let m = div_rn(keep(sl2 * sx) - keep(sl * sxl), det);
        // The squared error of d * l + m from the sums, term by term in the CPU's order.
        var e = keep(d * d * sl2) + keep(nf * m * m);
        e = e + sx2;
        e = e + keep(2.0 * d * m * sl);
        e = e - keep(2.0 * d * sxl);
        e = e - keep(2.0 * m * sx);
        let dh = f16_rn(d);
        let mh = f16_rn(m);
        if (e < best_err && d > 0.0 && finite16(dh) && finite16(mh)) {
            best = dh | (mh << 16u);
            best_err = e;
        }
    }
    return best;
}

@compute @workgroup_size(64)
fn quant_q4z(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let j = job(wid, nwg, lid);
    if (!j.ok) {
        return;
    }
    let dm = fit_offset(j.at, j.n);
    let i = inv(dm & 0xffffu);
    let mf = h2f(dm >> 16u);
    let base = (p.out_row0 + j.row) * p.row_words + j.g * p.group / 8u;
    for (var w = 0u; w < p.group / 8u; w++) {
        var word = 0u;
        for (var k = 0u; k < 8u; k++) {
            let c = w * 8u + k;
            var q = 0u;
            if (c < j.n) {
                q = u32(clamp(rnd((val(j.at + c) - mf) * i), 0.0, 15.0));
            }
            word = word | (q << (k * 4u));
        }
        codes[base + w] = word;
    }
    // One (d, m) pair per word: the group owns it.
    atomicStore(&scales[scale_index(j)], dm);
}
