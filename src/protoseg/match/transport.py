r"""Batched entropic optimal transport (Sinkhorn) in the log domain, on torch tensors of any device.

Problem (one per batch entry ``b``; POT's ``ot.sinkhorn`` convention)::

    X* = argmin_{X >= 0}  <X, M> + eps * sum_ij X_ij (log X_ij - 1)
         s.t.  X 1 = a,   X^T 1 = b

with supplies ``a [m]``, demands ``b [n]`` (``sum a == sum b``), costs ``M [m, n]`` and regularisation
``eps``. Its solution is ``X_ij = exp((f_i + g_j - M_ij) / eps)`` for dual potentials ``f [m]``,
``g [n]``, found by alternating exact marginal fits (Sinkhorn-Knopp, written on the potentials)::

    g_j <- eps log b_j - eps LSE_i((f_i - M_ij) / eps)      (columns match b)
    f_i <- eps log a_i - eps LSE_j((g_j - M_ij) / eps)      (rows match a)

starting from ``f = eps log(1 / m)`` — the same iterates as POT's ``sinkhorn_knopp`` started from
``u = 1 / m`` (one iteration = one ``g`` then one ``f`` update), so with equal ``eps`` and iteration
counts both return the same plan. After every iteration the rows match ``a`` exactly; the column
marginal error ``||X^T 1 - b||_2`` (POT's criterion) is checked every ``check_every`` iterations and
the loop stops once every problem of the batch (of the chunk, below) is below ``stop_thr``. The result
reports each problem's final marginal error and whether it converged (error ``<= stop_thr``): a problem
that reached ``num_iter_max`` first did not, and its plan does not meet its demands.

Two evaluation schemes of the very same iterates:

- ``method="log"``: each update is a ``logsumexp`` over the cost tensor (``exp`` of the whole tensor
  twice per iteration); robust for any ``eps``.
- ``method="log-stabilized"`` (default): the log-domain absorption scheme (Schmitzer 2019, POT's
  ``sinkhorn_stabilized``): potentials ``(f, g)`` are kept in the log domain and the kernel
  ``K~_ij = exp((f_i + g_j - M_ij) / eps)`` is materialised once; iterations update scalings
  ``u = a / (K~ v)``, ``v = b / (K~^T u)`` with two batched mat-vecs (no ``exp``), and when a scaling
  has left ``[1/tau, tau]`` it is absorbed into the potentials (``f += eps log u``, ...) and ``K~`` is
  rebuilt. These checks run once per block of ``check_every`` iterations, with the error check (one host
  synchronisation per block); a block whose scalings over- or underflowed is redone from its start with
  the checks after every iteration (a marginal fit that underflows in ``float32`` is then redone exactly
  in the log domain). The
  batch is solved in chunks small enough for one chunk's kernel to stay in the CPU cache. On a CPU with
  few cores, set ``OMP_WAIT_POLICY=PASSIVE`` before torch starts: spinning OpenMP threads otherwise
  stall the loop's many small operations (measured 10x slower on 2 cores).

Variable problem sizes in one batch: demanders beyond a problem's count are marked by ``mask`` (or
``b == 0``); they get ``g = -inf`` and receive exactly zero mass. Suppliers may be shared by the whole
batch (``a [m]``) or differ per problem (``a [B, m]``, zeros allowed likewise).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

METHODS = ("log", "log-stabilized")


@dataclass
class SinkhornResult:
    """Dual potentials and diagnostics of :func:`sinkhorn_log`.

    Attributes:
        f: ``[B, m]`` supplier potentials (``-inf`` for zero supply).
        g: ``[B, n]`` demander potentials (``-inf`` for padded / zero demand).
        iterations: iterations run (the most of any chunk).
        error: ``[B]`` final marginal error ``||X^T 1 - b||_2`` of each problem's plan (its rows match ``a``
            after every iteration; ``inf`` when no iteration ran).
        converged: bool ``[B]``, ``error <= stop_thr``.
        eps: regularisation used.
    """

    f: torch.Tensor
    g: torch.Tensor
    iterations: int
    error: torch.Tensor
    converged: torch.Tensor
    eps: float

    def plan(self, M: torch.Tensor) -> torch.Tensor:
        """Transport plan ``[B, m, n]`` for the cost ``M [B, m, n]`` the potentials were computed on."""
        return plan_from_potentials(self.f, self.g, M, self.eps)


def _log_marginal(x: torch.Tensor) -> torch.Tensor:
    """``log`` with ``log 0 = -inf`` (no warning, no NaN)."""
    return torch.where(x > 0, x.clamp_min(torch.finfo(x.dtype).tiny).log(), torch.full_like(x, -math.inf))


def plan_from_potentials(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, eps: float) -> torch.Tensor:
    """Plan ``X_ij = exp((f_i + g_j - M_ij) / eps)``;

    ``f [B, m]``, ``g [B, n]``, ``M [B, m, n]`` -> ``[B, m, n]``."""
    return torch.exp((f[..., :, None] + g[..., None, :] - M) / eps)


def _marginal_fit(log_marg: torch.Tensor, other: torch.Tensor, cost: torch.Tensor, eps: float, other_dim: int
                  ) -> torch.Tensor:
    """One exact marginal fit in the log domain: ``eps log marg - eps LSE_k((other_k - cost_.k) / eps)``.

    Args:
        log_marg: ``[B, p]`` log of the marginal to match (``-inf`` where it is 0).
        other: ``[B, q]`` the other side's potentials, indexing dimension ``other_dim`` of ``cost``.
        cost: ``[B, p, q]`` (``other_dim=2``) or ``[B, q, p]`` (``other_dim=1``), any layout of ``M``.

    Returns:
        ``[B, p]`` potentials of the fitted side; ``-inf`` where the marginal is 0.
    """
    z = (other.unsqueeze(3 - other_dim) - cost) / eps
    out = eps * (log_marg - torch.logsumexp(z, dim=other_dim))
    # Rows / columns with zero marginal stay at -inf (and never produce NaN from -inf - -inf).
    return torch.where(torch.isfinite(log_marg), out, torch.full_like(out, -math.inf))


def _column_error(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, eps: float, b: torch.Tensor,
                  measured: torch.Tensor | None = None) -> torch.Tensor:
    """``||X^T 1 - b||_2`` per problem over the ``measured`` columns (all by default), in the log domain: ``[B]``."""
    cols = torch.exp(torch.logsumexp((f[..., :, None] + g[..., None, :] - M) / eps, dim=-2))
    cols = torch.nan_to_num(cols, nan=0.0)
    return _masked_norm(cols - b, measured)


def _masked_norm(diff: torch.Tensor, measured: torch.Tensor | None) -> torch.Tensor:
    """L2 norm over the last dimension of ``diff [B, n]``, counting only ``measured [B, n]`` entries."""
    if measured is not None:
        diff = torch.where(measured, diff, torch.zeros_like(diff))
    return torch.linalg.vector_norm(diff, dim=-1)


def _chunk_size(B: int, m: int, n: int, element_size: int, device: torch.device,
                chunk_bytes: int | None | str) -> int:
    """Problems solved together: all on CUDA; on CPU as many as keep one kernel in cache (``chunk_bytes``)."""
    if chunk_bytes == "auto":
        chunk_bytes = None if device.type != "cpu" else 8 * 2**20
    if chunk_bytes is None:
        return max(B, 1)
    return int(max(1, min(B, int(chunk_bytes) // max(m * n * element_size, 1))))


def sinkhorn_log(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, reg: float, *,
                 mask: torch.Tensor | None = None, num_iter_max: int = 1000, stop_thr: float = 1e-9,
                 check_every: int = 10, method: str = "log-stabilized", tau: float = 1e6,
                 chunk_bytes: int | None | str = "auto", measured: torch.Tensor | None = None) -> SinkhornResult:
    """Entropic OT for a batch of problems sharing the supplier count ``m`` and padded demander count ``n``.

    Args:
        a: supplies ``[m]`` (shared by the batch) or ``[B, m]``; non-negative.
        b: demands ``[B, n]``; non-negative; each problem's ``sum b`` must equal its ``sum a``.
        M: costs ``[B, m, n]`` (finite; values at padded entries are ignored). Passing the transposed
            view of a contiguous ``[B, n, m]`` tensor (``Mt.transpose(1, 2)``) avoids a copy in
            ``"log-stabilized"``.
        reg: entropic regularisation ``eps > 0`` (same units as ``M``).
        mask: optional bool ``[B, n]``, ``False`` = padded demander (treated as ``b = 0``).
        num_iter_max: iteration cap (one iteration = column fit + row fit).
        stop_thr: stop a chunk when each of its problems' column-marginal L2 error is below this
            (``0``: run all ``num_iter_max`` iterations).
        check_every: iterations between error checks (and the final check).
        method: ``"log"`` or ``"log-stabilized"`` (module docstring); same iterates.
        tau: absorption threshold of ``"log-stabilized"`` (scalings kept within ``[1/tau, tau]``).
        chunk_bytes: ``"log-stabilized"`` solves the batch in chunks whose kernel fits this many bytes
            (cache blocking; ``"auto"``: 8 MiB on CPU, the whole batch on GPUs; ``None``: whole batch).
        measured: optional bool ``[B, n]`` (or ``[n]``): the columns whose marginal error is measured
            (``error``, the stopping test); default all. Rows match ``a`` exactly after every iteration, so
            the columns left out carry minus the measured columns' total error: leaving out one column
            whose demand is large (DPSM's dustbin) still bounds its error, without asking ``float32`` for
            an absolute precision below its resolution at that demand.

    Returns:
        :class:`SinkhornResult` with potentials ``f [B, m]``, ``g [B, n]``; ``result.plan(M)`` is the plan.
    """
    a, b, M, eps = _check_inputs(a, b, M, reg, mask, method)
    measured = _measured(measured, M)
    chunks = _solve_chunks(a, b, M, eps, method, num_iter_max, stop_thr, check_every, tau, chunk_bytes, measured)
    return _concat_results([res for _, res, _ in chunks])


def _check_inputs(a, b, M, reg, mask, method):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if reg <= 0:
        raise ValueError(f"reg must be > 0, got {reg}")
    if M.ndim != 3:
        raise ValueError(f"M must be [B, m, n], got shape {tuple(M.shape)}")
    B, m, n = M.shape
    a = a.to(M.device, M.dtype)
    b = b.to(M.device, M.dtype)
    if a.ndim == 1:
        a = a.expand(B, m)
    if mask is not None:
        b = torch.where(mask.to(M.device), b, torch.zeros_like(b))
    return a, b, M, float(reg)


def _measured(measured: torch.Tensor | None, M: torch.Tensor) -> torch.Tensor | None:
    """``measured`` as bool ``[B, n]`` on ``M``'s device (``None`` stays ``None``: every column)."""
    if measured is None:
        return None
    return measured.to(M.device, torch.bool).expand(M.shape[0], M.shape[2])


def _solve_chunks(a, b, M, eps, method, num_iter_max, stop_thr, check_every, tau, chunk_bytes, measured=None
                  ) -> Iterator[tuple[slice, SinkhornResult, _ScaledState | None]]:
    """Solve the batch chunk by chunk: ``(problems, result, scaled state)`` per chunk.

    ``"log"`` solves the whole batch as one chunk (no scaled state); ``"log-stabilized"`` solves chunks of
    :func:`_chunk_size` problems and also yields each chunk's final scaled state (its kernel is still in
    memory, so per-chunk reductions need no second ``exp``).
    """
    B, m, n = M.shape
    if method == "log":
        yield slice(0, B), _sinkhorn_lse(a, b, M, eps, num_iter_max, stop_thr, check_every, measured), None
        return
    size = _chunk_size(B, m, n, M.element_size(), M.device, chunk_bytes)
    for s in range(0, B, size):
        res, st = _sinkhorn_absorb(a[s:s + size], b[s:s + size], M[s:s + size].transpose(1, 2).contiguous(),
                                   eps, num_iter_max, stop_thr, check_every, tau,
                                   None if measured is None else measured[s:s + size])
        yield slice(s, s + size), res, st


def _concat_results(parts: list[SinkhornResult]) -> SinkhornResult:
    """One result for the whole batch from the chunks' results, in order."""
    if len(parts) == 1:
        return parts[0]
    return SinkhornResult(f=torch.cat([p.f for p in parts]), g=torch.cat([p.g for p in parts]),
                          iterations=max(p.iterations for p in parts), error=torch.cat([p.error for p in parts]),
                          converged=torch.cat([p.converged for p in parts]), eps=parts[0].eps)


def _result(f, g, iterations: int, err: torch.Tensor, stop_thr: float, eps: float) -> SinkhornResult:
    return SinkhornResult(f=f, g=g, iterations=iterations, error=err, converged=err <= stop_thr, eps=eps)


def _sinkhorn_lse(a, b, M, eps, num_iter_max, stop_thr, check_every, measured=None) -> SinkhornResult:
    log_a, log_b = _log_marginal(a), _log_marginal(b)
    f = torch.where(torch.isfinite(log_a), torch.full_like(a, eps * math.log(1.0 / M.shape[1])),
                    torch.full_like(a, -math.inf))
    g = torch.zeros_like(log_b)
    err = torch.full((M.shape[0],), math.inf, dtype=M.dtype, device=M.device)
    it = 0
    while it < num_iter_max:
        g = _marginal_fit(log_b, f, M, eps, other_dim=1)  # columns match b
        f = _marginal_fit(log_a, g, M, eps, other_dim=2)  # rows match a
        it += 1
        if it % check_every == 0 or it == num_iter_max:
            err = _column_error(f, g, M, eps, b, measured)
            if stop_thr > 0 and bool((err < stop_thr).all()):
                break
    return _result(f, g, it, err, stop_thr, eps)


@dataclass
class _ScaledState:
    """Log-stabilised state of a chunk: ``X = diag(u) K~ diag(v)``, ``K~t [B, n, m] = exp((f+g-M)/eps)^T``."""

    f: torch.Tensor
    g: torch.Tensor
    u: torch.Tensor
    v: torch.Tensor
    Kt: torch.Tensor


def _kernel_t(f: torch.Tensor, g: torch.Tensor, Mt: torch.Tensor, eps: float) -> torch.Tensor:
    """``K~t [B, n, m] = exp((f_i + g_j - M_ij) / eps)`` from ``Mt [B, n, m]``; ``-inf`` potentials give 0."""
    z = g[:, :, None] + f[:, None, :]
    z = z.sub_(Mt).div_(eps)
    return z.exp_()


def _sinkhorn_absorb(a, b, Mt, eps, num_iter_max, stop_thr, check_every, tau, measured=None
                     ) -> tuple[SinkhornResult, _ScaledState]:
    """Scaling iterations with log-domain absorption on one chunk (``Mt [B, n, m]``).

    The loop body is two batched mat-vecs: overflow / underflow of the scalings and the absorption
    threshold are checked once per block of ``check_every`` iterations, together with the marginal error
    (one host synchronisation per block). A block whose scalings stopped being finite is redone from its
    start with the checks after every iteration (and exact log-domain fits where a marginal underflows),
    so the iterates are those of the checked loop.
    """
    B, n, m = Mt.shape
    live_a, live_b = a > 0, b > 0
    log_a, log_b = _log_marginal(a), _log_marginal(b)
    ninf = -math.inf
    # f = 0 with u = 1/m is POT's start; g = per-column minimum cost keeps every column's largest kernel
    # entry at exactly 1, so the first column fit cannot underflow.
    f = torch.where(live_a, torch.zeros_like(a), torch.full_like(a, ninf))
    g = torch.where(live_b, Mt.amin(dim=2), torch.full_like(b, ninf))
    st = _ScaledState(f=f, g=g, u=torch.where(live_a, torch.full_like(a, 1.0 / m), torch.zeros_like(a)),
                      v=live_b.to(b.dtype), Kt=_kernel_t(f, g, Mt, eps))
    zeros_a, zeros_b = torch.zeros_like(a), torch.zeros_like(b)
    ones_a, ones_b = torch.ones_like(a), torch.ones_like(b)
    err = torch.full((B,), math.inf, dtype=Mt.dtype, device=Mt.device)
    step = max(1, int(check_every))
    it = 0
    while it < num_iter_max:
        block = min(step - it % step, num_iter_max - it)  # up to the next multiple of check_every
        saved_u, saved_v = st.u, st.v
        for _ in range(block):  # fast path: no checks, no synchronisation
            st.v = torch.where(live_b, b / torch.bmm(st.Kt, st.u[:, :, None])[..., 0], zeros_b)
            st.u = torch.where(live_a, a / torch.bmm(st.v[:, None, :], st.Kt)[:, 0], zeros_a)
        u_live = torch.where(live_a, st.u, ones_a)
        v_live = torch.where(live_b, st.v, ones_b)
        lo = torch.minimum(u_live.amin(), v_live.amin())
        hi = torch.maximum(u_live.amax(), v_live.amax())
        finite, out_of_range = (torch.stack([torch.isfinite(lo) & torch.isfinite(hi) & (lo > 0),
                                             (hi > tau) | (lo < 1.0 / tau)]).tolist())
        if not finite:  # redo the block from its start, checking every iteration
            st.u, st.v = saved_u, saved_v
            for _ in range(block):
                _checked_iteration(st, a, b, log_a, log_b, live_a, live_b, Mt, eps, tau)
        it += block
        if it % step == 0 or it == num_iter_max:
            cols = torch.bmm(st.Kt, st.u[:, :, None])[..., 0] * st.v
            err = _masked_norm(cols - b, measured)
            if stop_thr > 0 and bool((err < stop_thr).all()):
                break
        if finite and out_of_range:
            _absorb_state(st, live_a, live_b, Mt, eps)
    f = _absorb(st.f, st.u, live_a, eps)
    g = _absorb(st.g, st.v, live_b, eps)
    return _result(f, g, it, err, stop_thr, eps), st


def _checked_iteration(st: _ScaledState, a, b, log_a, log_b, live_a, live_b, Mt, eps, tau) -> None:
    """One iteration with every check: exact log-domain fits where a marginal underflows, absorption when a
    scaling leaves ``[1/tau, tau]``."""
    kt_u = torch.bmm(st.Kt, st.u[:, :, None])[..., 0]  # [B, n] = K~^T u
    st.v = torch.where(live_b, b / kt_u, torch.zeros_like(b))
    if not bool(torch.isfinite(st.v).all()):  # a column underflowed: exact log-domain fit instead
        st.g = _marginal_fit(log_b, st.f + eps * _log_marginal(st.u), Mt, eps, other_dim=2)
        st.v, st.Kt = live_b.to(b.dtype), _kernel_t(st.f, st.g, Mt, eps)
    k_v = torch.bmm(st.v[:, None, :], st.Kt)[:, 0]  # [B, m] = K~ v
    st.u = torch.where(live_a, a / k_v, torch.zeros_like(a))
    if not bool(torch.isfinite(st.u).all()):  # a row underflowed
        st.f = _marginal_fit(log_a, st.g + eps * _log_marginal(st.v), Mt, eps, other_dim=1)
        st.u, st.Kt = live_a.to(a.dtype), _kernel_t(st.f, st.g, Mt, eps)
    if _out_of_range(st.u, live_a, tau) or _out_of_range(st.v, live_b, tau):
        _absorb_state(st, live_a, live_b, Mt, eps)


def _out_of_range(x: torch.Tensor, live: torch.Tensor, tau: float) -> bool:
    y = torch.where(live, x, torch.ones_like(x))
    return bool((y.amax() > tau) | (y.amin() < 1.0 / tau))


def _absorb_state(st: _ScaledState, live_a, live_b, Mt, eps) -> None:
    st.f = _absorb(st.f, st.u, live_a, eps)
    st.g = _absorb(st.g, st.v, live_b, eps)
    st.u, st.v = live_a.to(st.u.dtype), live_b.to(st.v.dtype)
    st.Kt = _kernel_t(st.f, st.g, Mt, eps)


def _absorb(potential: torch.Tensor, scaling: torch.Tensor, live: torch.Tensor, eps: float) -> torch.Tensor:
    """``potential + eps log scaling`` where ``live``; ``-inf`` elsewhere."""
    out = potential + eps * scaling.clamp_min(torch.finfo(scaling.dtype).tiny).log()
    return torch.where(live, out, torch.full_like(out, -math.inf))


def sinkhorn(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, reg: float, **kwargs) -> torch.Tensor:
    """POT-style convenience: the plan ``[B, m, n]`` (or ``[m, n]`` for an unbatched ``M [m, n]``).

    Same arguments as :func:`sinkhorn_log`; an unbatched call takes ``a [m]``, ``b [n]``, ``M [m, n]``.
    """
    if M.ndim == 2:
        res = sinkhorn_log(a, b[None], M[None], reg, **kwargs)
        return res.plan(M[None])[0]
    return sinkhorn_log(a, b, M, reg, **kwargs).plan(M)


def sinkhorn_grouped_mass(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, reg: float, groups: torch.Tensor,
                          num_groups: int, columns: torch.Tensor, *, mask: torch.Tensor | None = None,
                          num_iter_max: int = 1000, stop_thr: float = 1e-9, check_every: int = 10,
                          method: str = "log-stabilized", tau: float = 1e6,
                          chunk_bytes: int | None | str = "auto", measured: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, SinkhornResult]:
    """Solve like :func:`sinkhorn_log` and return the mass each supplier group delivers to ``columns``.

    DPSM eq. 11 with ``groups`` = class of each part prototype and ``columns`` = the real sub-regions
    (dustbin excluded): ``P(c | X) = sum_{i in c} sum_{j in columns} X_ij``. Computed chunk by chunk
    while the kernel is in memory, without materialising the plan.

    Args:
        groups: long ``[m]`` group id per supplier in ``0..num_groups-1``, or ``[B, m]`` per problem (e.g.
            each proposal's own pruned supplier set).
        columns: bool ``[B, n]`` (or ``[n]``) demanders counted.
        measured: the columns whose marginal error is measured, as :func:`sinkhorn_log`.

    Returns:
        ``(mass [B, num_groups], result)``; ``result.converged`` flags the problems whose masses are
        final (the others stopped at ``num_iter_max`` with ``result.error`` above ``stop_thr``).
    """
    a, b, M, eps = _check_inputs(a, b, M, reg, mask, method)
    B, m, n = M.shape
    columns = columns.to(M.device).expand(B, n)
    groups = groups.to(M.device)
    measured = _measured(measured, M)
    masses, results = [], []
    for part, res, st in _solve_chunks(a, b, M, eps, method, num_iter_max, stop_thr, check_every, tau,
                                       chunk_bytes, measured):
        chunk_groups = groups if groups.ndim == 1 else groups[part]
        if st is None:
            masses.append(grouped_row_mass(res.f, res.g, M[part], eps, chunk_groups, num_groups, columns[part]))
        else:
            v_sel = torch.where(columns[part], st.v, torch.zeros_like(st.v))
            rows = st.u * torch.bmm(v_sel[:, None, :], st.Kt)[:, 0]  # [b, m]
            masses.append(_group_sum(rows, chunk_groups, num_groups))
        results.append(res)
    return torch.cat(masses), _concat_results(results)


def grouped_row_mass(f: torch.Tensor, g: torch.Tensor, M: torch.Tensor, eps: float, groups: torch.Tensor,
                     num_groups: int, columns: torch.Tensor | None = None) -> torch.Tensor:
    """Mass each group of suppliers sends to the selected demanders (DPSM eq. 11).

    Args:
        f: supplier potentials ``[B, m]``.
        g: demander potentials ``[B, n]``.
        M: costs ``[B, m, n]``.
        eps: entropic regularisation the potentials were computed with.
        groups: long ``[m]`` group (class) id of every supplier in ``0..num_groups-1`` (or ``[B, m]``).
        columns: bool ``[B, n]`` or ``[n]`` demanders counted (default all).

    Returns:
        ``[B, num_groups]``: ``sum_{i in group} sum_{j in columns} X_ij``.
    """
    g_sel = g if columns is None else torch.where(columns.expand_as(g), g, torch.full_like(g, -math.inf))
    rows = torch.exp(torch.logsumexp((f[..., :, None] + g_sel[..., None, :] - M) / eps, dim=-1))
    rows = torch.nan_to_num(rows, nan=0.0)  # suppliers with no live entry
    return _group_sum(rows, groups.to(rows.device), num_groups)


def _group_sum(rows: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``[B, num_groups]`` sums of ``rows [B, m]`` by ``groups`` (``[m]`` shared, or ``[B, m]`` per problem)."""
    out = torch.zeros(rows.shape[0], num_groups, dtype=rows.dtype, device=rows.device)
    if groups.ndim == 1:
        return out.index_add_(1, groups, rows)
    return out.scatter_add_(1, groups, rows)


def aggregate_suppliers(cost: torch.Tensor, supply: torch.Tensor, groups: torch.Tensor, num_groups: int,
                        keep: int, eps: float, columns: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Per problem, keep the ``keep`` cheapest suppliers and merge each group's others into one.

    For problem ``b`` the suppliers are ranked by their cheapest cost to any counted column; the ``keep``
    first are kept as they are, and the remaining suppliers ``R_c`` of each group ``c`` become one
    pseudo-supplier with supply ``A_c = sum_{i in R_c} a_i`` and cost

    .. math:: \tilde M_{cj} = -\varepsilon \log \sum_{i \in R_c} (a_i / A_c) \exp(-M_{ij} / \varepsilon)

    (a log-sum-exp, computed stably). Total supply and each group's supply are preserved, and a column
    of cost 0 for every supplier (DPSM's dustbin) stays 0.

    Why it is accurate: at the Sinkhorn fixed point supplier ``i`` ships
    ``x_ij = a_i exp((g_j - M_ij) / eps) / Z_i`` with ``Z_i = sum_k exp((g_k - M_ik) / eps)``. When the
    dustbin term dominates every merged supplier's ``Z_i`` (it ships almost all of its supply to the
    dustbin: far suppliers), ``Z_i`` is the same for all of them and the group's mass to column ``j``,
    ``sum_i x_ij``, is exactly the pseudo-supplier's ``x_cj``; merged suppliers with identical costs are
    exact in any case. The error is of the order of the share of their supply the merged suppliers send
    to real columns (it is measured in ``benchmarks/transport.py`` and the tests). Unlike dropping the
    unkept suppliers (sending them to the dustbin), the many far suppliers' joint pull keeps its weight.

    Args:
        cost: ``[B, n, m]`` costs (demanders x suppliers), in the units of ``eps``.
        supply: ``[m]`` supplies shared by the batch.
        groups: long ``[m]`` group of every supplier, ``0..num_groups-1``.
        keep: suppliers kept exactly per problem (``< m``).
        eps: the entropic regularisation the problem is solved with.
        columns: bool ``[B, n]`` columns that rank the suppliers (default all; padding excluded).

    Returns:
        ``(supply [B, keep + num_groups], cost [B, n, keep + num_groups], groups [B, keep + num_groups])``;
        a group whose suppliers are all kept gets a pseudo-supplier of supply 0 (and cost 0).
    """
    B, n, m = cost.shape
    dev, dtype = cost.device, cost.dtype
    supply = supply.to(dev, dtype)
    groups = groups.to(dev)
    ranked = cost if columns is None else torch.where(columns.to(dev)[:, :, None], cost, math.inf)
    kept = ranked.amin(1).topk(keep, dim=1, largest=False).indices  # [B, keep]
    del ranked
    kept_cost = cost.gather(2, kept[:, None, :].expand(B, n, keep))
    is_kept = torch.zeros(B, m, dtype=torch.bool, device=dev).scatter_(1, kept, True)
    rest = torch.where(is_kept, torch.zeros_like(supply).expand(B, m), supply.expand(B, m))
    rest_supply = torch.zeros(B, num_groups, dtype=dtype, device=dev).index_add_(1, groups, rest)  # [B, G]
    # z = log a_i - M_ij / eps over the unkept suppliers, reduced per group with a stable log-sum-exp
    z = cost / (-eps)
    z.add_(_log_marginal(supply))
    z.masked_fill_(is_kept[:, None, :], -math.inf)
    lse = _group_logsumexp(z, groups, num_groups)  # [B, n, G]
    del z
    agg = -eps * (lse - _log_marginal(rest_supply)[:, None, :])
    agg = torch.where((rest_supply > 0)[:, None, :] & torch.isfinite(agg), agg, torch.zeros_like(agg))
    out_supply = torch.cat([supply[kept], rest_supply], 1)
    out_cost = torch.cat([kept_cost, agg], 2)
    out_groups = torch.cat([groups[kept], torch.arange(num_groups, device=dev).expand(B, num_groups)], 1)
    return out_supply, out_cost, out_groups


def _group_logsumexp(z: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``LSE`` over the last dimension of ``z [..., m]`` within each group: ``[..., num_groups]``.

    Groups stored as contiguous equal-sized runs (a bank's classes usually are) are a reshape; otherwise
    the entries are laid out per group, padded with ``-inf``.
    """
    m = z.shape[-1]
    sizes = torch.bincount(groups, minlength=num_groups)
    size = int(sizes.max())
    starts = torch.cumsum(sizes, 0) - sizes
    if size * num_groups == m and bool((groups[::size] == torch.arange(num_groups, device=groups.device)).all()) \
            and bool((groups.view(num_groups, size) == groups[::size, None]).all()):
        return torch.logsumexp(z.view(*z.shape[:-1], num_groups, size), dim=-1)
    order = torch.argsort(groups, stable=True)
    slot = torch.arange(m, device=groups.device) - starts[groups[order]]
    index = torch.full((num_groups, size), m, dtype=torch.long, device=groups.device)
    index[groups[order], slot] = order
    padded = torch.cat([z, torch.full_like(z[..., :1], -math.inf)], dim=-1)
    return torch.logsumexp(padded[..., index.view(-1)].view(*z.shape[:-1], num_groups, size), dim=-1)
