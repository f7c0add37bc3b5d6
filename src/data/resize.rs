//! Downscaling u8 RGB frames for the clip store (pre-resized clips decode and collate faster,
//! as PySlowFast users pre-resize Kinetics to a short side of 256 or 320).

/// Resizes frames [n][h][w][3] so the short side is `short_side` (bilinear, PyTorch's
/// align_corners=False rule, rounded to u8). Returns the frames and (height, width).
pub fn resize_short_side(
    frames: &[u8],
    n: u32,
    h: u32,
    w: u32,
    short_side: u32,
) -> (Vec<u8>, u32, u32) {
    let (rh, rw) = crate::collate::resized_size(h, w, short_side);
    if (rh, rw) == (h, w) {
        return (frames.to_vec(), h, w);
    }
    let taps = |inp: u32, out: u32| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| {
                let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
                let i0 = (src.floor() as u32).min(inp - 1);
                let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
                (i0 as usize, i1 as usize, (src - i0 as f32).clamp(0.0, 1.0))
            })
            .collect()
    };
    let (ty, tx) = (taps(h, rh), taps(w, rw));
    let (wi, fr_in, fr_out) = (w as usize * 3, (h * w * 3) as usize, (rh * rw * 3) as usize);
    let mut out = vec![0u8; n as usize * fr_out];
    for f in 0..n as usize {
        let src = &frames[f * fr_in..(f + 1) * fr_in];
        let dst = &mut out[f * fr_out..(f + 1) * fr_out];
        for (y, &(y0, y1, ly)) in ty.iter().enumerate() {
            for (x, &(x0, x1, lx)) in tx.iter().enumerate() {
                for c in 0..3 {
                    let p = |yy: usize, xx: usize| f32::from(src[yy * wi + xx * 3 + c]);
                    let top = p(y0, x0) + lx * (p(y0, x1) - p(y0, x0));
                    let bottom = p(y1, x0) + lx * (p(y1, x1) - p(y1, x0));
                    dst[(y * rw as usize + x) * 3 + c] =
                        (top + ly * (bottom - top)).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    (out, rh, rw)
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_frames_stay_constant() {
        let f = vec![77u8; 2 * 40 * 60 * 3];
        let (out, h, w) = super::resize_short_side(&f, 2, 40, 60, 20);
        assert_eq!((h, w), (20, 30));
        assert!(out.iter().all(|&v| v == 77));
        assert_eq!(out.len(), 2 * 20 * 30 * 3);
    }
}
