"""Matchers: score every pixel of a window against the classes, using a prototype bank.

Each matcher is a :class:`Matcher` subclass registered by name with its options record (``MATCHERS``)
and chosen by a preset, so a row of a paper's ablation table is a configuration, not a code fork.
"""

from protoseg.match.base import MATCHERS, Matcher, build_matcher, register_matcher

__all__ = ["MATCHERS", "Matcher", "build_matcher", "register_matcher"]
