"""A deterministic hand-crafted dense feature backend (colour and texture statistics per patch).

It needs no weights, so the whole offline + online + evaluation chain runs anywhere. It is a real,
selectable backend (``--preset handcrafted``), built for the procedural parts world; on natural images
it is far weaker than DINOv2.

Per patch of a ``grid`` x ``grid`` partition of the image (resized to ``grid * patch`` pixels) it
computes, on the image blurred lightly:

- mean and standard deviation of R, G, B and of the opponent channels (R-G, (R+G)/2-B),
- mean absolute horizontal and vertical gradients (texture orientation),
- energy of a 2x2 checker response (fine texture) and of a half-patch stripe response (coarse texture),
- a 4-bin hue histogram weighted by saturation.

Each statistic is standardised with fixed constants and the vector is L2-normalised per patch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from protoseg.models.base import resolve_device

HANDCRAFTED_ID = "protoseg/handcrafted-v1"


class HandcraftedFeatures:
    """Dense colour/texture features ``[B, 22, grid, grid]``."""

    encoder_id = HANDCRAFTED_ID
    dim = 22

    def __init__(self, grid: int = 37, patch: int = 8, device: str | torch.device | None = "cpu"):
        self.grid = (grid, grid)
        self.patch = patch
        self.device = resolve_device(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float ``[B, 3, H, W]`` RGB 0-255 -> ``[B, 22, grid, grid]``."""
        side = self.grid[0] * self.patch
        x = images.to(self.device, torch.float32) / 255.0
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        opp1, opp2 = r - g, (r + g) / 2 - b
        lum = (r + g + b) / 3
        gx = (lum[..., :, 1:] - lum[..., :, :-1]).abs()
        gy = (lum[..., 1:, :] - lum[..., :-1, :]).abs()
        gx = F.pad(gx, (0, 1, 0, 0), mode="replicate")
        gy = F.pad(gy, (0, 0, 0, 1), mode="replicate")
        checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], device=x.device).view(1, 1, 2, 2) / 4
        fine = F.conv2d(F.pad(lum, (0, 1, 0, 1), mode="replicate"), checker).abs()
        half = max(self.patch // 2, 1)
        coarse_h = (lum - torch.roll(lum, shifts=half, dims=-1)).abs()
        coarse_v = (lum - torch.roll(lum, shifts=half, dims=-2)).abs()
        maxc, _ = x.max(dim=1, keepdim=True)
        minc, _ = x.min(dim=1, keepdim=True)
        sat = maxc - minc
        angle = torch.atan2(opp2 * (3**0.5) / 1.5, opp1)
        hue_bins = [sat * torch.clamp(torch.cos(angle - k * torch.pi / 2), min=0) ** 2 for k in range(4)]

        def pool(t: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(t, self.patch)

        colour = torch.cat([r, g, b, opp1, opp2], dim=1)
        mean = pool(colour)
        std = (pool(colour**2) - mean**2).clamp_min(0).sqrt()
        feats = torch.cat(
            [
                mean * 2.0,
                std * 6.0,
                pool(gx) * 8.0,
                pool(gy) * 8.0,
                pool(fine) * 16.0,
                pool(coarse_h) * 4.0,
                pool(coarse_v) * 4.0,
                pool(lum) * 2.0 - 1.0,
                *[pool(h) * 4.0 for h in hue_bins],
                pool(sat) * 2.0,
                pool(torch.ones_like(lum)) * 0.5,
            ],
            dim=1,
        )
        assert feats.shape[1] == self.dim, feats.shape
        return F.normalize(feats, dim=1)
