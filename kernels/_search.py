"""ggml's scale searches, the `make_q*_quants` family, shared by the legacy, K- and i-quants.

Each function reproduces the ggml C function of the same name in `ggml-quants.c` bit for bit: float32 arithmetic in the C source's order (every int operand is
converted to float32 first, as C's usual conversions do), no fastmath, no FMA contraction, and
`error_model="numpy"` so that a float division by zero gives inf/NaN as in C instead of raising
(it happens, e.g., with an importance matrix that is zero over a sparse row's non-zeros).
Other kernel families import these (`from llmtk.kernels._search import make_qx_quants`); the
scalar helpers they use (`nearest_int`, fp16 conversions, `GROUP_MAX_EPS`) live in `_numeric`.

Conventions that replace C's pointers:
- `x`, `weights`, `L`, `Laux` are 1-D arrays (or views) holding at least `n` values;
- an EMPTY weights array stands for C's NULL (the function then weighs by `x*x`, as ggml does);
- out-parameters come back in a tuple: `make_qkx2_quants` returns `(scale, the_min)`.
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from numba import njit

from llmtk.kernels._numeric import GROUP_MAX_EPS, nearest_int

# LLVM's x86 pass that turns cmov back into branches inside loops guesses wrong for these
# searches: their clamps (MAX(0, MIN(nmax, l))) depend on the data and mispredict, which made
# them ~1.7x slower than ggml's C. A code-generation choice only; results are unchanged.
llvm.set_option("", "-x86-cmov-converter=false")

# numba keys a cached kernel on its own file's mtime and size, so an importer that inlines these
# keeps stale machine code after an edit here: bump this, edit (touch) the importers, or delete
# kernels/**/__pycache__/*.nb[ic]. 2: moved from _kquant_search. 3: trials evaluated together, int32 nearest_int.
# 4: qkx2 trials in turn again. 5: max_abs_value.
CACHE_VERSION = 5


@njit(cache=True, error_model="numpy", inline="always")
def max_abs_value(x, n):
    """(max |x[i]|, the first x[i] of that magnitude) over i < n, as ggml's
    `if (ax > amax) { amax = ax; max = x[i]; }` scans leave them."""
    vmax = np.float32(0.0)
    amax = np.float32(0.0)
    for i in range(n):
        ax = np.abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    return amax, vmax


@njit(cache=True, error_model="numpy", inline="always")
def _weight_of(x, weights, i, rmse_type):
    # make_qx_quants' per-element weight when no quant weights are given
    if weights.size:
        return weights[i]
    if rmse_type == 1:
        return x[i] * x[i]
    if rmse_type == 2:
        return np.float32(1.0)
    if rmse_type == 3:
        return np.abs(x[i])
    return np.sqrt(np.abs(x[i]))


@njit(cache=True, error_model="numpy", inline="always")
def _sum2(p1, p2, n):
    # two float32 sums in index order, as ggml's loops accumulate them
    s1 = np.float32(0.0)
    s2 = np.float32(0.0)
    for i in range(n):
        s1 += p1[i]
        s2 += p2[i]
    return s1, s2


# make_qx_quants tries 18 scales (is = -9..9 but 0); their sums are gathered in one pass over the
# values (each still accumulated in ggml's index order), which vectorises across the trials.
QX_TRIALS = 18


@njit(cache=True, error_model="numpy", inline="always")
def make_qx_quants_ws(n, nmax, x, L, rmse_type, qw, ws):
    """`make_qx_quants` with a float32 workspace `ws` of at least `qx_workspace(n)` values.

    Every trial's sums are ggml's (float32, index order), so the chosen scale and L are ggml's:
    the trials are evaluated together and then accepted in ggml's order, and L is rounded once
    with the last accepted scale, which is what ggml's running updates leave behind.
    """
    amax, vmax = max_abs_value(x, n)
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(-nmax) / vmax
    if rmse_type == 0:
        for i in range(n):
            l = nearest_int(iscale * x[i])
            L[i] = nmax + max(-nmax, min(nmax - 1, l))
        return np.float32(1.0) / iscale
    return_early = False
    if rmse_type < 0:
        rmse_type = -rmse_type
        return_early = True
    w = ws[0:n]
    wx = ws[n:2 * n]
    isc = ws[2 * n:2 * n + QX_TRIALS]
    slx = ws[2 * n + QX_TRIALS:2 * n + 2 * QX_TRIALS]
    sl2 = ws[2 * n + 2 * QX_TRIALS:2 * n + 3 * QX_TRIALS]
    for i in range(n):
        wi = _weight_of(x, qw, i, rmse_type)
        w[i] = wi
        wx[i] = wi * x[i]
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l + nmax
        fl = np.float32(l)
        sumlx += wx[i] * fl          # w*x[i]*l
        suml2 += w[i] * fl * fl      # w*l*l
    scale = sumlx / suml2 if suml2 != 0 else np.float32(0.0)
    if return_early:
        return np.float32(0.5) * (scale + np.float32(1.0) / iscale) if suml2 > 0 else np.float32(1.0) / iscale
    best = scale * sumlx
    for k in range(QX_TRIALS):
        is_ = k - 9 if k < 9 else k - 8
        isc[k] = -(np.float32(nmax) + np.float32(0.1) * np.float32(is_)) / vmax
        slx[k] = np.float32(0.0)
        sl2[k] = np.float32(0.0)
    for i in range(n):
        xi = x[i]
        wi = w[i]
        wxi = wx[i]
        for k in range(QX_TRIALS):
            fl = np.float32(max(-nmax, min(nmax - 1, nearest_int(isc[k] * xi))))
            slx[k] += wxi * fl
            sl2[k] += wi * fl * fl
    chosen = -1
    for k in range(QX_TRIALS):
        if sl2[k] > 0 and slx[k] * slx[k] > best * sl2[k]:
            chosen = k
            scale = slx[k] / sl2[k]
            best = scale * slx[k]
    if chosen >= 0:
        for i in range(n):
            L[i] = nmax + max(-nmax, min(nmax - 1, nearest_int(isc[chosen] * x[i])))
    return scale


@njit(cache=True, inline="always")
def qx_workspace(n):
    """Floats of workspace `make_qx_quants_ws` needs for `n` values."""
    return 2 * n + 3 * QX_TRIALS


@njit(cache=True, error_model="numpy", inline="always")
def make_qx_quants(n, nmax, x, L, rmse_type, qw):
    """ggml `make_qx_quants`: symmetric scale search, L (int8) in [0, 2*nmax). Returns scale.

    qw: importance weights, or an empty array for C's NULL (weights from `rmse_type`)."""
    return make_qx_quants_ws(n, nmax, x, L, rmse_type, qw, np.empty(qx_workspace(n), dtype=np.float32))


