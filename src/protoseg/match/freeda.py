"""FreeDA's online matcher, as the released code computes it.

Per window (``crop [3, h, w]``):

1. dense patch features ``f [D, 37, 37]`` (DINOv2 at 518x518, CLS dropped);
2. dense map: ``sigmoid(max_m cos(f, p_c,m))`` upsampled bilinearly (``align_corners=True``) to the crop;
3. Felzenszwalb superpixels; each region's feature is the weighted mean of the **un-normalised** patch
   features (``pooling="point"``: FreeDA's bilinear point sampling; ``"area"``: area-weighted); region
   score ``sigmoid(max_m cos(r, p_c,m))`` paints the region's pixels. Regions with no weight on the grid
   keep the dense map;
4. global term ``g_c = cos(CLIP(crop squashed to 224), t_c)`` — the raw cosine, no sigmoid;
5. ``S_c = beta * local + (1 - beta) * g_c``.

Prototypes per class come from retrieving the ``k`` nearest text keys of the CLIP class embedding and
averaging the retrieved prototypes (or k-means centroids; max over centroids).

Switches for every documented deviation: ``use_superpixels``, ``use_global``, ``pooling``,
``aggregation``/``clusters``, ``local_sigmoid``, ``global_sigmoid`` (the paper's comparable-scale
reading), ``normalize_templates`` (per-template L2 before the template mean).

Windows are scored ``batch_size`` at a time (:meth:`FreeDAMatcher.score_windows`): one DINOv2 and one
CLIP forward per batch, with the superpixels of the batch computed on a worker thread while the models
run (Felzenszwalb is CPU work, the forwards release the interpreter). Scores equal window-by-window
scoring up to float rounding of batched matrix products. For many images,
:class:`protoseg.pipeline.WindowPipeline` runs the same split (:meth:`FreeDAMatcher.window_regions` in
worker processes, :meth:`FreeDAMatcher.forward_windows` over windows of several images,
:meth:`FreeDAMatcher.finish_window`).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protoseg.bank import PrototypeBank
from protoseg.config.matchers import FreedaOptions
from protoseg.config.superpixels import SuperpixelParams
from protoseg.errors import ProtosegError
from protoseg.match.base import Matcher
from protoseg.match.prototypes import aggregate, class_rows, served_names
from protoseg.regions import SuperpixelRegions, pool_features, region_weights, superpixels
from protoseg.windows import crop_pixels


class FreeDAMatcher(Matcher):
    """Local (region-pooled prototype cosine) + global (CLIP) similarity.

    Args:
        bank: the prototype bank.
        models: loaded models (:class:`protoseg.models.ModelSet`): ``features``, and ``clip`` for the
            global term and text-key retrieval.
        options: :class:`~protoseg.config.matchers.FreedaOptions`.
        superpixels: the Felzenszwalb superpixels of the local region term.
    """

    def __init__(self, bank: PrototypeBank, models: Any, options: FreedaOptions, *,
                 superpixels: SuperpixelParams = SuperpixelParams()):
        if options.use_global and models.clip is None:
            raise ProtosegError("freeda option use_global=True needs a CLIP model (preset field `text`)")
        self.bank = bank
        self.models = models
        self.options = options
        self.superpixel_params = superpixels
        self.batch_size = options.batch_size
        self._workers: ThreadPoolExecutor | None = None
        self._workers_pid = 0
        self.prototypes: torch.Tensor | None = None  # [C, M, D] L2-normalised
        self.text_vectors: torch.Tensor | None = None  # [C, Dt] L2-normalised

    def serves(self, names: list[str]) -> list[bool]:
        """Which names :meth:`prepare` can score: all with text-key retrieval (a CLIP model and a bank with
        keys); otherwise those the bank labels with a finite whole-level prototype."""
        retrieval = self.models.clip is not None and self.bank.keys is not None
        return served_names(self.bank, names, retrieval, level="whole")

    def prepare(self, classes: list[str]) -> None:
        """Embed the names (7 templates), retrieve ``k`` prototypes per name, aggregate. Each name gets its
        own channel; synonyms of one class are reduced by :class:`protoseg.segment.Segmenter`."""
        device = self.models.device
        clip = self.models.clip
        text_np = None
        if clip is not None:
            self.text_vectors = clip.encode_classes(classes,
                                                    normalize_each=self.options.normalize_templates).to(device)
            text_np = self.text_vectors.float().cpu().numpy()
        rows = class_rows(self.bank, classes, text_np, self.options.k, level="whole")
        options = self.options
        per_class = [aggregate(self.bank.vectors(r), options.aggregation, options.clusters) for r in rows]
        M = max(p.shape[0] for p in per_class)
        # Pad classes with fewer centroids by repeating their first one (max over centroids is unchanged).
        stacked = np.stack([np.concatenate([p, np.repeat(p[:1], M - len(p), 0)]) for p in per_class])
        self.prototypes = F.normalize(torch.from_numpy(stacked).to(device), dim=-1)

    def _cosine(self, feats: torch.Tensor) -> torch.Tensor:
        """``feats [N, D]`` -> ``[N, C]``: max over each class's prototypes of the cosine."""
        assert self.prototypes is not None, "call prepare(classes) first"
        f = F.normalize(feats.float(), dim=-1)
        return torch.einsum("nd,cmd->ncm", f, self.prototypes).amax(-1)

    def _squash(self, x: torch.Tensor, on: bool) -> torch.Tensor:
        return torch.sigmoid(x) if on else x

    def _superpixels(self, crop: torch.Tensor) -> np.ndarray:
        """Felzenszwalb labels ``int64 [h, w]`` of a crop (float ``[3, h, w]`` 0-255)."""
        return superpixels(crop_pixels(crop), self.superpixel_params)

    def _superpixels_async(self, crops: torch.Tensor) -> list[Future]:
        """Start the superpixels of ``crops [B, 3, h, w]`` on the worker thread."""
        if self._workers is None or self._workers_pid != os.getpid():  # threads do not survive a fork
            self._workers = ThreadPoolExecutor(1, thread_name_prefix="protoseg-superpixels")
            self._workers_pid = os.getpid()
        return [self._workers.submit(self._superpixels, crop) for crop in crops]

    def local_scores(self, crop: torch.Tensor, feats: torch.Tensor,
                     labels: np.ndarray | torch.Tensor | None = None,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
        """Local similarity ``[C, h, w]`` of one crop from its patch features ``feats [D, gh, gw]``
        (``labels``: its superpixels, ``weights``: their grid weights ``[R, gh * gw]``; computed here when
        not given)."""
        D, gh, gw = feats.shape
        h, w = crop.shape[-2:]
        dense = self._squash(self._cosine(feats.reshape(D, -1).T), self.options.local_sigmoid)  # [gh*gw, C]
        dense = dense.T.reshape(1, -1, gh, gw)
        dense = F.interpolate(dense, size=(h, w), mode="bilinear", align_corners=True)[0]
        if not self.options.use_superpixels:
            return dense
        if labels is None:
            labels = self._superpixels(crop)
        labels = torch.as_tensor(labels).to(feats.device)
        if weights is None:
            weights = region_weights(labels, (gh, gw), self.options.pooling)
        weights = weights.to(feats.device)
        pooled, mass = pool_features(feats, weights)
        region = self._squash(self._cosine(pooled), self.options.local_sigmoid)  # [R, C]
        covered = (mass > 0)[labels]  # [h, w]
        painted = region[labels].permute(2, 0, 1)  # [C, h, w]
        return torch.where(covered[None], painted, dense)

    def global_scores(self, crops: torch.Tensor) -> torch.Tensor:
        """Global similarity ``[C]`` of a crop ``[3, h, w]`` (``[B, C]`` of crops ``[B, 3, h, w]``): CLIP image
        embedding of the whole crop vs the class text vectors."""
        single = crops.dim() == 3
        image = self.models.clip.encode_images(crops[None] if single else crops)  # [B, Dt] normalised
        scores = self._squash(image.float() @ self.text_vectors.float().T, self.options.global_sigmoid)
        return scores[0] if single else scores

    def window_regions(self) -> SuperpixelRegions | None:
        """The superpixels of a window and their grid weights (``use_superpixels``), else ``None``."""
        if not self.options.use_superpixels:
            return None
        return SuperpixelRegions(self.superpixel_params, tuple(self.models.features.grid), self.options.pooling)

    @torch.no_grad()
    def forward_windows(self, crops: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """One DINOv2 and one CLIP forward for windows ``crops [B, 3, h, w]`` -> per window its patch features
        ``[D, gh, gw]`` and global scores ``[C]`` (``None`` without the global term)."""
        feats = self.models.features(crops)
        glob = self.global_scores(crops) if self.options.use_global else None
        return [(feats[i], None if glob is None else glob[i]) for i in range(len(crops))]

    @torch.no_grad()
    def finish_window(self, crop: torch.Tensor, forwarded: tuple[torch.Tensor, torch.Tensor | None],
                      regions: tuple[np.ndarray, torch.Tensor] | None = None,
                      proposals: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[C, h, w]`` of ``crop`` from its :meth:`forward_windows` item and its
        :meth:`window_regions` (superpixel labels and weights; computed here when ``None``)."""
        feats, glob = forwarded
        labels, weights = regions if regions is not None else (None, None)
        return self._mix(self.local_scores(crop, feats, labels, weights), glob)

    @torch.no_grad()
    def score_windows(self, crops: torch.Tensor) -> torch.Tensor:
        """Windows of one size ``crops`` float ``[B, 3, h, w]`` RGB 0-255 -> ``[B, C, h, w]``, one DINOv2 and
        one CLIP forward for the batch; superpixels run on a worker thread meanwhile."""
        pending = self._superpixels_async(crops) if self.options.use_superpixels else [None] * len(crops)
        try:
            forwarded = self.forward_windows(crops)
        except BaseException:
            for job in pending:
                if job is not None:
                    job.cancel()
            raise
        return torch.stack([self._finish_with_job(crop, item, job) for crop, item, job
                            in zip(crops, forwarded, pending, strict=True)])

    def _finish_with_job(self, crop: torch.Tensor, forwarded: tuple[torch.Tensor, torch.Tensor | None],
                         labels: Future | None) -> torch.Tensor:
        """:meth:`finish_window` with the superpixel labels of a worker-thread job (``None``: none needed)."""
        feats, glob = forwarded
        return self._mix(self.local_scores(crop, feats, labels.result() if labels is not None else None), glob)

    @torch.no_grad()
    def __call__(self, crop: torch.Tensor, proposals: torch.Tensor | None = None) -> torch.Tensor:
        """``crop`` float ``[3, h, w]`` RGB 0-255 -> ``[C, h, w]`` (FreeDA takes no ``proposals``)."""
        return self.finish_window(crop, self.forward_windows(crop[None])[0])

    def _mix(self, local: torch.Tensor, glob: torch.Tensor | None) -> torch.Tensor:
        """``S = beta * local [C, h, w] + (1 - beta) * glob [C]`` (``local`` alone without the global term)."""
        if glob is None:
            return local
        beta = self.options.beta
        return beta * local + (1 - beta) * glob[:, None, None]
