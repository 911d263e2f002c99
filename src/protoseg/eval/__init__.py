"""Evaluation: the papers' tables under the field's protocols.

- :mod:`~protoseg.eval.protocols`: each protocol's test-time settings per benchmark (records, no torch);
- :mod:`~protoseg.eval.benchmarks`: each benchmark's method settings (superpixels, beta, K) on a preset;
- :mod:`~protoseg.eval.query`: a dataset under a protocol and class-name variant -> the preset and query;
- :mod:`~protoseg.eval.metrics`: MMSegmentation's counts and scores;
- :mod:`~protoseg.eval.shards`: sharded, resumable scoring of a predictor (optionally on Ray);
- :mod:`~protoseg.eval.segmenter_predictor`, :mod:`~protoseg.eval.labelmaps`: the predictors (a segmenter,
  a folder of label maps);
- :mod:`~protoseg.eval.result`: the scores as JSON and Markdown reports;
- :mod:`~protoseg.eval.runner`: a benchmark evaluation as one call (:func:`~protoseg.eval.runner.run_benchmark`);
- :mod:`~protoseg.eval.published`, :mod:`~protoseg.eval.plots`, :mod:`~protoseg.eval.compare`: published numbers,
  plots, per-class differences between runs;
- :mod:`~protoseg.eval.ablations`: the ablation tables on the procedural worlds.

Datasets are read by :mod:`protoseg.datasets`; whether one has a background class is decided by
:func:`protoseg.datasets.has_background` alone.
"""
