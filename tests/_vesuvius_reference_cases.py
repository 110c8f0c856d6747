"""Deterministic synthetic 3D cases (uint8 label volumes) for the Vesuvius score parity test.

CASES() -> dict name -> (pred, ref); ref may contain the ignore label 2.
Octant borders of a 32^3 volume lie at index 16 on every axis (first chunk = ceil(n/2)).
"""
import numpy as np


def wavy_sheet(shape, z0, thick=3, amp=3.0, period=32.0, y=(2, None), x=(2, None)):
    """Foreground voxels z0 + amp*sin(2*pi*x/period) .. + thick, for y, x in the given ranges."""
    v = np.zeros(shape, np.uint8)
    Z, Y, X = shape
    y0, y1 = y[0], (Y - 2 if y[1] is None else y[1])
    x0, x1 = x[0], (X - 2 if x[1] is None else x[1])
    for xi in range(x0, x1):
        zc = int(round(z0 + amp * np.sin(2 * np.pi * xi / period)))
        v[zc:zc + thick, y0:y1, xi] = 1
    return v


def shift(v, dz=0, dy=0, dx=0):
    """Translate with zero fill (no wrap-around)."""
    out = np.zeros_like(v)
    Z, Y, X = v.shape
    src = [slice(max(0, -d), n - max(0, d)) for d, n in zip((dz, dy, dx), (Z, Y, X))]
    dst = [slice(max(0, d), n - max(0, -d)) for d, n in zip((dz, dy, dx), (Z, Y, X))]
    out[tuple(dst)] = v[tuple(src)]
    return out


def hollow_box(shape, lo, hi, wall=2):
    v = np.zeros(shape, np.uint8)
    s = tuple(slice(a, b) for a, b in zip(lo, hi))
    v[s] = 1
    inner = tuple(slice(a + wall, b - wall) for a, b in zip(lo, hi))
    v[inner] = 0
    return v


