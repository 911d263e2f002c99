"""Batched log-domain Sinkhorn against POT (``ot.sinkhorn``, ``ot.emd``) and the DPSM dustbin balance."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from protoseg.match.transport import sinkhorn, sinkhorn_grouped_mass, sinkhorn_log

METHODS = ["log", "log-stabilized"]


def _problem(seed: int, B: int = 3, m: int = 40, n: int = 6):
    rng = np.random.default_rng(seed)
    M = rng.random((B, m, n))
    a = rng.random(m) + 0.1
    a /= a.sum()
    b = rng.random((B, n)) + 0.1
    b /= b.sum(1, keepdims=True)
    return a, b, M


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("iterations", [1, 7, 200])
def test_plan_equals_pot_sinkhorn_same_iterations(method, iterations):
    a, b, M = _problem(0)
    plan = sinkhorn(torch.tensor(a), torch.tensor(b), torch.tensor(M), 0.05, num_iter_max=iterations,
                    stop_thr=0.0, method=method).numpy()
    for k in range(len(b)):
        ref = ot.sinkhorn(a, b[k], M[k], 0.05, numItermax=iterations, stopThr=0.0, warn=False)
        np.testing.assert_allclose(plan[k], ref, rtol=0, atol=1e-12)  # float64: identical iterates


@pytest.mark.parametrize("method", METHODS)
def test_float32_plan_close_to_pot(method):
    a, b, M = _problem(1)
    plan = sinkhorn(torch.tensor(a).float(), torch.tensor(b).float(), torch.tensor(M).float(), 0.05,
                    num_iter_max=300, stop_thr=0.0, method=method).double().numpy()
    for k in range(len(b)):
        ref = ot.sinkhorn(a, b[k], M[k], 0.05, numItermax=300, stopThr=0.0, warn=False)
        np.testing.assert_allclose(plan[k], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_padded_demanders_equal_unpadded_problems(method):
    a, b, M = _problem(2, B=2, n=7)
    sizes = [4, 7]
    bp = b.copy()
    for k, s in enumerate(sizes):
        bp[k, s:] = 0
        bp[k] /= bp[k].sum()
    mask = torch.tensor([[j < s for j in range(7)] for s in sizes])
    res = sinkhorn_log(torch.tensor(a), torch.tensor(bp), torch.tensor(M), 0.1, mask=mask, num_iter_max=100,
                       stop_thr=0.0, method=method)
    plan = res.plan(torch.tensor(M)).numpy()
    for k, s in enumerate(sizes):
        ref = ot.sinkhorn(a, bp[k, :s], M[k, :, :s], 0.1, numItermax=100, stopThr=0.0, warn=False)
        np.testing.assert_allclose(plan[k, :, :s], ref, atol=1e-12)
        assert np.all(plan[k, :, s:] == 0)


def test_per_problem_supplies_with_zeros():
    a, b, M = _problem(3, B=2)
    A = np.stack([a, a.copy()])
    A[1, :10] = 0
    A[1] /= A[1].sum()
    plan = sinkhorn(torch.tensor(A), torch.tensor(b), torch.tensor(M), 0.1, num_iter_max=80, stop_thr=0.0).numpy()
    ref = ot.sinkhorn(A[1, 10:], b[1], M[1, 10:], 0.1, numItermax=80, stopThr=0.0, warn=False)
    np.testing.assert_allclose(plan[1, 10:], ref, atol=1e-12)
    assert np.all(plan[1, :10] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_approaches_exact_emd_as_eps_shrinks(method):
    rng = np.random.default_rng(4)
    m, n = 12, 5
    M = rng.random((m, n))
    a = np.full(m, 1 / m)
    b = rng.random(n) + 0.2
    b /= b.sum()
    exact = ot.emd(a, b, M)
    exact_cost = float((exact * M).sum())
    gaps, costs = [], []
    for eps in [0.1, 0.03, 0.01, 0.003, 0.001, 0.0003]:
        res = sinkhorn_log(torch.tensor(a), torch.tensor(b)[None], torch.tensor(M)[None], eps, num_iter_max=100000,
                           stop_thr=1e-11, method=method)
        plan = res.plan(torch.tensor(M)[None])[0].numpy()
        gaps.append(np.abs(plan - exact).sum())
        costs.append(float((plan * M).sum()))
    assert all(g2 < g1 for g1, g2 in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] < 5e-3  # L1 distance between plans (total mass 1)
    assert abs(costs[-1] - exact_cost) < 1e-5
    assert all(c >= exact_cost - 1e-9 for c in costs)  # the exact plan is optimal


def test_stabilized_survives_float32_underflow():
    """eps = 0.004 on costs up to 2: exp(-M/eps) underflows float32; both schemes still agree with POT's log."""
    a, b, M = _problem(5, B=2, m=30, n=5)
    M = 2 * M
    ref = [ot.sinkhorn(a, b[k], M[k], 0.004, method="sinkhorn_log", numItermax=300, stopThr=0.0, warn=False)
           for k in range(2)]
    for method in METHODS:
        plan = sinkhorn(torch.tensor(a).float(), torch.tensor(b).float(), torch.tensor(M).float(), 0.004,
                        num_iter_max=300, stop_thr=0.0, method=method).double().numpy()
        assert np.isfinite(plan).all()
        for k in range(2):
            np.testing.assert_allclose(plan[k], ref[k], atol=2e-5)


