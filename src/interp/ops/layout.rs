//! Data movement kernels on contiguous buffers: axis permutation (Transpose) and padding, for
//! any element type. Both move whole contiguous runs where the layout allows.

use crate::ir::op::PadMode;

/// Merges axes that stay adjacent and in order under `perm`; returns the reduced shape (of the
/// input) and the reduced permutation.
fn merge_axes(shape: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    // Groups of output positions whose input axes are consecutive.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &a in perm {
        match groups.last_mut() {
            Some(g) if *g.last().expect("non-empty") + 1 == a => g.push(a),
            _ => groups.push(vec![a]),
        }
    }
    // Each group becomes one input axis; order the groups by their first input axis.
    let mut by_input: Vec<usize> = (0..groups.len()).collect();
    by_input.sort_by_key(|&g| groups[g][0]);
    let shape_r: Vec<usize> = by_input
        .iter()
        .map(|&g| groups[g].iter().map(|&a| shape[a]).product())
        .collect();
    let mut rank_of = vec![0; groups.len()];
    for (r, &g) in by_input.iter().enumerate() {
        rank_of[g] = r;
    }
    let perm_r = (0..groups.len()).map(|g| rank_of[g]).collect();
    (shape_r, perm_r)
}

/// Transposes a contiguous row-major buffer: out has shape `shape[perm[i]]`.
pub fn permute<T: Copy + Send + Sync>(data: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let (sh, p) = merge_axes(shape, perm);
    let n = data.len();
    if p.iter().enumerate().all(|(i, &a)| i == a) {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(n);
    // A batch of 2-D transposes ([b, r, c] → [b, c, r]): tiled so both sides stay in cache.
    let batched_2d = match p.as_slice() {
        [1, 0] => Some((1, sh[0], sh[1])),
        [0, 2, 1] => Some((sh[0], sh[1], sh[2])),
        _ => None,
    };
    if let Some((b, r, c)) = batched_2d {
        const T: usize = 32;
        // Tiles write out of order: start from any initialised buffer of the right length.
        out.extend_from_slice(data);
        for bi in 0..b {
            let src = &data[bi * r * c..(bi + 1) * r * c];
            let dst = &mut out[bi * r * c..(bi + 1) * r * c];
            for i0 in (0..r).step_by(T) {
                for j0 in (0..c).step_by(T) {
                    for i in i0..(i0 + T).min(r) {
                        for j in j0..(j0 + T).min(c) {
                            dst[j * r + i] = src[i * c + j];
                        }
                    }
                }
            }
        }
        return out;
    }
    // General case: walk output rows (the last output axis), stepping the input offset.
    let rank = sh.len();
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * sh[i + 1];
    }
    let out_shape: Vec<usize> = p.iter().map(|&a| sh[a]).collect();
    let step: Vec<usize> = p.iter().map(|&a| in_strides[a]).collect();
    let last = out_shape[rank - 1];
    let last_step = step[rank - 1];
    let rows = n.checked_div(last).unwrap_or(0);
    let mut idx = vec![0usize; rank - 1];
    let mut base = 0usize;
    for _ in 0..rows {
        out.extend((0..last).map(|j| data[base + j * last_step]));
        // Odometer over the output's leading axes.
        for k in (0..rank - 1).rev() {
            idx[k] += 1;
            base += step[k];
            if idx[k] < out_shape[k] {
                break;
            }
            base -= step[k] * idx[k];
            idx[k] = 0;
        }
    }
    out
}

/// Pads (or, with negative pads, crops) a contiguous buffer axis by axis, copying contiguous
/// inner blocks. `before`/`after` give the pads per axis.
pub fn pad<T: Copy>(
    data: &[T],
    shape: &[usize],
    before: &[i64],
    after: &[i64],
    mode: PadMode,
    fill: T,
) -> Vec<T> {
    if mode == PadMode::Constant {
        return pad_constant(data, shape, before, after, fill);
    }
    let mut cur = data.to_vec();
    let mut sh = shape.to_vec();
    for ax in 0..sh.len() {
        if before[ax] == 0 && after[ax] == 0 {
            continue;
        }
        let len = sh[ax] as i64;
        let new_len = (len + before[ax] + after[ax]) as usize;
        let outer: usize = sh[..ax].iter().product();
        let inner: usize = sh[ax + 1..].iter().product();
        let mut next = Vec::with_capacity(outer * new_len * inner);
        for o in 0..outer {
            let block = &cur[o * sh[ax] * inner..(o + 1) * sh[ax] * inner];
            for j in 0..new_len as i64 {
                let mut s = j - before[ax];
                if !(0..len).contains(&s) {
                    s = match mode {
                        PadMode::Constant => -1,
                        PadMode::Edge => s.clamp(0, len - 1),
                        PadMode::Wrap => s.rem_euclid(len),
                        PadMode::Reflect if len == 1 => 0,
                        PadMode::Reflect => {
                            let period = 2 * (len - 1);
                            let r = s.rem_euclid(period);
                            if r >= len { period - r } else { r }
                        }
                    };
                }
                if s < 0 {
                    next.extend(std::iter::repeat_n(fill, inner));
                } else {
                    let s = s as usize;
                    next.extend_from_slice(&block[s * inner..(s + 1) * inner]);
                }
            }
        }
        cur = next;
        sh[ax] = new_len;
    }
    cur
}

