"""CLI command groups; each module exposes ``register(app: typer.Typer)``."""

#: Modules registered by :mod:`protoseg.cli`, in help order.
COMMAND_MODULES = ["segment", "bank", "evaluate", "build", "partsworld", "compare", "demo"]