@njit(cache=True, error_model="numpy", inline="always")
def make_q3_quants(n, nmax, x, L, do_rmse):
    """ggml `make_q3_quants`: symmetric search with x*x weights and coordinate-descent passes."""
    amax, vmax = max_abs_value(x, n)
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(-nmax) / vmax
    if do_rmse:
        sumlx = np.float32(0.0)
        suml2 = np.float32(0.0)
        for i in range(n):
            l = nearest_int(iscale * x[i])
            l = max(-nmax, min(nmax - 1, l))
            L[i] = l
            w = x[i] * x[i]
            fl = np.float32(l)
            sumlx += w * x[i] * fl
            suml2 += w * fl * fl
        for itry in range(5):
            n_changed = 0
            for i in range(n):
                w = x[i] * x[i]
                fLi = np.float32(L[i])
                slx = sumlx - w * x[i] * fLi
                if slx > 0:
                    sl2 = suml2 - w * fLi * fLi
                    new_l = nearest_int(x[i] * sl2 / slx)
                    new_l = max(-nmax, min(nmax - 1, new_l))
                    if new_l != L[i]:
                        fnl = np.float32(new_l)
                        slx += w * x[i] * fnl
                        sl2 += w * fnl * fnl
                        if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                            L[i] = new_l
                            sumlx = slx
                            suml2 = sl2
                            n_changed += 1
            if n_changed == 0:
                break
        for i in range(n):
            L[i] += nmax
        return sumlx / suml2 if suml2 > 0 else np.float32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = max(-nmax, min(nmax - 1, l))
        L[i] = l + nmax
    return np.float32(1.0) / iscale