@pytest.mark.parametrize("method", METHODS)
def test_convergence_criterion_stops_early(method):
    a, b, M = _problem(6)
    res = sinkhorn_log(torch.tensor(a), torch.tensor(b), torch.tensor(M), 0.2, num_iter_max=5000, stop_thr=1e-8,
                       check_every=10, method=method)
    assert res.iterations < 5000 and res.iterations % 10 == 0
    assert float(res.error.max()) < 1e-8
    cols = res.plan(torch.tensor(M)).sum(1).numpy()
    assert np.abs(cols - b).max() < 1e-8


def test_chunking_does_not_change_results():
    a, b, M = _problem(7, B=5)
    t = [torch.tensor(x) for x in (a, b, M)]
    whole = sinkhorn_log(*t, 0.05, num_iter_max=50, stop_thr=0.0, chunk_bytes=None)
    chunked = sinkhorn_log(*t, 0.05, num_iter_max=50, stop_thr=0.0, chunk_bytes=1)
    torch.testing.assert_close(whole.plan(t[2]), chunked.plan(t[2]), rtol=0, atol=1e-14)


def _dpsm_problem(seed: int, C: int = 4, parts: int = 5, B: int = 3, n: int = 6, D: int = 8):
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((C * parts, D))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    groups = np.repeat(np.arange(C), parts)
    supply = rng.random(C * parts) + 0.1
    for c in range(C):
        supply[groups == c] /= supply[groups == c].sum()
    feats = rng.standard_normal((B, n, D))
    feats /= np.linalg.norm(feats, axis=2, keepdims=True)
    M = np.concatenate([1 - np.einsum("md,bnd->bmn", protos, feats), np.zeros((B, C * parts, 1))], 2)
    d = rng.random((B, n)) + 0.1
    d /= d.sum(1, keepdims=True)
    demand = np.concatenate([d, np.full((B, 1), C - 1.0)], 1)
    return supply, demand, M, groups


