"""Class-agnostic region proposals: SAM automatic mask generation and Felzenszwalb superpixel proposals."""

from protoseg.proposals.mask_generator import (
    MaskGenerationSettings,
    MaskPredictor,
    clean_small_regions,
    filter_batch,
    generate_masks,
)
from protoseg.proposals.superpixels import superpixel_proposals, uncovered_superpixels

__all__ = ["MaskGenerationSettings", "MaskPredictor", "clean_small_regions", "filter_batch", "generate_masks",
           "superpixel_proposals", "uncovered_superpixels"]