@njit(cache=True, error_model="numpy")
def make_qkx1_quants(n, nmax, x, L, ntry, alpha):
    """ggml `make_qkx1_quants` (iterative min refinement). Returns (scale, the_min)."""
    vmin = x[0]
    vmax = x[0]
    for i in range(1, n):
        if x[i] < vmin:
            vmin = x[i]
        if x[i] > vmax:
            vmax = x[i]
    if vmax == vmin:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0), np.float32(0.0)
    if vmin > 0:
        vmin = np.float32(0.0)
    iscale = np.float32(nmax) / (vmax - vmin)
    scale = np.float32(1.0) / iscale
    for itry in range(ntry):
        sumlx = np.float32(0.0)
        suml2 = 0
        did_change = False
        for i in range(n):
            l = nearest_int(iscale * (x[i] - vmin))
            l = max(0, min(nmax, l))
            if l != L[i]:
                L[i] = l
                did_change = True
            sumlx += (x[i] - vmin) * np.float32(l)
            suml2 += l * l
        scale = sumlx / np.float32(suml2)
        s = np.float32(0.0)
        for i in range(n):
            s += x[i] - scale * np.float32(L[i])
        vmin = alpha * vmin + (np.float32(1.0) - alpha) * s / np.float32(n)
        if vmin > 0:
            vmin = np.float32(0.0)
        iscale = np.float32(1.0) / scale
        if not did_change:
            break
    return scale, -vmin


@njit(cache=True, error_model="numpy", inline="always")
def _search_error(diff, use_mad):
    return np.abs(diff) if use_mad else diff * diff


# make_qkx2/3_quants try nstep+1 scales in turn, and a winner moves `min`, which every later trial
# uses. make_qkx3_quants (the weighted searches, where wins are rare) evaluates QKX_CHUNK trials at
# a time with the current `min` (each sum in ggml's index order, vectorised across the trials) and
# accepts in ggml's order, restarting after a win at the next trial with the new `min`, so the
# result is ggml's; make_qkx2_quants, whose trials often win, takes them one after the other.
QKX_CHUNK = 16


@njit(cache=True, inline="always")
def qkx_workspace(n):
    """Floats of workspace `make_qkx2_quants_ws` / `make_qkx3_quants_ws` need for `n` values."""
    return _qkx_scratch(n) + n


@njit(cache=True, inline="always")
def _qkx_scratch(n):
    # the trial scratch: 7 rows of QKX_CHUNK (chunked) or 4 arrays of n values (in turn)
    return max(7 * QKX_CHUNK, 4 * n)