@pytest.mark.parametrize("method", METHODS)
def test_class_probabilities_match_pot_and_dustbin_balance(method):
    C = 4
    supply, demand, M, groups = _dpsm_problem(8, C=C)
    real = torch.arange(demand.shape[1]) < demand.shape[1] - 1
    probs, res = sinkhorn_grouped_mass(torch.tensor(supply), torch.tensor(demand), torch.tensor(M), 0.05,
                                       torch.tensor(groups), C, real, num_iter_max=2000, stop_thr=1e-12,
                                       method=method)
    plan = res.plan(torch.tensor(M)).numpy()
    for k in range(len(demand)):
        ref = ot.sinkhorn(supply, demand[k], M[k], 0.05, numItermax=2000, stopThr=1e-12, warn=False)
        ref_probs = np.bincount(groups, weights=ref[:, :-1].sum(1), minlength=C)
        np.testing.assert_allclose(probs[k].numpy(), ref_probs, atol=1e-9)
        np.testing.assert_allclose(plan[k], ref, atol=1e-9)
        # balance: the dustbin receives C - 1, the sub-regions receive 1, every supplier ships its supply
        assert abs(plan[k][:, -1].sum() - (C - 1)) < 1e-9
        assert abs(probs[k].sum().item() - 1.0) < 1e-9
        np.testing.assert_allclose(plan[k].sum(1), supply, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_iteration_cap_reports_not_converged_with_the_plans_marginal_error(method):
    a, b, M = _problem(9, B=4)
    res = sinkhorn_log(torch.tensor(a), torch.tensor(b), torch.tensor(M), 0.01, num_iter_max=2, stop_thr=1e-6,
                       method=method, chunk_bytes=1)  # one problem per chunk: the chunk loop concatenates
    assert res.iterations == 2
    plan = res.plan(torch.tensor(M)).numpy()
    # independent check: the marginals of the returned plan
    np.testing.assert_allclose(plan.sum(2), np.broadcast_to(a, plan.shape[:2]), atol=1e-12)  # rows exact
    column_error = np.linalg.norm(plan.sum(1) - b, axis=1)
    np.testing.assert_allclose(res.error.numpy(), column_error, rtol=1e-9, atol=1e-15)
    assert (column_error > 1e-6).all()
    assert res.converged.dtype == torch.bool and res.converged.shape == (4,) and not res.converged.any()


@pytest.mark.parametrize("method", METHODS)
def test_normal_problem_reports_converged(method):
    a, b, M = _problem(10, B=3)
    res = sinkhorn_log(torch.tensor(a), torch.tensor(b), torch.tensor(M), 0.1, num_iter_max=5000, stop_thr=1e-9,
                       method=method)
    assert res.iterations < 5000 and res.converged.all()
    column_error = np.linalg.norm(res.plan(torch.tensor(M)).numpy().sum(1) - b, axis=1)
    np.testing.assert_allclose(res.error.numpy(), column_error, rtol=1e-6, atol=1e-15)
    assert (column_error <= 1e-9).all()


@pytest.mark.parametrize("method", METHODS)
def test_grouped_mass_reports_convergence_per_problem(method):
    C = 4
    supply, demand, M, groups = _dpsm_problem(11, C=C, B=3)
    real = torch.arange(demand.shape[1]) < demand.shape[1] - 1
    args = (torch.tensor(supply), torch.tensor(demand), torch.tensor(M), 0.05, torch.tensor(groups), C, real)
    _, capped = sinkhorn_grouped_mass(*args, num_iter_max=1, stop_thr=1e-6, method=method, chunk_bytes=1)
    column_error = np.linalg.norm(capped.plan(torch.tensor(M)).numpy().sum(1) - demand, axis=1)
    np.testing.assert_allclose(capped.error.numpy(), column_error, rtol=1e-9)
    assert not capped.converged.any()
    _, full = sinkhorn_grouped_mass(*args, num_iter_max=5000, stop_thr=1e-6, method=method, chunk_bytes=1)
    assert full.converged.all() and (full.error <= 1e-6).all()


@pytest.mark.parametrize("method", METHODS)
def test_measured_columns_give_the_error_of_those_columns_only(method):
    C = 4
    supply, demand, M, groups = _dpsm_problem(12, C=C, B=3)
    real = torch.arange(demand.shape[1]) < demand.shape[1] - 1
    t = [torch.tensor(x) for x in (supply, demand, M)]
    res = sinkhorn_log(*t, 0.05, num_iter_max=3, stop_thr=0.0, method=method, measured=real)
    cols = res.plan(t[2]).numpy().sum(1) - demand  # [B, n + 1] marginal errors of the returned plan
    np.testing.assert_allclose(res.error.numpy(), np.linalg.norm(cols[:, :-1], axis=1), rtol=1e-9)
    # rows are exact, so the dustbin carries minus the real columns' total error
    np.testing.assert_allclose(cols[:, -1], -cols[:, :-1].sum(1), atol=1e-12)
    full = sinkhorn_log(*t, 0.05, num_iter_max=3, stop_thr=0.0, method=method)
    np.testing.assert_allclose(full.error.numpy(), np.linalg.norm(cols, axis=1), rtol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_large_dustbin_converges_in_float32_when_only_real_columns_are_measured(method):
    # 400 units of supply against one unit of real demand (e.g. C = 100 classes at capacity 4)
    rng = np.random.default_rng(13)
    m, n = 200, 5
    a = torch.full((m,), 400.0 / m)
    b = torch.tensor(np.concatenate([rng.dirichlet(np.ones(n)), [399.0]]), dtype=torch.float32)[None]
    M = torch.cat([torch.rand(1, m, n, generator=torch.Generator().manual_seed(0)), torch.zeros(1, m, 1)], 2)
    real = torch.arange(n + 1) < n
    measured = sinkhorn_log(a, b, M, 0.05, num_iter_max=3000, stop_thr=1e-5, method=method, measured=real)
    assert bool(measured.converged.all()) and measured.iterations < 3000
    ref = ot.sinkhorn(a.double().numpy(), b[0].double().numpy(), M[0].double().numpy(), 0.05, numItermax=50000,
                      stopThr=1e-11, method="sinkhorn_log", warn=False)
    plan = measured.plan(M)[0].numpy()
    np.testing.assert_allclose(plan[:, :n].sum(0), b[0, :n].numpy(), atol=1e-5)
    np.testing.assert_allclose(plan[:, :n], ref[:, :n], atol=2e-5)
