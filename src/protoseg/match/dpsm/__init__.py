"""DPSM's test-time method (:class:`DPSMMatcher`; :mod:`protoseg.match.dpsm.matcher` has the math).

One window: propose (SAM masks, coarse superpixels or the caller's) -> sub-regions
(:mod:`~protoseg.match.dpsm.subregions`) -> match against the classes' part prototypes and their supply
units (:mod:`~protoseg.match.dpsm.supply`, one function per mode in :mod:`~protoseg.match.dpsm.modes`)
-> compose proposal scores into pixel scores (:mod:`~protoseg.match.dpsm.compose`).
"""

from protoseg.match.dpsm.matcher import DPSMMatcher
from protoseg.match.dpsm.subregions import SubRegions

__all__ = ["DPSMMatcher", "SubRegions"]
