"""The suppliers of DPSM's transport: every class's prototypes with their supply units (eq. 7 / 12).

Each part prototype belongs to a *support group* — its support image, or its coarse cluster in a
clustered bank (a view's parts were fused into its cluster) — and to a *supply unit* (option
``supply``): the whole class (``"class"``, the paper), its support group (``"view"``), or a coarse
cluster (``"cluster"``: the bank's own when it has them, otherwise ``supply_clusters`` k-means clusters
of the class's views by their whole-level prototypes). Within a unit supplies follow the bank's eq. 7
supplies (every support image ``1/N`` spread evenly over its parts when the bank records none) and are
renormalised to sum to 1; every unit is then multiplied by ``capacity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import DpsmOptions
from protoseg.kmeans import kmeans
from protoseg.match.prototypes import class_rows

#: k-means restarts of ``supply="cluster"`` on banks without coarse clusters.
SUPPLY_KMEANS_RESTARTS = 4


@dataclass
class Suppliers:
    """The prototypes every matching mode reads, for one class list of ``C`` classes.

    Attributes:
        prototypes: ``[m, D]`` L2-normalised part (or, for ``mode="image-to-image"``, whole) prototypes.
        prototype_class: ``[m]`` class index of each prototype.
        num_classes: ``C``.
        supply: ``[m]`` supply of every part prototype: each supply unit sums to ``capacity``
            (``None`` for whole prototypes).
        supply_unit: ``[m]`` class / support group / cluster id.
        support_group: ``[m]`` support image / coarse cluster id.
        group_class: ``[G]`` class of each support group (groups never span classes).
    """

    prototypes: torch.Tensor
    prototype_class: torch.Tensor
    num_classes: int
    supply: torch.Tensor | None = None
    supply_unit: torch.Tensor | None = None
    support_group: torch.Tensor | None = None
    group_class: torch.Tensor | None = None


def class_suppliers(bank: PrototypeBank, classes: list[str], options: DpsmOptions,
                    device: torch.device) -> Suppliers:
    """Collect each class's prototypes of the level ``options.mode`` matches: part rows with their supplies
    and support groups, or whole rows."""
    level = "whole" if options.mode == "image-to-image" else "part"
    rows = class_rows(bank, classes, None, 0, level=level)
    vectors = [F.normalize(torch.from_numpy(bank.vectors(r)).float(), dim=-1) for r in rows]
    prototype_class = torch.cat([torch.full((len(r),), c, dtype=torch.long) for c, r in enumerate(rows)]).to(device)
    out = Suppliers(torch.cat(vectors).to(device), prototype_class, len(classes))
    if level == "whole":
        return out
    supply, group, unit = [], [], []
    group_count = unit_count = 0
    for name, r in zip(classes, rows, strict=True):
        coarse = bank.table["coarse_cluster"][r]
        _, local = np.unique(np.where(coarse >= 0, coarse, bank.table["image_id"][r]), return_inverse=True)
        local = local.reshape(-1)
        group.append(torch.from_numpy(local + group_count))
        group_count += int(local.max()) + 1
        s = np.clip(np.asarray(bank.table["supply"][r], np.float64), 0, None)
        if s.sum() <= 0:  # no supply recorded: every support image 1/N, spread evenly over its parts
            counts = np.bincount(local)
            s = 1.0 / (len(counts) * counts[local])
        units = supply_units(bank, name, r, local, options)
        totals = np.bincount(units, weights=s)
        supply.append(torch.from_numpy(s / totals[units]))  # each unit sums to 1
        unit.append(torch.from_numpy(units + unit_count))
        unit_count += int(units.max()) + 1
    out.supply = (torch.cat(supply) * options.capacity).float().to(device)
    out.supply_unit = torch.cat(unit).to(device)
    out.support_group = torch.cat(group).to(device)
    out.group_class = torch.zeros(group_count, dtype=torch.long, device=device)
    out.group_class[out.support_group] = out.prototype_class
    return out


def supply_units(bank: PrototypeBank, name: str, rows: np.ndarray, groups: np.ndarray,
                 options: DpsmOptions) -> np.ndarray:
    """Supply unit ``[len(rows)]`` (``0..k-1``) of each part row of class ``name`` (``options.supply``).

    ``groups``: the rows' support group (support image / coarse cluster) ids ``0..G-1``.
    """
    if options.supply == "class":
        return np.zeros(len(rows), np.int64)
    if options.supply == "view" or (bank.table["coarse_cluster"][rows] >= 0).any():
        return groups
    # "cluster" on a bank without coarse clusters: k-means of the views' whole-level prototypes
    views = bank.table["image_id"][rows]
    ids = np.unique(views)
    wholes = bank.rows_of(name, "whole")
    whole_of = dict(zip(bank.table["image_id"][wholes].tolist(), wholes.tolist(), strict=True))
    parts = np.asarray(bank.vectors(rows), np.float64)
    guides = np.stack([bank.vectors(np.asarray([whole_of[v]]))[0].astype(np.float64) if v in whole_of
                       else parts[views == v].mean(0) for v in ids])
    guides /= np.linalg.norm(guides, axis=1, keepdims=True).clip(1e-12)
    labels = kmeans(guides, options.supply_clusters, seed=0, n_init=SUPPLY_KMEANS_RESTARTS)
    return labels[np.searchsorted(ids, views)]
