//! The fused clip -> batch kernel: frame gather, bilinear resize (PyTorch's align_corners=False
//! rule), crop, flip and normalisation in one pass that computes only the crop window and
//! writes each output value once.

/// One output axis of one clip: for each output position, the two source taps and weights.
pub(super) struct Taps {
    pub i0: Vec<usize>,
    pub i1: Vec<usize>,
    /// i0 and i1 as i32, the index type of the AVX2 gathers.
    pub j0: Vec<i32>,
    pub j1: Vec<i32>,
    pub w0: Vec<f32>,
    pub w1: Vec<f32>,
    /// The source range [lo, hi) (in index units times stride) that the taps touch.
    pub lo: usize,
    pub hi: usize,
}

impl Taps {
    /// Taps for output positions `offset..offset + len` of an axis resized from `in_size` to
    /// `out_size`, mirrored when `flip`. Source indices are multiplied by `stride`.
    ///
    /// PyTorch (UpSampleKernel.cpp): scale = in / out in float; src = max(scale * (dst + 0.5)
    /// - 0.5, 0); i0 = min(floor(src), in - 1); i1 = i0 + 1 unless at the edge; w1 = src - i0.
    pub fn new(
        in_size: u32,
        out_size: u32,
        offset: u32,
        len: u32,
        flip: bool,
        stride: usize,
    ) -> Taps {
        let scale = in_size as f32 / out_size as f32;
        let mut t = Taps {
            i0: Vec::with_capacity(len as usize),
            i1: Vec::with_capacity(len as usize),
            j0: Vec::with_capacity(len as usize),
            j1: Vec::with_capacity(len as usize),
            w0: Vec::with_capacity(len as usize),
            w1: Vec::with_capacity(len as usize),
            lo: usize::MAX,
            hi: 0,
        };
        for j in 0..len {
            let k = if flip { len - 1 - j } else { j };
            let dst = (offset + k) as f32;
            let src = (scale * (dst + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as u32).min(in_size - 1);
            let lambda = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            t.i0.push(i0 as usize * stride);
            t.i1.push(i1 as usize * stride);
            // Offsets within one row of a validated frame: far below i32::MAX.
            t.j0.push((i0 as usize * stride) as i32);
            t.j1.push((i1 as usize * stride) as i32);
            t.w0.push(1.0 - lambda);
            t.w1.push(lambda);
            t.lo = t.lo.min(i0 as usize * stride);
            t.hi = t.hi.max(i1 as usize * stride + stride);
        }
        t
    }
}

/// Horizontal taps of one source row into `out`, channel-planar ([3][s]). The touched span of
/// the row is first widened to f32 in one vectorisable pass (`wide`), so the gather below does
/// no integer conversions.
///
/// # Safety
/// The taps' span must lie inside `row`, `wide` must hold `cols.hi` values and `out`
/// 3 * cols.len().
#[inline(always)]
unsafe fn horizontal(row: &[u8], cols: &Taps, wide: &mut [f32], out: &mut [f32]) {
    let s = cols.i0.len();
    debug_assert!(out.len() >= 3 * s && wide.len() >= cols.hi && row.len() >= cols.hi);
    for (w, &b) in wide[cols.lo..cols.hi]
        .iter_mut()
        .zip(&row[cols.lo..cols.hi])
    {
        *w = f32::from(b);
    }
    let (o0, rest) = out.split_at_mut(s);
    let (o1, o2) = rest.split_at_mut(s);
    for x in 0..s {
        // SAFETY: indices were built from the validated frame size (see Taps::new) and lie in
        // [lo, hi).
        unsafe {
            let a = *cols.i0.get_unchecked(x);
            let b = *cols.i1.get_unchecked(x);
            // w0 + w1 = 1, so one multiply per value: a + w1 * (b - a).
            let wb = *cols.w1.get_unchecked(x);
            let pa = wide.get_unchecked(a..a + 3);
            let pb = wide.get_unchecked(b..b + 3);
            *o0.get_unchecked_mut(x) = pa[0] + wb * (pb[0] - pa[0]);
            *o1.get_unchecked_mut(x) = pa[1] + wb * (pb[1] - pa[1]);
            *o2.get_unchecked_mut(x) = pa[2] + wb * (pb[2] - pa[2]);
        }
    }
}

/// `horizontal` with AVX2: one 32-bit gather at each tap reads a whole RGB pixel (and one byte
/// of the next, unused) straight from the u8 row, 8 output positions at a time, so there is no
/// widening pass; the three channels are unpacked with shifts and masks. The arithmetic is the
/// scalar path's, operation for operation (no FMA), so both give the same bits.
///
/// # Safety
/// AVX2 must be present; `row` must extend at least one byte past the taps' span
/// (`row.len() > cols.hi`), and `out` hold 3 * cols.len() values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(row: &[u8], cols: &Taps, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let s = cols.i0.len();
    debug_assert!(out.len() >= 3 * s && row.len() > cols.hi);
    let (o0, rest) = out.split_at_mut(s);
    let (o1, o2) = rest.split_at_mut(s);
    let base = row.as_ptr().cast::<i32>();
    let mut x = 0;
    // SAFETY (whole block): AVX2 is enabled; every gathered dword starts at a tap offset a with
    // a + 4 <= cols.hi + 1 <= row.len(); loads and stores cover x..x + 8 <= s.
    unsafe {
        let byte = _mm256_set1_epi32(0xFF);
        let lerp = |a: __m256, b: __m256, w: __m256| {
            _mm256_add_ps(a, _mm256_mul_ps(w, _mm256_sub_ps(b, a)))
        };
        while x + 8 <= s {
            let ia = _mm256_loadu_si256(cols.j0.as_ptr().add(x).cast());
            let ib = _mm256_loadu_si256(cols.j1.as_ptr().add(x).cast());
            let ga = _mm256_i32gather_epi32::<1>(base, ia);
            let gb = _mm256_i32gather_epi32::<1>(base, ib);
            let w = _mm256_loadu_ps(cols.w1.as_ptr().add(x));
            let ch = |g: __m256i, shift: __m256i| {
                _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(g, shift), byte))
            };
            for (c, o) in [&mut *o0, &mut *o1, &mut *o2].into_iter().enumerate() {
                let shift = _mm256_set1_epi32(8 * c as i32);
                let r = lerp(ch(ga, shift), ch(gb, shift), w);
                _mm256_storeu_ps(o.as_mut_ptr().add(x), r);
            }
            x += 8;
        }
    }
    for x in x..s {
        let (a, b, wb) = (cols.i0[x], cols.i1[x], cols.w1[x]);
        for (c, o) in [&mut *o0, &mut *o1, &mut *o2].into_iter().enumerate() {
            let (pa, pb) = (f32::from(row[a + c]), f32::from(row[b + c]));
            o[x] = pa + wb * (pb - pa);
        }
    }
}