@njit(cache=True, error_model="numpy", inline="always")
def _qkx_search(n, nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, ws, empty_if_le, chunked):
    # the body shared by make_qkx2_quants and make_qkx3_quants once the weights `w` exist;
    # ws holds _qkx_scratch(n) floats. `empty_if_le`: qkx3 gives up when max <= min, qkx2 when
    # max == min. `chunked` picks how the trials are evaluated (the result is the same).
    vmin = x[0]
    vmax = x[0]
    sum_w = w[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < vmin:
            vmin = x[i]
        if x[i] > vmax:
            vmax = x[i]
        sum_w += w[i]
        sum_x += w[i] * x[i]
    if vmin > 0:
        vmin = np.float32(0.0)
    if (vmax <= vmin) if empty_if_le else (vmax == vmin):
        for i in range(n):
            L[i] = 0
        return np.float32(0.0), -vmin
    iscale = np.float32(nmax) / (vmax - vmin)
    scale = np.float32(1.0) / iscale
    best_error = np.float32(0.0)
    for i in range(n):
        l = max(0, min(nmax, nearest_int(iscale * (x[i] - vmin))))
        L[i] = l
        diff = scale * np.float32(l) + vmin - x[i]
        best_error += w[i] * _search_error(diff, use_mad)
    if nstep < 1:
        return scale, -vmin
    if chunked:
        return _qkx_trials_chunked(n, nmax, x, w, L, rmin, rdelta, nstep, use_mad, ws,
                                   vmin, vmax, sum_w, sum_x, scale, best_error)
    return _qkx_trials_in_turn(n, nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, ws,
                               vmin, vmax, sum_w, sum_x, scale, best_error)


@njit(cache=True, error_model="numpy", inline="always")
def _qkx_trials_chunked(n, nmax, x, w, L, rmin, rdelta, nstep, use_mad, ws, vmin, vmax, sum_w, sum_x,
                        scale, best_error):
    # QKX_CHUNK trials at a time; pays off where acceptances are rare (weighted searches)
    isc = ws[0:QKX_CHUNK]
    s_l = ws[QKX_CHUNK:2 * QKX_CHUNK]
    s_l2 = ws[2 * QKX_CHUNK:3 * QKX_CHUNK]
    s_xl = ws[3 * QKX_CHUNK:4 * QKX_CHUNK]
    tsc = ws[4 * QKX_CHUNK:5 * QKX_CHUNK]
    tmn = ws[5 * QKX_CHUNK:6 * QKX_CHUNK]
    err = ws[6 * QKX_CHUNK:7 * QKX_CHUNK]
    is0 = 0
    while is0 <= nstep:
        cnt = min(QKX_CHUNK, nstep + 1 - is0)
        for k in range(cnt):
            isc[k] = (rmin + rdelta * np.float32(is0 + k) + np.float32(nmax)) / (vmax - vmin)
            s_l[k] = np.float32(0.0)
            s_l2[k] = np.float32(0.0)
            s_xl[k] = np.float32(0.0)
            err[k] = np.float32(0.0)
        for i in range(n):
            xi = x[i]
            xm = xi - vmin
            wi = w[i]
            for k in range(cnt):
                fl = np.float32(max(0, min(nmax, nearest_int(isc[k] * xm))))
                wl = wi * fl
                s_l[k] += wl               # w*l
                s_l2[k] += wl * fl         # w*l*l
                s_xl[k] += wl * xi         # w*l*x[i]
        for k in range(cnt):
            D = sum_w * s_l2[k] - s_l[k] * s_l[k]
            this_scale = (sum_w * s_xl[k] - sum_x * s_l[k]) / D
            this_min = (s_l2[k] * sum_x - s_l[k] * s_xl[k]) / D
            if this_min > 0:
                this_min = np.float32(0.0)
                this_scale = s_xl[k] / s_l2[k]
            tsc[k] = this_scale
            tmn[k] = this_min
        for i in range(n):
            xi = x[i]
            xm = xi - vmin
            wi = w[i]
            for k in range(cnt):
                fl = np.float32(max(0, min(nmax, nearest_int(isc[k] * xm))))
                err[k] += wi * _search_error(tsc[k] * fl + tmn[k] - xi, use_mad)
        accepted = -1
        for k in range(cnt):
            D = sum_w * s_l2[k] - s_l[k] * s_l[k]
            if D > 0 and err[k] < best_error:
                accepted = k
                break
        if accepted < 0:
            is0 += cnt
            continue
        for i in range(n):
            L[i] = max(0, min(nmax, nearest_int(isc[accepted] * (x[i] - vmin))))
        best_error = err[accepted]
        scale = tsc[accepted]
        vmin = tmn[accepted]
        is0 += accepted + 1
    return scale, -vmin


@njit(cache=True, error_model="numpy", inline="always")
def _qkx_trials_in_turn(n, nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, ws, vmin, vmax, sum_w, sum_x,
                        scale, best_error):
    # one trial after the other, as ggml's loop; cheaper where many trials win (make_qkx2_quants)
    xm = ws[0:n]
    p1 = ws[n:2 * n]
    p2 = ws[2 * n:3 * n]
    p3 = ws[3 * n:4 * n]
    for i in range(n):
        xm[i] = x[i] - vmin
    for is_ in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(is_) + np.float32(nmax)) / (vmax - vmin)
        for i in range(n):
            l = max(0, min(nmax, nearest_int(iscale * xm[i])))
            Laux[i] = l
            fl = np.float32(l)
            wl = w[i] * fl
            p1[i] = wl               # w*l
            p2[i] = wl * fl          # w*l*l
            p3[i] = wl * x[i]        # w*l*x[i]
        sum_l = np.float32(0.0)
        sum_l2 = np.float32(0.0)
        sum_xl = np.float32(0.0)
        for i in range(n):
            sum_l += p1[i]
            sum_l2 += p2[i]
            sum_xl += p3[i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > 0:
                this_min = np.float32(0.0)
                this_scale = sum_xl / sum_l2
            for i in range(n):
                p1[i] = w[i] * _search_error(this_scale * np.float32(Laux[i]) + this_min - x[i], use_mad)
            cur_error = np.float32(0.0)
            for i in range(n):
                cur_error += p1[i]
            if cur_error < best_error:
                for i in range(n):
                    L[i] = Laux[i]
                best_error = cur_error
                scale = this_scale
                vmin = this_min
                for i in range(n):
                    xm[i] = x[i] - vmin
    return scale, -vmin


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx2_quants_ws(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, ws):
    """`make_qkx2_quants` with a float32 workspace of at least `qkx_workspace(n)` values."""
    return _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, ws, False, False)


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx2_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """ggml `make_qkx2_quants`: asymmetric (scale, min) grid search with weighted least squares.

    L, Laux: uint8 arrays; rmin, rdelta: float32. Returns (scale, the_min) with the_min = -min.
    """
    return _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad,
                       np.empty(qkx_workspace(n), dtype=np.float32), False, False)


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx3_quants_ws(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, ws):
    """`make_qkx3_quants` with a float32 workspace of at least `qkx_workspace(n)` values."""
    if weights.size:
        return _qkx_search(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad, ws, True, True)
    w = ws[_qkx_scratch(n):_qkx_scratch(n) + n]
    for i in range(n):
        w[i] = x[i] * x[i]
    return _qkx_search(n, nmax, x, w, L, Laux, rmin, rdelta, nstep, use_mad, ws, True, True)


