"""Test scaffolding that ships with the package: tiny random models of the real classes (smoke presets, tests)."""