/// Writes one frame of one clip: `src` is the u8 HWC frame, `dst` points at channel 0 of this
/// (clip, frame) in an NCTHW buffer, `planes[c]` is the offset of source channel c's output
/// plane (c * T*S*S, or reversed for BGR input).
/// Horizontally resampled source rows are kept in two slots, so a source row shared by
/// neighbouring output rows (every row when upscaling) is resampled once.
///
/// # Safety
/// `dst + planes[c] + s * s` must be writable for c in 0..3, no other thread may write
/// those ranges, and the taps must lie inside `src`.
pub(super) unsafe fn frame(
    src: &[u8],
    rows: &Taps,
    cols: &Taps,
    scale: &[f32; 3],
    bias: &[f32; 3],
    dst: *mut f32,
    planes: [usize; 3],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present; the caller's contract is passed on unchanged.
        return unsafe { frame_avx2(src, rows, cols, scale, bias, dst, planes) };
    }
    // SAFETY: the caller's contract is passed on unchanged.
    unsafe { frame_body::<false>(src, rows, cols, scale, bias, dst, planes) }
}

/// The same body compiled for AVX2, so the widening and the vertical blend run 8 floats wide.
/// No FMA: every value is rounded exactly as in the baseline build, so results do not depend
/// on the machine.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn frame_avx2(
    src: &[u8],
    rows: &Taps,
    cols: &Taps,
    scale: &[f32; 3],
    bias: &[f32; 3],
    dst: *mut f32,
    planes: [usize; 3],
) {
    // SAFETY: the caller's contract is passed on unchanged; AVX2 is enabled here.
    unsafe { frame_body::<true>(src, rows, cols, scale, bias, dst, planes) }
}