@njit(cache=True, error_model="numpy", inline="always")
def make_qkx3_quants(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad):
    """ggml `make_qkx3_quants`: like make_qkx2_quants; empty `weights` means x*x (C's NULL).

    Returns (scale, the_min) with the_min = -min.
    """
    return make_qkx3_quants_ws(n, nmax, x, weights, L, Laux, rmin, rdelta, nstep, use_mad,
                               np.empty(qkx_workspace(n), dtype=np.float32))


@njit(cache=True, error_model="numpy", inline="always")
def make_qp_quants(n, nmax, x, L, quant_weights):
    """ggml `make_qp_quants`: non-negative values (scales/mins) onto [0, nmax] (L uint8)."""
    vmax = np.float32(0.0)
    for i in range(n):
        vmax = vmax if vmax > x[i] else x[i]  # C's MAX(max, x[i]), -0.0/NaN handling included
    if vmax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return np.float32(0.0)
    iscale = np.float32(nmax) / vmax
    for i in range(n):
        L[i] = nearest_int(iscale * x[i])
    scale = np.float32(1.0) / iscale
    best_mse = np.float32(0.0)
    for i in range(n):
        diff = x[i] - scale * np.float32(L[i])
        w = quant_weights[i]
        best_mse += w * diff * diff
    for is_ in range(-4, 5):
        if is_ == 0:
            continue
        iscale_is = (np.float32(0.1) * np.float32(is_) + np.float32(nmax)) / vmax
        scale_is = np.float32(1.0) / iscale_is
        mse = np.float32(0.0)
        for i in range(n):
            l = nearest_int(iscale_is * x[i])
            l = min(nmax, l)
            diff = x[i] - scale_is * np.float32(l)
            w = quant_weights[i]
            mse += w * diff * diff
        if mse < best_mse:
            best_mse = mse
            iscale = iscale_is
    sumlx = np.float32(0.0)
    suml2 = np.float32(0.0)
    for i in range(n):
        l = nearest_int(iscale * x[i])
        l = min(nmax, l)
        L[i] = l
        w = quant_weights[i]
        fl = np.float32(l)
        sumlx += w * x[i] * fl
        suml2 += w * fl * fl
    for itry in range(5):
        n_changed = 0
        for i in range(n):
            w = quant_weights[i]
            fLi = np.float32(L[i])
            slx = sumlx - w * x[i] * fLi
            sl2 = suml2 - w * fLi * fLi
            if slx > 0 and sl2 > 0:
                new_l = nearest_int(x[i] * sl2 / slx)
                new_l = min(nmax, new_l)
                if new_l != L[i]:
                    fnl = np.float32(new_l)
                    slx += w * x[i] * fnl
                    sl2 += w * fnl * fnl
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else np.float32(0.0)
