// One k step of the staged tensor-core GEMMs (pasted by coop_main.wgsl: once per step of its loops): the
// subgroup's 2 x 4 (BN64: 2 x 2) 16x16 products from the stage whose x and W tiles start at
// `ab` and `bb` (its rows' offsets included). Needs the accumulators c00 .. c13.
for (var kk = 0u; kk < BK; kk += 16u) {
    let a0 = coopLoadT<coop_mat16x16<f16, A>>(&As[(ab + kk) / SE], S / SE);
    let a1 = coopLoadT<coop_mat16x16<f16, A>>(&As[(ab + 16u * S + kk) / SE], S / SE);
    let b0 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + kk) / SE], S / SE);
    let b1 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 16u * S + kk) / SE], S / SE);
#ifdef BN64
    c00 = coopMultiplyAdd(a0, b0, c00);
    c01 = coopMultiplyAdd(a0, b1, c01);
    c10 = coopMultiplyAdd(a1, b0, c10);
    c11 = coopMultiplyAdd(a1, b1, c11);
#else
    let b2 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 32u * S + kk) / SE], S / SE);
    let b3 = coopLoad<coop_mat16x16<f16, B>>(&Bs[(bb + 48u * S + kk) / SE], S / SE);
    c00 = coopMultiplyAdd(a0, b0, c00);
    c01 = coopMultiplyAdd(a0, b1, c01);
    c02 = coopMultiplyAdd(a0, b2, c02);
    c03 = coopMultiplyAdd(a0, b3, c03);
    c10 = coopMultiplyAdd(a1, b0, c10);
    c11 = coopMultiplyAdd(a1, b1, c11);
    c12 = coopMultiplyAdd(a1, b2, c12);
    c13 = coopMultiplyAdd(a1, b3, c13);
#endif
}