/// Constant padding in one pass: the output starts as `fill` and every input row (last axis)
/// lands with one copy, clipped where pads are negative (crops).
fn pad_constant<T: Copy>(
    data: &[T],
    shape: &[usize],
    before: &[i64],
    after: &[i64],
    fill: T,
) -> Vec<T> {
    let r = shape.len();
    let out_shape: Vec<usize> = (0..r)
        .map(|i| (shape[i] as i64 + before[i] + after[i]) as usize)
        .collect();
    let total: usize = out_shape.iter().product();
    let mut out = vec![fill; total];
    if r == 0 {
        out.copy_from_slice(data);
        return out;
    }
    if total == 0 || data.is_empty() {
        return out;
    }
    let mut out_strides = vec![1usize; r];
    for i in (0..r - 1).rev() {
        out_strides[i] = out_strides[i + 1] * out_shape[i + 1];
    }
    let last = shape[r - 1];
    // Columns of an input row that survive, and where they land.
    let lo = (-before[r - 1]).max(0) as usize;
    let hi = (last as i64)
        .min(out_shape[r - 1] as i64 - before[r - 1])
        .max(lo as i64) as usize;
    let dst_col = (lo as i64 + before[r - 1]) as usize;
    let mut idx = vec![0usize; r - 1];
    for row in data.chunks(last.max(1)) {
        let mut dst = Some(dst_col);
        for k in 0..r - 1 {
            let o = idx[k] as i64 + before[k];
            if o < 0 || o >= out_shape[k] as i64 {
                dst = None;
                break;
            }
            dst = dst.map(|d| d + o as usize * out_strides[k]);
        }
        if let Some(d) = dst
            && hi > lo
        {
            out[d..d + (hi - lo)].copy_from_slice(&row[lo..hi]);
        }
        for k in (0..r - 1).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[i64], shape: &[usize], perm: &[usize]) -> Vec<i64> {
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(shape), data.to_vec()).unwrap();
        a.permuted_axes(ndarray::IxDyn(perm))
            .as_standard_layout()
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn permute_matches_ndarray_for_every_perm_of_rank_4() {
        let shape = [2, 3, 5, 7];
        let data: Vec<i64> = (0..210).collect();
        let mut perms = Vec::new();
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    for d in 0..4 {
                        let p = [a, b, c, d];
                        let mut s = p.to_vec();
                        s.sort();
                        if s == [0, 1, 2, 3] {
                            perms.push(p);
                        }
                    }
                }
            }
        }
        assert_eq!(perms.len(), 24);
        for p in perms {
            assert_eq!(
                permute(&data, &shape, &p),
                naive(&data, &shape, &p),
                "{p:?}"
            );
        }
        // Large enough to cross tile edges.
        let data: Vec<i64> = (0..(3 * 70 * 45)).collect();
        assert_eq!(
            permute(&data, &[3, 70, 45], &[0, 2, 1]),
            naive(&data, &[3, 70, 45], &[0, 2, 1])
        );
    }

    #[test]
    fn pad_modes_and_crops() {
        let d = [1, 2, 3];
        assert_eq!(
            pad(&d, &[3], &[2], &[1], PadMode::Constant, 0),
            vec![0, 0, 1, 2, 3, 0]
        );
        assert_eq!(
            pad(&d, &[3], &[2], &[2], PadMode::Reflect, 0),
            vec![3, 2, 1, 2, 3, 2, 1]
        );
        assert_eq!(
            pad(&d, &[3], &[2], &[2], PadMode::Edge, 0),
            vec![1, 1, 1, 2, 3, 3, 3]
        );
        assert_eq!(
            pad(&d, &[3], &[2], &[2], PadMode::Wrap, 0),
            vec![2, 3, 1, 2, 3, 1, 2]
        );
        assert_eq!(
            pad(&d, &[3], &[-1], &[1], PadMode::Constant, 9),
            vec![2, 3, 9]
        );
        assert_eq!(
            pad(&d, &[3], &[-2], &[-1], PadMode::Constant, 9),
            Vec::<i32>::new()
        );
        let m: Vec<i32> = (0..6).collect();
        assert_eq!(
            pad(&m, &[2, 3], &[-1, 1], &[1, -1], PadMode::Constant, 7),
            vec![7, 3, 4, 7, 7, 7]
        );
        assert_eq!(
            pad(&m, &[2, 3], &[1, 0], &[0, 1], PadMode::Constant, -1),
            vec![-1, -1, -1, -1, 0, 1, 2, -1, 3, 4, 5, -1]
        );
    }
}
