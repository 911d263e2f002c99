"""Configuration as typed data: segmentation presets, build presets and per-benchmark protocol settings."""
