"""Naive float64 references the tests compare the library against.

Written for clarity, never for speed, and independent of the library's
algorithms: dense matrices, explicit powers, Python loops over time. NumPy only.

Shapes follow the library's notation where it matters: ``N`` is the full state
size, ``L`` a length. Everything here works on a single channel; tests loop over
channels.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import legendre

# ----------------------------------------------------------------- matrix exponential


def expm(M: np.ndarray) -> np.ndarray:
    """``exp(M)`` by scaling and squaring of a Taylor series (real or complex).

    Scale ``M`` by ``2^-s`` so that its 1-norm is at most 1/2, sum 20 Taylor terms
    (the remainder is below 0.5^21 / 21! ~ 1e-26), then square ``s`` times.
    Products are einsums (no threaded BLAS; see ``kernel_by_powers``).
    """
    M = np.asarray(M)
    norm = np.abs(M).sum(axis=0).max()
    s = max(0, math.ceil(math.log2(norm)) + 1) if norm > 0 else 0
    X = M / 2.0**s
    term = np.eye(M.shape[0], dtype=M.dtype)
    out = term.copy()
    for k in range(1, 21):
        term = np.einsum("ij,jk->ik", term, X) / k
        out = out + term
    for _ in range(s):
        out = np.einsum("ij,jk->ik", out, out)
    return out


# -------------------------------------------------------------------- discretization


def discretize_zoh(A: np.ndarray, B: np.ndarray, dt: float):
    """Zero-order hold of ``x' = A x + B u`` (A (N, N), B (N,)):
    ``Abar = exp(dt A)``, ``Bbar = int_0^dt exp(s A) ds B``.

    Both come from one exponential of the augmented matrix
    ``[[A, B], [0, 0]] dt`` (Van Loan), so A need not be invertible.
    """
    N = A.shape[0]
    dtype = np.result_type(A, B, np.float64)
    aug = np.zeros((N + 1, N + 1), dtype=dtype)
    aug[:N, :N] = A
    aug[:N, N] = B
    E = expm(aug * dt)
    return E[:N, :N].copy(), E[:N, N].copy()


def discretize_bilinear(A: np.ndarray, B: np.ndarray, dt: float):
    """Bilinear (Tustin): ``Abar = (I - dt A/2)^-1 (I + dt A/2)``,
    ``Bbar = (I - dt A/2)^-1 dt B``."""
    eye = np.eye(A.shape[0])
    left = eye - dt * A / 2
    return np.linalg.solve(left, eye + dt * A / 2), np.linalg.solve(left, dt * B)


def discretize(A, B, dt, discretization: str):
    return {"zoh": discretize_zoh, "bilinear": discretize_bilinear}[discretization](A, B, dt)


# ------------------------------------------------------------- conjugate completion


def conjugate_completed(Lambda, P, B, C):
    """Dense N-dimensional system of one channel's DPLR (or diagonal) half.

    ``A = diag(Lambda, conj Lambda) - sum_r p_r p_r^*`` with ``p_r = [P_r, conj P_r]``,
    ``B = [B, conj B]``, ``C = [C, conj C]``. ``P`` is (rank, N/2), or None for a
    diagonal system.
    """
    lam = np.concatenate([Lambda, np.conj(Lambda)])
    A = np.diag(lam).astype(complex)
    if P is not None:
        for p_half in np.atleast_2d(P):
            p = np.concatenate([p_half, np.conj(p_half)])
            A = A - np.outer(p, np.conj(p))
    return A, np.concatenate([B, np.conj(B)]), np.concatenate([C, np.conj(C)])


# --------------------------------------------------------------- kernel, convolution


def kernel_by_powers(Abar, Bbar, C, length: int) -> np.ndarray:
    """``K[l] = C Abar^l Bbar`` for l < length, one matrix-vector product per step.

    Stops once the state has decayed below 1e-250 of the input (the rest of K is
    then zero to far below any tolerance): carrying on would only grind through
    subnormal numbers, which are ~100x slower on x86. The product is an einsum,
    not ``@``: a multithreaded BLAS matrix-vector product of this size is up to
    100x slower when the cores are busy (pytest -n 2).
    """
    K = np.zeros(length, dtype=np.result_type(Abar, Bbar, C))
    x = Bbar
    floor = 1e-250 * np.abs(Bbar).max()
    for l in range(length):
        K[l] = np.sum(C * x)
        x = np.einsum("ij,j->i", Abar, x)
        if np.abs(x).max() < floor:
            break
    return K


def ssm_kernel(Lambda, P, B, C, dt, length, discretization="bilinear"):
    """Real kernels (H, length) of H channels' conjugate-completed systems.

    Lambda, B, C (H, N/2); P None (diagonal), (rank, N/2) shared, or (H, rank, N/2);
    dt (H,). Each channel is completed, discretized densely and powered.
    """
    K = []
    for h in range(len(dt)):
        P_h = None if P is None else (P if np.ndim(P) == 2 else P[h])
        A, Bf, Cf = conjugate_completed(Lambda[h], P_h, B[h], C[h])
        Abar, Bbar = discretize(A, Bf, float(dt[h]), discretization)
        K.append(kernel_by_powers(Abar, Bbar, Cf, length))
    K = np.stack(K)
    assert np.abs(K.imag).max() <= 1e-8 * max(1.0, np.abs(K).max()), "conjugate completion broke"
    return K.real


def causal_conv(u: np.ndarray, K: np.ndarray) -> np.ndarray:
    """``y[t] = sum_{l=0}^{t} K[l] u[t-l]`` for u (L,), K (>= L,), directly."""
    L = len(u)
    y = np.zeros(L)
    for t in range(L):
        for l in range(t + 1):
            y[t] += K[l] * u[t - l]
    return y


def anticausal_conv(u: np.ndarray, K: np.ndarray, lag0: bool) -> np.ndarray:
    """``y[t] = sum_{m >= 1} K[m-1] u[t+m]`` (S4's reverse kernel, no lag 0),
    or ``sum_{m >= 0} K[m] u[t+m]`` if ``lag0``."""
    L = len(u)
    y = np.zeros(L)
    for t in range(L):
        for m in range(0 if lag0 else 1, L - t):
            y[t] += K[m if lag0 else m - 1] * u[t + m]
    return y


def monarch_dense(R: np.ndarray, L: np.ndarray) -> np.ndarray:
    """The (n_in, n_out) matrix of a Monarch map, built as a product of explicit
    matrices: ``blockdiag(R) @ P1 @ blockdiag(L) @ P2`` (``x @ W`` layout), with
    ``R`` (b, p, q), ``L`` (q, b, s) and the permutations written as loops:
    ``P1`` sends output ``j`` of R-block ``a`` (index a·q + j) to input ``a`` of
    L-block ``j`` (index j·b + a); ``P2`` sends output ``t`` of L-block ``j``
    (index j·s + t) to feature t·q + j."""
    b, p, q = R.shape
    s = L.shape[2]

    def block_diag(blocks):
        n, r, c = blocks.shape
        out = np.zeros((n * r, n * c), dtype=blocks.dtype)
        for i in range(n):
            out[i * r:(i + 1) * r, i * c:(i + 1) * c] = blocks[i]
        return out

    P1 = np.zeros((b * q, q * b))
    for a in range(b):
        for j in range(q):
            P1[a * q + j, j * b + a] = 1
    P2 = np.zeros((q * s, s * q))
    for j in range(q):
        for t in range(s):
            P2[j * s + t, t * q + j] = 1
    return block_diag(R) @ P1 @ block_diag(L) @ P2


def hyena_filter(weights: list, biases: list, freq: np.ndarray, out: np.ndarray, l_max: int,
                 emb_dim: int, length: int, target=1e-2, fast=0.3, slow=1.5) -> np.ndarray:
    """Hyena's implicit filter (channels, length) from its formula, as written in the
    reference card: features [t, cos, -sin] -> (Linear, sin(freq·))* -> Linear -> times
    exp(-t|delta_c|)."""
    bands = (emb_dim - 1) // 2
    rows = []
    for i in range(l_max):
        w = 2 * math.pi * i / l_max
        f = [1e-4 + k * (bands - 1 - 1e-4) / max(bands - 1, 1) for k in range(bands)]
        rows.append([i / (l_max - 1)] + [math.cos(fk * w) for fk in f] + [-math.sin(fk * w) for fk in f])
    h = np.array(rows)[:length]
    for W, bias in zip(weights, biases):
        h = np.sin(freq * (h @ W + bias))
    k = h @ out  # (length, channels)
    channels = k.shape[1]
    lo, hi = math.log(target) / slow, math.log(target) / fast
    deltas = np.array([lo + c * (hi - lo) / max(channels - 1, 1) for c in range(channels)])
    t = np.array([i / (l_max - 1) for i in range(l_max)])[:length]
    return (k * np.exp(-t[:, None] * np.abs(deltas)[None, :])).T


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """The exact GELU ``x Φ(x) = x (1 + erf(x / sqrt 2)) / 2`` (PyTorch's ``nn.GELU()``)."""
    return np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x)


def m2_bert_layer(x: np.ndarray, p: dict, eps: float) -> np.ndarray:
    """M2's BERT layer on one example x (L, d), as HazyResearch/m2 writes it
    (``BertLayer``: ``MonarchMixerSequenceMixing`` then ``BertGatedLinearUnitMLP``), from
    the weights in ``p`` (``x @ W`` layout), with loops over time:

    mixer: u = x W_in + b_in (3d); depthwise causal conv of width K with bias; split
    x1, x2, v; v <- v x1; y[t] = sum_{s<=t} K[s] v[t-s] + sum_{m>=1} K_rev[m-1] v[t+m]
    + D v[t]; y <- y x2; h = y W_out + b_out (no residual, no norm).
    GLU MLP: [g, n] = h W_up (no bias); out = LayerNorm(h + (gelu(g) n) W_down + b_down).
    """
    L, d = x.shape
    u = x @ p["W_in"] + p["b_in"]
    width = p["conv_w"].shape[0]
    uc = np.zeros_like(u)
    for t in range(L):
        uc[t] = p["conv_b"]
        for k in range(width):
            if t - (width - 1) + k >= 0:
                uc[t] += p["conv_w"][k] * u[t - (width - 1) + k]
    x1, x2, v = uc[:, :d], uc[:, d:2 * d], uc[:, 2 * d:]
    v = v * x1
    y = np.zeros((L, d))
    for c in range(d):
        y[:, c] = causal_conv(v[:, c], p["K"][c]) + p["D"][c] * v[:, c]
        if p.get("K_rev") is not None:
            y[:, c] += anticausal_conv(v[:, c], p["K_rev"][c], lag0=False)
    h = (y * x2) @ p["W_out"] + p["b_out"]
    hidden = p["W_down"].shape[0]
    gn = h @ p["W_up"]
    z = h + (gelu_erf(gn[:, :hidden]) * gn[:, hidden:]) @ p["W_down"] + p["b_down"]
    mean = z.mean(-1, keepdims=True)
    var = ((z - mean) ** 2).mean(-1, keepdims=True)
    return (z - mean) / np.sqrt(var + eps) * p["ln_scale"] + p["ln_bias"]


def recurrence(Abar, Bbar, C, u: np.ndarray) -> np.ndarray:
    """``x_t = Abar x_{t-1} + Bbar u_t`` from ``x_{-1} = 0``; ``y_t = C x_t``
    (the update comes first, so y_0 = C Bbar u_0)."""
    x = np.zeros(Abar.shape[0], dtype=np.result_type(Abar, Bbar))
    y = np.zeros(len(u), dtype=np.result_type(x, C))
    for t in range(len(u)):
        x = np.einsum("ij,j->i", Abar, x) + Bbar * u[t]
        y[t] = np.sum(C * x)
    return y


def smooth_number(n: int) -> int:
    """Smallest m >= n whose only prime factors are 2, 3 and 5."""
    m = max(n, 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


# ------------------------------------------------------------- HiPPO-LegS, S4's nplr


def legs_nplr(N: int, b_clip: float | None = None, basis: np.ndarray | None = None):
    """``(Lambda, Bt)`` (N/2,) of S4's ``nplr("legs", N, B_clip=b_clip)``, from the
    published formulas alone: ``A[n, k] = -sqrt((2n+1)(2k+1))`` below the diagonal and
    ``-(n+1)`` on it, ``B = sqrt(2n+1)``, ``P = sqrt(n + 1/2)``; ``A + P P^T = -I/2 + S``
    with S skew, ``(Im Lambda, V) = eigh(-i S)``, sorted, the first N/2 (negative Im)
    kept, ``Bt = V^* B``, then ``Im Bt`` clipped to ``[-b_clip, b_clip]`` (None: not).

    The clip depends on the phase of each column of V, which an eigendecomposition
    leaves arbitrary (``eigh`` takes LAPACK's, in the reference as here). ``basis``
    (N, N/2): eigenvectors in the phases to clip in, checked to be the same
    eigenvectors as ``eigh``'s up to phase."""
    n = np.arange(N, dtype=np.float64)
    A = -np.tril(np.sqrt(np.outer(2 * n + 1, 2 * n + 1)), -1) - np.diag(n + 1)
    B, P = np.sqrt(2 * n + 1), np.sqrt(n + 0.5)
    S = A + np.outer(P, P) + 0.5 * np.eye(N)
    im, V = np.linalg.eigh(-1j * S)
    order = np.argsort(im)[: N // 2]
    V = V[:, order]
    if basis is not None:
        overlap = np.abs(basis.conj().T @ V)  # the identity when the columns differ by phases only
        assert np.abs(overlap - np.eye(N // 2)).max() < 1e-8, "basis: not the eigenvectors of LegS's normal part"
        V = basis
    Bt = V.conj().T @ B
    if b_clip is not None:
        Bt = Bt.real + 1j * np.clip(Bt.imag, -b_clip, b_clip)
    return -0.5 + 1j * im[order], Bt


# ------------------------------------------------------------------------ activations


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """GELU, ``x Phi(x)`` with ``Phi(x) = (1 + erf(x / sqrt 2)) / 2 = erfc(-x / sqrt 2) / 2``
    (Hendrycks & Gimpel, 2016), by ``math.erfc`` element by element (no cancellation
    for x << 0)."""
    x = np.asarray(x, np.float64)
    return x * np.vectorize(math.erfc)(-x / math.sqrt(2)) / 2


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh approximation, ``x (1 + tanh(u)) / 2`` with
    ``u = sqrt(2/pi) (x + 0.044715 x^3)`` (Hendrycks & Gimpel, 2016; Hugging Face's
    ``gelu_new``), written as ``x / (1 + exp(-2u))`` (no cancellation for x << 0)."""
    x = np.asarray(x, np.float64)
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return x / (1 + np.exp(-2 * u))


# --------------------------------------------------- HiPPO online function approximation


def legendre_basis(N: int, x: np.ndarray) -> np.ndarray:
    """``sqrt(2n+1) P_n(x)`` for n < N at points x: (len(x), N)."""
    return np.stack(
        [math.sqrt(2 * n + 1) * legendre.legval(x, np.eye(N)[n]) for n in range(N)], axis=-1
    )


def hippo_legs_online(f: np.ndarray, A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Scale-invariant HiPPO-LegS, ``c'(t) = (A c + B f) / t``, over samples f (T,).

    Step k (0-based) is bilinear with ``A/(k+1)``, ``B/(k+1)`` from ``c = 0``, as in
    S4's ``HiPPOScale``. The final state holds Legendre coefficients of the whole
    history: ``f(s T) ~ sum_n c_n sqrt(2n+1) P_n(2s - 1)`` for s in [0, 1].
    """
    N = len(B)
    eye = np.eye(N)
    c = np.zeros(N)
    for k, fk in enumerate(f):
        a, b = A / (k + 1), B / (k + 1)
        c = np.linalg.solve(eye - a / 2, np.einsum("ij,j->i", eye + a / 2, c) + b * fk)
    return c


def hippo_legt_online(f: np.ndarray, A: np.ndarray, B: np.ndarray, step: float) -> np.ndarray:
    """Translated HiPPO-LegT, ``c'(t) = (A c + B f) / theta``, bilinear with
    ``step = dt / theta`` over samples f (T,), from ``c = 0``. Returns the final
    state (N,): coefficients of the last window ``[t - theta, t]``."""
    Abar, Bbar = discretize_bilinear(A, B, step)
    c = np.zeros(len(B))
    for fk in f:
        c = np.einsum("ij,j->i", Abar, c) + Bbar * fk
    return c


# ------------------------------------------------------------------- SSD (Mamba-2)
# These take batched arrays (b batch, L length, H heads, P headdim, G groups,
# N state size) but loop over every batch row, head or channel, and time step.


def ssd_segsum_loop(a: np.ndarray) -> np.ndarray:
    """``out[i, j] = a[j+1] + ... + a[i]`` for ``i >= j`` and ``-inf`` above the
    diagonal, for a 1-D ``a`` (T,): a double loop of explicit sums."""
    T = len(a)
    out = np.full((T, T), -np.inf)
    for i in range(T):
        for j in range(i + 1):
            out[i, j] = sum(a[k] for k in range(j + 1, i + 1))
    return out


def ssd_loop(x, dt, A, B, C, initial_state=None):
    """Mamba-2's SSD recurrence, one head and one token at a time, in float64.

    ``x`` (b, L, H, P), ``dt`` (b, L, H), ``A`` (H,), ``B``, ``C`` (b, L, G, N), head
    h reading group ``h // (H / G)``; ``initial_state`` (b, H, P, N) or None.
    Per head: ``S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T`` (P, N), ``y_t = S_t C_t``.
    Returns ``y`` (b, L, H, P) and the final state (b, H, P, N).
    """
    x, dt, A, B, C = (np.asarray(v, np.float64) for v in (x, dt, A, B, C))
    b, L, H, P = x.shape
    G, N = B.shape[2:]
    y = np.zeros((b, L, H, P))
    final = np.zeros((b, H, P, N))
    for i in range(b):
        for h in range(H):
            g = h // (H // G)
            S = np.zeros((P, N)) if initial_state is None else np.array(initial_state[i, h], np.float64)
            for t in range(L):
                S = math.exp(dt[i, t, h] * A[h]) * S + dt[i, t, h] * np.outer(x[i, t, h], B[i, t, g])
                y[i, t, h] = np.einsum("pn,n->p", S, C[i, t, g])
            final[i, h] = S
    return y, final


def selective_scan_loop(u, delta, A, B, C):
    """Mamba-1's selective scan (``selective_scan_ref`` without D, z or bias), one
    channel and one token at a time, in float64.

    ``u``, ``delta`` (b, L, D); ``A`` (D, N); ``B``, ``C`` (b, L, G, N), channel d
    reading group ``d // (D / G)``. Per channel: ``h_t = exp(delta_t A) * h_{t-1} +
    delta_t B_t u_t`` (N,), ``y_t = C_t . h_t``. Returns ``y`` (b, L, D).
    """
    u, delta, A, B, C = (np.asarray(v, np.float64) for v in (u, delta, A, B, C))
    b, L, D = u.shape
    G = B.shape[2]
    y = np.zeros((b, L, D))
    for i in range(b):
        for d in range(D):
            g = d // (D // G)
            h = np.zeros(A.shape[1])
            for t in range(L):
                h = np.exp(delta[i, t, d] * A[d]) * h + delta[i, t, d] * B[i, t, g] * u[i, t, d]
                y[i, t, d] = np.dot(C[i, t, g], h)
    return y


def silu(v: np.ndarray) -> np.ndarray:
    """``v sigmoid(v)``."""
    return v / (1 + np.exp(-v))


def depthwise_conv_loop(x, kernel, bias=None):
    """The causal depthwise convolution of Mamba's blocks (PyTorch's ``Conv1d(groups=C,
    padding=K-1)`` cut to the length), a loop over taps: ``x`` (b, L, C), ``kernel``
    (K, C), ``bias`` (C,) or None; ``y[t] = bias + sum_k kernel[k] x[t - (K - 1) + k]``
    with zeros before the start. Returns (b, L, C)."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    K, L = kernel.shape[0], x.shape[1]
    y = np.zeros_like(x) + (0.0 if bias is None else np.asarray(bias, np.float64))
    for t in range(L):
        for k in range(K):  # kernel[k] meets x[t - (K - 1) + k]
            if t - (K - 1) + k >= 0:
                y[:, t] += kernel[k] * x[:, t - (K - 1) + k]
    return y


def mamba_forward_loop(p: dict, x, *, dt_rank: int, d_state: int):
    """Mamba's block (state-spaces/mamba ``modules/mamba_simple.py``, the reference
    path without fused kernels) in float64 from its weights ``p``: ``in_kernel`` (d,
    2 d_inner), ``conv_kernel`` (K, d_inner), ``x_kernel`` (d_inner, dt_rank + 2 N),
    ``dt_kernel`` (dt_rank, d_inner), ``dt_bias``, ``D`` (d_inner,), ``A_log``
    (d_inner, N), ``out_kernel`` (d_inner, d), and optional ``in_bias``, ``conv_bias``,
    ``out_bias``. ``x`` (b, L, d).

    in_proj -> [x, z]; causal depthwise convolution of x and SiLU -> u; x_proj(u) ->
    [dt, B, C] (dt_rank, N, N, in that order); delta = softplus(dt dt_kernel + dt_bias);
    :func:`selective_scan_loop` with A = -exp(A_log); y += D u; y *= silu(z); out_proj.
    """
    p = {k: None if v is None else np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    bias = lambda name: 0.0 if p.get(name) is None else p[name]  # noqa: E731
    xz = np.einsum("bld,de->ble", x, p["in_kernel"]) + bias("in_bias")
    xs, z = np.split(xz, 2, axis=-1)
    u = silu(depthwise_conv_loop(xs, p["conv_kernel"], p.get("conv_bias")))
    dt, B, C = np.split(np.einsum("ble,ef->blf", u, p["x_kernel"]), [dt_rank, dt_rank + d_state], axis=-1)
    delta = softplus(np.einsum("blr,re->ble", dt, p["dt_kernel"]) + p["dt_bias"])
    y = selective_scan_loop(u, delta, -np.exp(p["A_log"]), B[:, :, None], C[:, :, None])
    y = (y + p["D"] * u) * silu(z)
    return np.einsum("ble,ed->bld", y, p["out_kernel"]) + bias("out_bias")


def mamba2_forward_loop(p: dict, x, *, headdim: int, ngroups: int, eps: float = 1e-5,
                        dt_limit=(0.0, math.inf)):
    """Mamba-2's mixer (state-spaces/mamba ``Mamba2``, simple path) in float64 from
    its weights ``p``: ``in_kernel`` (d, d_in_proj), ``conv_kernel`` (K, conv_dim),
    ``conv_bias`` (conv_dim,), ``dt_bias``, ``A_log``, ``D`` (H,), ``norm_scale``
    (d_inner,), ``out_kernel`` (d_inner, d); no projection biases. ``x`` (b, L, d).

    in_proj -> [z, x, B, C, dt]; causal depthwise convolution of xBC (a loop over
    taps) and SiLU; dt = softplus(dt + dt_bias) clipped to dt_limit; :func:`ssd_loop` with
    A = -exp(A_log); y += D x; RMSNorm of y * silu(z) over groups of d_inner / G
    channels, times the scale; out_proj.
    """
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    b, L, _ = x.shape
    conv_dim = p["conv_kernel"].shape[1]
    H = len(p["A_log"])
    d_inner = H * headdim
    N = (conv_dim - d_inner) // (2 * ngroups)
    zxbcdt = np.einsum("bld,de->ble", x, p["in_kernel"])
    z, xBC, dt = np.split(zxbcdt, [d_inner, d_inner + conv_dim], axis=-1)
    conv = depthwise_conv_loop(xBC, p["conv_kernel"], p["conv_bias"])
    xs, B, C = np.split(silu(conv), [d_inner, d_inner + ngroups * N], axis=-1)
    xs = xs.reshape(b, L, H, headdim)
    dt = np.clip(np.log1p(np.exp(dt + p["dt_bias"])), *dt_limit)
    y, _ = ssd_loop(xs, dt, -np.exp(p["A_log"]), B.reshape(b, L, ngroups, N), C.reshape(b, L, ngroups, N))
    y = (y + p["D"][:, None] * xs).reshape(b, L, d_inner) * silu(z)
    groups = y.reshape(b, L, ngroups, d_inner // ngroups)
    y = (groups / np.sqrt((groups**2).mean(-1, keepdims=True) + eps)).reshape(b, L, d_inner) * p["norm_scale"]
    return np.einsum("ble,ed->bld", y, p["out_kernel"])


# ------------------------------------------------------------- selective scan (Mamba S6)


def softplus(x: np.ndarray) -> np.ndarray:
    """``log(1 + e^x)``, and exactly ``x`` above 20 (torch's threshold, as Mamba uses)."""
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))


def _per_channel(M: np.ndarray, d: int) -> np.ndarray:
    """B or C, (b, l, n) or (b, l, g, n), as (b, l, d, n): channel c reads group c // (d/g)."""
    if M.ndim == 3:
        M = M[:, :, None, :]
    return np.repeat(M, d // M.shape[2], axis=2)


def _scan_order(length: int, reset, batch: int, reverse: bool):
    """Positions in the order scanned, and keep (b, l): 1 where the state of the previously
    scanned position flows into t, 0 where t starts a sequence (forward) or t+1 does (reverse)."""
    keep = np.ones((batch, length))
    if reset is not None:
        reset = np.asarray(reset, bool)
        if reverse:
            keep[:, :-1] = ~reset[:, 1:]
        else:
            keep = (~reset).astype(float)
    order = range(length - 1, -1, -1) if reverse else range(length)
    return list(order), keep


def _selective_scan_states(u, delta, A, B, C, delta_bias, delta_softplus, initial_state,
                           reset, reverse):
    """Forward pass in float64; returns everything the backward pass needs."""
    u, delta, A = (np.asarray(v, np.float64) for v in (u, delta, A))
    b, l, d = u.shape
    pre = delta + (0.0 if delta_bias is None else np.asarray(delta_bias, np.float64))
    dt = softplus(pre) if delta_softplus else pre
    Bx, Cx = (_per_channel(np.asarray(M, np.float64), d) for M in (B, C))
    order, keep = _scan_order(l, reset, b, reverse)
    h = np.zeros((b, d, A.shape[1])) if initial_state is None else np.array(initial_state, np.float64)
    before, after, y = {}, {}, np.zeros((b, l, d))
    for t in order:
        before[t] = h
        decay = keep[:, t, None, None] * np.exp(dt[:, t, :, None] * A)  # deltaA
        h = decay * h + (dt[:, t] * u[:, t])[:, :, None] * Bx[:, t]  # + deltaB u
        after[t] = h
        y[:, t] = np.sum(h * Cx[:, t], axis=-1)
    return dict(u=u, A=A, pre=pre, dt=dt, Bx=Bx, Cx=Cx, order=order, keep=keep,
                before=before, after=after, y=y, last=h)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, reset=None, reverse=False):
    """Mamba's ``selective_scan_ref`` in float64, channel-last, one position at a time.

    ``dt = softplus(delta + delta_bias)`` (optional), ``h_t = exp(dt_t A) h_{t-1} +
    dt_t u_t B_t``, ``y_t = <h_t, C_t> + D u_t``, ``y_t *= silu(z_t)``. Shapes:
    u, delta, z (b, l, d); A (d, n); B, C (b, l, n) or (b, l, g, n); D, delta_bias (d,);
    initial_state (b, d, n); reset (b, l) bool (True: t starts a sequence, the state
    entering it is zero; with ``reverse`` the state from t+1 is dropped where t+1 starts one).
    Returns ``(y, last_state)``.
    """
    s = _selective_scan_states(u, delta, A, B, C, delta_bias, delta_softplus, initial_state,
                               reset, reverse)
    y = s["y"]
    if D is not None:
        y = y + np.asarray(D, np.float64) * s["u"]
    if z is not None:
        z = np.asarray(z, np.float64)
        y = y * z / (1 + np.exp(-z))
    return y, s["last"]


def selective_scan_vjp(dy, d_last, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, initial_state=None, reset=None, reverse=False):
    """Gradients of ``<dy, y> + <d_last, last_state>`` for :func:`selective_scan`, by
    backpropagation through time written out by hand (no autodiff):

        g_t = dL/dh_t = dy0_t C_t + decay_{t'} g_{t'}   (t' the next position scanned)
        dL/ddecay_t = g_t h_{t-1},  dL/d(dt_t u_t B_t) = g_t,  dL/dC_t = dy0_t h_t,

    where dy0 is the cotangent of the output before the gate. Returns a dict with the
    gradient for every argument that was given (``None`` for those that were not).
    """
    s = _selective_scan_states(u, delta, A, B, C, delta_bias, delta_softplus, initial_state,
                               reset, reverse)
    u, A, dt, Bx, Cx = s["u"], s["A"], s["dt"], s["Bx"], s["Cx"]
    dy = np.asarray(dy, np.float64)
    out = s["y"] if D is None else s["y"] + np.asarray(D, np.float64) * u
    grads = dict(D=None, z=None, delta_bias=None, initial_state=None)
    if z is not None:
        z = np.asarray(z, np.float64)
        sig = 1 / (1 + np.exp(-z))
        grads["z"] = dy * out * sig * (1 + z * (1 - sig))  # silu'(z)
        dy = dy * z * sig  # cotangent before the gate
    du = np.zeros_like(u) if D is None else dy * np.asarray(D, np.float64)
    if D is not None:
        grads["D"] = np.sum(dy * u, axis=(0, 1))
    d_dt, dA = np.zeros_like(dt), np.zeros_like(A)
    dBx, dCx = np.zeros_like(Bx), np.zeros_like(Cx)
    g = np.array(d_last, np.float64)
    for t in reversed(s["order"]):
        g = g + dy[:, t, :, None] * Cx[:, t]
        dCx[:, t] = dy[:, t, :, None] * s["after"][t]
        decay = s["keep"][:, t, None, None] * np.exp(dt[:, t, :, None] * A)
        d_decay = g * s["before"][t]
        gB = np.sum(g * Bx[:, t], axis=-1)
        d_dt[:, t] = np.sum(d_decay * decay * A, axis=-1) + gB * u[:, t]
        dA += np.sum(d_decay * decay * dt[:, t, :, None], axis=0)
        dBx[:, t] = g * (dt[:, t] * u[:, t])[:, :, None]
        du[:, t] += gB * dt[:, t]
        g = decay * g
    if initial_state is not None:
        grads["initial_state"] = g

    def per_group(dM, like):  # (b, l, d, n) -> like's shape: sum channels within a group
        like = np.asarray(like)
        groups = 1 if like.ndim == 3 else like.shape[2]
        b, l, d, n = dM.shape
        return dM.reshape(b, l, groups, d // groups, n).sum(3).reshape(like.shape)

    d_pre = d_dt
    if delta_softplus:
        d_pre = d_dt * np.where(s["pre"] > 20, 1.0, 1 / (1 + np.exp(-s["pre"])))
    if delta_bias is not None:
        grads["delta_bias"] = np.sum(d_pre, axis=(0, 1))
    grads.update(u=du, delta=d_pre, A=dA, B=per_group(dBx, B), C=per_group(dCx, C))
    return grads


# ------------------------------------------------------------------ distributions


def uniform_cdf(lo: float, hi: float):
    """The CDF of U(lo, hi), as a NumPy function."""
    return lambda x: np.clip((np.asarray(x, np.float64) - lo) / (hi - lo), 0.0, 1.0)


def normal_cdf(std: float, truncate: float | None = None):
    """The CDF of N(0, std^2), or of its truncation to [-truncate std, truncate std]
    (renormalized), as a NumPy function."""
    erf = np.vectorize(math.erf)
    phi = lambda z: 0.5 * (1 + erf(z / math.sqrt(2)))  # noqa: E731
    if truncate is None:
        return lambda x: phi(np.asarray(x, np.float64) / std)
    lo, hi = phi(-truncate), phi(truncate)
    return lambda x: np.clip((phi(np.asarray(x, np.float64) / std) - lo) / (hi - lo), 0.0, 1.0)


# ------------------------------------------------------------ attention and LSTM


def rope(x, positions, base: float = 10000.0):
    """Rotary embedding as complex rotations: the pair (x_i, x_{i+k/2}) is the complex
    number x_i + i x_{i+k/2}, multiplied by exp(i p base^(-2i/k)). ``x`` (t, h, k),
    ``positions`` (t,)."""
    x = np.asarray(x, np.float64)
    k = x.shape[-1]
    z = x[..., : k // 2] + 1j * x[..., k // 2 :]
    theta = base ** (-np.arange(k // 2) * 2.0 / k)
    z = z * np.exp(1j * np.asarray(positions, np.float64)[:, None, None] * theta)
    return np.concatenate([z.real, z.imag], -1)


def attention_loop(q, k, v, allowed):
    """Softmax attention one query at a time: ``q`` (t, h, d), ``k``, ``v`` (s, h, d),
    ``allowed`` (t, s) bool. A query with no allowed key gets zeros."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    t, h, d = q.shape
    out = np.zeros((t, h, d))
    for i in range(t):
        keys = np.flatnonzero(allowed[i])
        if len(keys) == 0:
            continue
        for j in range(h):
            scores = k[keys, j] @ q[i, j] / math.sqrt(d)
            w = np.exp(scores - scores.max())
            out[i, j] = (w / w.sum()) @ v[keys, j]
    return out


def lstm_loop(x, W_i, W_h, bias):
    """An LSTM (Hochreiter & Schmidhuber) one step at a time: ``x`` (L, d_in),
    ``W_i`` (d_in, 4H), ``W_h`` (H, 4H), ``bias`` (4H,), gates in the order input,
    forget, cell, output. Returns the hidden states (L, H) and the last (c, h)."""
    x, W_i, W_h, bias = (np.asarray(a, np.float64) for a in (x, W_i, W_h, bias))
    H = W_h.shape[0]
    sigmoid = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    c, h = np.zeros(H), np.zeros(H)
    hs = []
    for x_t in x:
        pre = x_t @ W_i + h @ W_h + bias
        i, f, g, o = sigmoid(pre[:H]), sigmoid(pre[H : 2 * H]), np.tanh(pre[2 * H : 3 * H]), sigmoid(pre[3 * H :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), (c, h)