#[inline(always)]
unsafe fn frame_body<const AVX2: bool>(
    src: &[u8],
    rows: &Taps,
    cols: &Taps,
    scale: &[f32; 3],
    bias: &[f32; 3],
    dst: *mut f32,
    planes: [usize; 3],
) {
    let s = cols.i0.len();
    let mut slots = [vec![0f32; 3 * s], vec![0f32; 3 * s]];
    let mut wide = vec![0f32; cols.hi];
    let mut keys = [usize::MAX; 2];
    for y in 0..rows.i0.len() {
        let (ka, kb) = (rows.i0[y], rows.i1[y]);
        // Find or fill a slot for each of the two source rows, never evicting the other one.
        let mut slot_of = |k: usize, keep: usize| -> usize {
            if keys[0] == k {
                return 0;
            }
            if keys[1] == k {
                return 1;
            }
            let free = if keys[0] == keep { 1 } else { 0 };
            let row = &src[k..];
            #[cfg(target_arch = "x86_64")]
            if AVX2 && row.len() > cols.hi {
                // SAFETY: AVX2 is enabled (frame_avx2); the row extends past the span.
                unsafe { horizontal_avx2(row, cols, &mut slots[free]) };
                keys[free] = k;
                return free;
            }
            // SAFETY: row offsets come from validated taps.
            unsafe { horizontal(row, cols, &mut wide, &mut slots[free]) };
            keys[free] = k;
            free
        };
        let ia = slot_of(ka, kb);
        let ib = slot_of(kb, ka);
        let (ra, rb) = (&slots[ia], &slots[ib]);
        for c in 0..3 {
            // SAFETY: the caller owns this row of this channel plane.
            let out = unsafe { std::slice::from_raw_parts_mut(dst.add(planes[c] + y * s), s) };
            let (p0, p1) = (&ra[c * s..(c + 1) * s], &rb[c * s..(c + 1) * s]);
            // Normalisation folded into the vertical weights: one multiply-add chain per value.
            let (w0, w1, bi) = (rows.w0[y] * scale[c], rows.w1[y] * scale[c], bias[c]);
            for ((o, &v0), &v1) in out.iter_mut().zip(p0).zip(p1) {
                *o = w0 * v0 + w1 * v1 + bi;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this machine can run the AVX2 kernels. Without AVX2 the comparisons cannot run:
    /// the test says so on stderr (written past the harness's output capture, so `cargo test`
    /// shows it), and fails instead when `MG_REQUIRE_AVX2` is set, for machines that must
    /// exercise the AVX2 path.
    #[cfg(target_arch = "x86_64")]
    fn avx2_or_skip(test: &str) -> bool {
        if std::arch::is_x86_feature_detected!("avx2") {
            return true;
        }
        assert!(
            std::env::var_os("MG_REQUIRE_AVX2").is_none(),
            "{test}: MG_REQUIRE_AVX2 is set, but this CPU has no AVX2"
        );
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: this CPU has no AVX2, so the AVX2 kernels are not compared here \
             (the scalar kernels they fall back to are; MG_REQUIRE_AVX2=1 makes this a failure)"
        );
        false
    }

    /// Deterministic bytes (an LCG), so a failure reproduces.
    #[cfg(target_arch = "x86_64")]
    fn bytes(seed: u32, n: usize) -> Vec<u8> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect()
    }

    /// The AVX2 horizontal pass gives the scalar pass's bits: down- and upscaling, flips, crop
    /// offsets, and widths that leave a scalar tail.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_horizontal_equals_the_scalar_pass() {
        if !avx2_or_skip("avx2_horizontal_equals_the_scalar_pass") {
            return;
        }
        for (k, (in_w, out_w, offset, len, flip)) in [
            (340, 224, 7, 213, false),
            (340, 288, 30, 224, true),
            (64, 100, 3, 37, false),
            (17, 9, 0, 9, true),
            (5, 40, 2, 21, false),
        ]
        .into_iter()
        .enumerate()
        {
            let row = bytes(12345 + k as u32, in_w as usize * 3 + 1);
            let cols = Taps::new(in_w, out_w, offset, len, flip, 3);
            let s = len as usize;
            let (mut scalar, mut vector) = (vec![0f32; 3 * s], vec![0f32; 3 * s]);
            let mut wide = vec![0f32; cols.hi];
            // SAFETY: the taps come from Taps::new over this row; AVX2 is present.
            unsafe {
                horizontal(&row, &cols, &mut wide, &mut scalar);
                horizontal_avx2(&row, &cols, &mut vector);
            }
            let same = scalar
                .iter()
                .zip(&vector)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{in_w} -> {out_w} at {offset}+{len} flip {flip}");
        }
    }

    /// One frame through the scalar body and through `frame`, which takes the AVX2 body on
    /// this machine: the same bits, so the whole frame kernel (the AVX2 gathers, the last
    /// row's scalar fallback, and the vertical blend and normalisation compiled for AVX2) does
    /// not depend on the CPU.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_frame_equals_the_scalar_frame() {
        if !avx2_or_skip("avx2_frame_equals_the_scalar_frame") {
            return;
        }
        let (scale, bias) = ([1.0 / 57.4, 1.0 / 57.1, 1.0 / 57.6], [-2.1, -2.0, -1.8]);
        // (height, width, resized height, resized width, crop y, crop x, crop size, flip)
        for (k, (h, w, rh, rw, y, x, crop, flip)) in [
            (240u32, 320u32, 224u32, 298u32, 0u32, 37u32, 224u32, false),
            (120, 160, 160, 213, 20, 30, 112, true),
            (40, 40, 64, 64, 5, 3, 51, false),
            (33, 17, 9, 5, 0, 0, 5, true),
        ]
        .into_iter()
        .enumerate()
        {
            let src = bytes(777 + k as u32, (h * w * 3) as usize);
            let rows = Taps::new(h, rh, y, crop, false, w as usize * 3);
            let cols = Taps::new(w, rw, x, crop, flip, 3);
            let plane = (crop * crop) as usize;
            let (mut want, mut got) = (vec![0f32; 3 * plane], vec![0f32; 3 * plane]);
            // Reversed planes (BGR input), as collate_explicit passes them.
            let planes = [2 * plane, plane, 0];
            // SAFETY: each buffer holds the three planes the taps address; the taps come from
            // Taps::new over this frame's size.
            unsafe {
                frame_body::<false>(&src, &rows, &cols, &scale, &bias, want.as_mut_ptr(), planes);
                frame(&src, &rows, &cols, &scale, &bias, got.as_mut_ptr(), planes);
            }
            let first = want
                .iter()
                .zip(&got)
                .position(|(a, b)| a.to_bits() != b.to_bits());
            assert_eq!(
                first, None,
                "{h}x{w} -> {rh}x{rw}, crop {crop} at ({x}, {y})"
            );
        }
    }
}