def CASES():
    c = {}
    S = (32, 32, 32)
    sheet = wavy_sheet(S, 15)  # crosses the z=16 octant border and the y/x borders

    # 1 identical
    c["identical_sheet"] = (sheet.copy(), sheet.copy())

    # 2 hole (Betti-1 difference) inside one octant (y, x in 5..10)
    p = sheet.copy(); p[:, 5:11, 5:11] = 0
    c["hole_inside_octant"] = (p, sheet.copy())

    # 3 hole straddling the y=16 / x=16 octant borders
    p = sheet.copy(); p[:, 13:19, 13:19] = 0
    c["hole_on_octant_border"] = (p, sheet.copy())

    # 4 sheet broken into two pieces (cut at x = 8..9, all y)
    p = sheet.copy(); p[:, :, 8:10] = 0
    c["sheet_split_in_two"] = (p, sheet.copy())

    # 5 two parallel sheets, prediction merges them with a bridge
    two = wavy_sheet(S, 6, amp=2) | wavy_sheet(S, 22, amp=2)
    p = two.copy(); p[6:26, 6:9, 6:9] = 1
    c["two_sheets_bridged"] = (p, two.copy())

    # 6, 7 prediction shifted by 1 and by 3 voxels (z) -- plus 1 voxel in x for the second
    c["shift_z1"] = (shift(sheet, dz=1), sheet.copy())
    c["shift_z3_x1"] = (shift(sheet, dz=3, dx=1), sheet.copy())

    # 8 ignore label: reference marks y >= 20 as 2 (where the sheet continues in the prediction),
    #   and the prediction has an extra blob there
    r = sheet.copy(); r[:, 20:, :] = np.where(r[:, 20:, :] > 0, 2, 0)
    r[2:8, 22:28, 22:28] = 2
    p = sheet.copy(); p[3:7, 23:27, 23:27] = 1
    c["ignore_label_region"] = (p, r)

    # 9 empty prediction vs non-empty reference
    c["empty_pred"] = (np.zeros(S, np.uint8), sheet.copy())

    # 10 both empty
    c["both_empty"] = (np.zeros(S, np.uint8), np.zeros(S, np.uint8))

    # 11 empty reference vs non-empty prediction
    c["empty_ref"] = (sheet.copy(), np.zeros(S, np.uint8))

    # 12 hollow box (cavity, dimension 2) in the first octant of a 40^3 volume;
    #    prediction: the same box with a window cut through its top wall (the cavity opens)
    S40 = (40, 40, 40)
    box = hollow_box(S40, (2, 2, 2), (17, 17, 17))
    p = box.copy(); p[16:17, 7:11, 7:11] = 0  # cut through the top wall (wall is z 15..16)
    p[15:16, 7:11, 7:11] = 0
    c["hollow_box_opened"] = (p, box.copy())

    # 13 hollow box identical (cavity in both)
    c["hollow_box_identical"] = (box.copy(), box.copy())

    # 14 hollow box straddling all octant borders (no octant sees the cavity)
    boxc = hollow_box(S40, (10, 10, 10), (30, 30, 30))
    c["hollow_box_across_octants"] = (boxc.copy(), boxc.copy())

    # 15 random noise blobs added to the prediction
    rng = np.random.default_rng(12345)
    p = sheet.copy()
    for _ in range(12):
        z, y, x = rng.integers(0, 30, size=3)
        p[z:z + 2, y:y + 2, x:x + 2] = 1
    noise = rng.random(S) < 0.01
    p[noise] = 1
    c["noise_blobs"] = (p, sheet.copy())

    # 16 reference has no dim-1 / dim-2 features (flat sheet), prediction has a loop and a cavity
    flat = np.zeros(S, np.uint8); flat[15:18, 2:30, 2:30] = 1
    p = flat.copy()
    p[2:9, 2:9, 2:9] = hollow_box(S, (2, 2, 2), (9, 9, 9))[2:9, 2:9, 2:9]  # cavity in octant 0
    p[15:18, 20:26, 4:10] = 0  # hole: a loop in the sheet
    p[15:18, 21:25, 5:9] = 0
    p[15:18, 22:24, 6:8] = 1   # small island inside the hole (extra component)
    c["gk0_pred_has_features"] = (p, flat.copy())

    # 17 odd shape (25, 33, 31): uneven octant cuts; prediction labels are 255 (any non-zero is FG)
    S2 = (25, 33, 31)
    r = wavy_sheet(S2, 11, amp=4, period=31.0)
    p = shift(r, dz=1) * 255
    p[:, 10:14, 10:14] = 0
    c["odd_shape_uint8_255"] = (p.astype(np.uint8), r)

    # 18 24x32x32 with several small separate blobs in ref; prediction merges some, misses others
    S3 = (24, 32, 32)
    r = np.zeros(S3, np.uint8)
    for (z, y, x) in [(3, 3, 3), (3, 20, 20), (14, 5, 24), (14, 24, 5), (9, 14, 14)]:
        r[z:z + 4, y:y + 4, x:x + 4] = 1
    p = r.copy()
    p[3:7, 7:20, 5:6] = 1          # joins blob 1 to blob 2 region partially
    p[3:7, 18:21, 5:21] = 1
    p[14:18, 5:9, 24:28] = 0       # misses blob 3
    c["blobs_merge_miss"] = (p, r)

    # 19 a loop in both, at the same place (matched dimension-1 feature)
    r = sheet.copy(); r[:, 5:11, 5:11] = 0
    p = sheet.copy(); p[:, 5:11, 6:12] = 0
    c["hole_in_both_matched"] = (p, r)

    # 20 a loop in both, in different octants (unmatched in both)
    p = sheet.copy(); p[:, 5:11, 21:27] = 0
    c["hole_in_both_other_octant"] = (p, r.copy())

    # 21 smooth random fields thresholded (many components, loops and cavities in every octant);
    #    prediction = the same field plus independent smooth noise
    from scipy import ndimage
    rng2 = np.random.default_rng(2025)
    S4 = (36, 36, 36)
    base = ndimage.gaussian_filter(rng2.standard_normal(S4), 2.0)
    pert = ndimage.gaussian_filter(rng2.standard_normal(S4), 1.5)
    r = (base > 0.05).astype(np.uint8)
    p = (base + 0.5 * pert > 0.05).astype(np.uint8)
    c["smooth_random_fields"] = (p, r)

    # 22 like 21, with the reference's ignore label 2 on a slab crossing the octant borders
    r2 = r.copy(); r2[10:24, 12:20, :] = np.where(r2[10:24, 12:20, :] > 0, 2, 0)
    r2[30:34, 30:34, 30:34] = 2
    c["smooth_random_fields_ignore"] = (p.copy(), r2)

    # 23 denser fields (foreground majority: enclosed background bubbles = cavities, dimension 2)
    r3 = (base > -0.12).astype(np.uint8)
    p3 = (base + 0.5 * pert > -0.12).astype(np.uint8)
    c["smooth_random_fields_dense"] = (p3, r3)

    for k, (p, r) in c.items():
        assert p.dtype == np.uint8 and r.dtype == np.uint8 and p.shape == r.shape, k
    return c


if __name__ == "__main__":
    for k, (p, r) in CASES().items():
        print(f"{k:28s} shape={p.shape} pred_fg={int((p != 0).sum())} ref_fg={int((r == 1).sum())} "
              f"ref_ignore={int((r == 2).sum())}")
