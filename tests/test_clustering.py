import numpy as np
import pytest

from protoseg.kmeans import kmeans
from protoseg.offline.clustering import ClassSupport, fuse_class


def _support(kappa=2, n=3, d=6, seed=0):
    """κN images in N well-separated groups; parts in two well-separated kinds per group."""
    rng = np.random.default_rng(seed)
    images = kappa * n
    group = np.arange(images) % n
    guides = np.eye(n)[group] * 10 + rng.normal(0, 0.01, (images, n))
    wholes = rng.normal(0, 1, (images, d))
    parts, part_image, supplies, areas = [], [], [], []
    centres = rng.normal(0, 10, (n, 2, d))
    for j in range(images):
        count = 2 + (j % 2) * 2  # 2 or 4 parts
        share = rng.uniform(1, 2, count)
        share /= share.sum()
        for f in range(count):
            parts.append(centres[group[j], f % 2] + rng.normal(0, 0.01, d))
            part_image.append(j)
            supplies.append(share[f] / n)
            areas.append(100 * share[f])
    return ClassSupport(guides, wholes, np.array(parts), np.array(part_image), np.array(supplies),
                        np.array(areas)), group, centres


@pytest.mark.parametrize("mode", ["coarse-fine", "plain", "none"])
def test_supply_conservation(mode):
    support, _, _ = _support()
    assert support.supplies.sum() == pytest.approx(2.0)  # κ = 2: each image sums to 1/N
    fused = fuse_class(support, coarse_clusters=3, kappa=2, mode=mode, seed=1)
    assert fused.supplies.sum() == pytest.approx(1.0, abs=1e-6)
    assert fused.whole_supplies.sum() == pytest.approx(1.0, abs=1e-6)
    assert fused.areas.sum() == pytest.approx(support.part_areas.sum(), rel=1e-6)


def test_coarse_fine_by_hand():
    support, group, centres = _support()
    fused = fuse_class(support, coarse_clusters=3, kappa=2, mode="coarse-fine", seed=1)
    # N=3 coarse clusters; each holds images with 2 and 4 parts -> F = round(6 parts / 2 images) = 3.
    assert len(fused.wholes) == 3
    assert np.bincount(fused.coarse).tolist() == [3, 3, 3]
    for i in range(3):
        rows = np.flatnonzero(fused.coarse == i)
        # every fused part lies at one of the group's two part centres (the third cluster splits one kind)
        d = np.linalg.norm(fused.parts[rows][:, None, None] - centres[None], axis=-1)  # [3, n, 2]
        assert (d.min(axis=(1, 2)) < 0.1).all()
        best_group = np.unique(np.argmin(d.min(-1), axis=1))
        assert len(best_group) == 1
        # the coarse cluster holds exactly one group's images; fused supply = (1/κ) Σ of their supplies
        member = np.isin(support.part_image, np.flatnonzero(group == best_group[0]))
        assert fused.supplies[rows].sum() == pytest.approx(support.supplies[member].sum() / 2, rel=1e-6)
        np.testing.assert_allclose(fused.wholes[i], support.wholes[group == best_group[0]].mean(0), rtol=1e-5)


def test_fused_prototype_is_member_mean_and_supply_eq12():
    # one coarse cluster, two images, parts exactly at two points: fine clusters are those points
    parts = np.array([[0.0, 0], [10, 0], [0.2, 0], [10.2, 0]])
    support = ClassSupport(guides=np.zeros((2, 1)), wholes=np.array([[1.0, 1], [3, 3]]), parts=parts,
                           part_image=np.array([0, 0, 1, 1]), supplies=np.array([0.3, 0.7, 0.6, 0.4]),
                           part_areas=np.array([3.0, 7, 6, 4]))
    fused = fuse_class(support, coarse_clusters=1, kappa=2, mode="coarse-fine", seed=0)
    order = np.argsort(fused.parts[:, 0])
    np.testing.assert_allclose(fused.parts[order], [[0.1, 0], [10.1, 0]], rtol=1e-6)
    np.testing.assert_allclose(fused.supplies[order], [(0.3 + 0.6) / 2, (0.7 + 0.4) / 2])
    np.testing.assert_allclose(fused.areas[order], [9, 11])
    np.testing.assert_allclose(fused.wholes, [[2, 2]])
    none = fuse_class(support, coarse_clusters=1, kappa=2, mode="none")
    np.testing.assert_allclose(none.supplies, support.supplies / 2)
    np.testing.assert_array_equal(none.part_image, [0, 0, 1, 1])


def test_plain_count_and_determinism():
    support, _, _ = _support()
    a = fuse_class(support, coarse_clusters=3, kappa=2, mode="plain", seed=5)
    b = fuse_class(support, coarse_clusters=3, kappa=2, mode="plain", seed=5)
    assert len(a.parts) == round(len(support.parts) / 6 * 3)  # mean parts per image · N = 3 · 3
    np.testing.assert_array_equal(a.parts, b.parts)
    assert (a.coarse == -1).all()


def test_kmeans_caps_k_and_canonical_labels():
    x = np.array([[0.0], [0.0], [5.0]])
    assert kmeans(x, 10, seed=0).tolist() == [0, 0, 1]
    assert kmeans(x, 1, seed=0).tolist() == [0, 0, 0]


def test_bad_mode():
    support, _, _ = _support()
    with pytest.raises(ValueError):
        fuse_class(support, 3, 2, mode="bogus")
