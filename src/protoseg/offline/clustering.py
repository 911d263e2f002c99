"""Fusing the κ-times scaled-up prototypes of a class back to its original scale (DPSM, eq. 12).

One class has ``κN`` support images. Image ``j`` has a whole-level *guide* feature ``ω_j`` (SD-UNet,
eq. 2), a whole-level DINOv2 prototype, and part prototypes ``p_j^f`` with supplies ``s_j^f`` (eq. 7,
each image summing to ``1 / N``, so the class sums to ``κ``). Three modes (``CLUSTERINGS``):

``"coarse-fine"`` (the paper): K-means of the ``ω_j`` into ``N`` coarse clusters; inside coarse cluster
    ``i``, K-means of its members' part prototypes into ``F_i`` fine clusters. ``F_i`` is not given in
    the paper; here it is the mean number of parts per member image, rounded (at least 1, at most the
    number of parts), so a coarse cluster fuses back to the size of one typical image ("back to its
    original scale"). Each fused prototype is the mean of its members (the K-means centre) and its
    supply is ``ŝ = (1/κ) Σ_{j ∈ Ψ} s_j`` (eq. 12). A coarse cluster's whole-level row is the mean of
    its members' DINOv2 whole prototypes.
``"plain"`` (Table 4, row 3): K-means of all part prototypes of the class at once, into
    ``round(mean parts per image · N)`` clusters; whole rows: K-means of the DINOv2 whole prototypes into
    ``N`` clusters. Supplies as eq. 12.
``"none"`` (Table 4, row 1): every prototype kept, supplies divided by ``κ``.

In every mode a class's part supplies sum to ``(Σ s) / κ`` (1 with eq. 7 supplies), and its whole-level
rows carry supplies ``members / (κN)`` that also sum to 1.

K-means is scikit-learn's Lloyd with ``n_init`` restarts and a seed derived from ``(seed, class name)``,
so a class's result does not depend on which other classes are built with it. Centres are recomputed as
exact member means of the final assignment.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protoseg.kmeans import kmeans

CLUSTERINGS = ("coarse-fine", "plain", "none")


@dataclass
class ClassSupport:
    """Prototypes of the ``n`` support images of one class.

    Attributes:
        guides: float ``[n, Dg]`` whole-level features that drive the coarse clustering (SD-UNet).
        wholes: float ``[n, D]`` whole-level DINOv2 prototypes.
        parts: float ``[P, D]`` part prototypes of all images.
        part_image: int ``[P]`` index ``0..n-1`` of the image each part comes from.
        supplies: float ``[P]`` eq. 7 supplies.
        part_areas: float ``[P]`` pixels of each part.
    """

    guides: np.ndarray
    wholes: np.ndarray
    parts: np.ndarray
    part_image: np.ndarray
    supplies: np.ndarray
    part_areas: np.ndarray

    @property
    def num_images(self) -> int:
        return int(self.wholes.shape[0])


@dataclass
class FusedClass:
    """The prototypes a class contributes to a bank.

    Attributes:
        wholes: float32 ``[W, D]``; ``whole_supplies [W]``; ``whole_coarse [W]`` coarse cluster id (-1: none);
            ``whole_image [W]`` source image index (-1 when fused); ``image_whole [n]`` the whole row each
            input image belongs to.
        parts: float32 ``[Q, D]``; ``supplies [Q]``; ``areas [Q]`` summed member areas; ``coarse [Q]`` /
            ``fine [Q]`` cluster ids (-1: none); ``part_image [Q]`` source image index (-1 when fused).
    """

    wholes: np.ndarray
    whole_supplies: np.ndarray
    whole_coarse: np.ndarray
    whole_image: np.ndarray
    image_whole: np.ndarray
    parts: np.ndarray
    supplies: np.ndarray
    areas: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    part_image: np.ndarray


def _member_means(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    k = int(labels.max()) + 1
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, x.astype(np.float64))
    return (sums / np.bincount(labels, minlength=k)[:, None]).astype(np.float32)


def _sum_by(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels, weights=values.astype(np.float64), minlength=int(labels.max()) + 1)


def fuse_class(support: ClassSupport, coarse_clusters: int, kappa: int, mode: str = "coarse-fine",
               seed: int = 0, n_init: int = 10) -> FusedClass:
    """Fuse one class's ``κN`` images back to ``N`` (module docstring).

    Args:
        support: the class's prototypes.
        coarse_clusters: ``N`` (support images per class before scaling up).
        kappa: ``κ``, the scale-up factor (divides the supplies, eq. 12).
        mode: one of :data:`CLUSTERINGS`.
        seed: K-means seed (``derive_seed(seed, class name)``).
    """
    if mode not in CLUSTERINGS:
        raise ValueError(f"clustering must be one of {CLUSTERINGS}, got {mode!r}")
    n = support.num_images
    if n == 0 or len(support.parts) == 0:
        raise ValueError("a class needs at least one support image with parts to be fused")
    parts = np.asarray(support.parts, dtype=np.float32)
    supplies = np.asarray(support.supplies, dtype=np.float64)
    areas = np.asarray(support.part_areas, dtype=np.float64)
    image_of = np.asarray(support.part_image, dtype=np.int64)
    total = float(kappa) * float(coarse_clusters)

    if mode == "none":
        return FusedClass(
            wholes=np.asarray(support.wholes, np.float32), whole_supplies=np.full(n, 1.0 / total, np.float32),
            whole_coarse=np.full(n, -1, np.int32), whole_image=np.arange(n, dtype=np.int64),
            image_whole=np.arange(n, dtype=np.int64),
            parts=parts, supplies=(supplies / kappa).astype(np.float32), areas=areas.astype(np.float32),
            coarse=np.full(len(parts), -1, np.int32), fine=np.full(len(parts), -1, np.int32),
            part_image=image_of)

    parts_per_image = len(parts) / n
    if mode == "plain":
        target = max(1, int(round(parts_per_image * coarse_clusters)))
        fine = kmeans(parts, target, seed, n_init)
        whole_labels = kmeans(support.wholes, coarse_clusters, seed + 1, n_init)
        counts = np.bincount(whole_labels)
        return FusedClass(
            wholes=_member_means(support.wholes, whole_labels),
            whole_supplies=(counts / total).astype(np.float32),
            whole_coarse=np.arange(len(counts), dtype=np.int32),
            whole_image=np.full(len(counts), -1, np.int64), image_whole=whole_labels,
            parts=_member_means(parts, fine), supplies=(_sum_by(supplies, fine) / kappa).astype(np.float32),
            areas=_sum_by(areas, fine).astype(np.float32), coarse=np.full(int(fine.max()) + 1, -1, np.int32),
            fine=np.arange(int(fine.max()) + 1, dtype=np.int32), part_image=np.full(int(fine.max()) + 1, -1))

    coarse = kmeans(support.guides, coarse_clusters, seed, n_init)
    out_parts, out_supplies, out_areas, out_coarse, out_fine = [], [], [], [], []
    wholes, whole_supplies = [], []
    for i in range(int(coarse.max()) + 1):
        members = np.flatnonzero(coarse == i)
        wholes.append(np.asarray(support.wholes, np.float64)[members].mean(0))
        whole_supplies.append(len(members) / total)
        rows = np.flatnonzero(np.isin(image_of, members))
        if len(rows) == 0:
            continue
        f = max(1, int(round(len(rows) / len(members))))
        fine = kmeans(parts[rows], f, seed + 1 + i, n_init)
        out_parts.append(_member_means(parts[rows], fine))
        out_supplies.append(_sum_by(supplies[rows], fine) / kappa)
        out_areas.append(_sum_by(areas[rows], fine))
        out_coarse.append(np.full(int(fine.max()) + 1, i, np.int32))
        out_fine.append(np.arange(int(fine.max()) + 1, dtype=np.int32))
    q = sum(len(p) for p in out_parts)
    return FusedClass(
        wholes=np.stack(wholes).astype(np.float32), whole_supplies=np.asarray(whole_supplies, np.float32),
        whole_coarse=np.arange(len(wholes), dtype=np.int32), whole_image=np.full(len(wholes), -1, np.int64),
        image_whole=coarse,
        parts=np.concatenate(out_parts).astype(np.float32),
        supplies=np.concatenate(out_supplies).astype(np.float32),
        areas=np.concatenate(out_areas).astype(np.float32), coarse=np.concatenate(out_coarse),
        fine=np.concatenate(out_fine), part_image=np.full(q, -1, np.int64))
