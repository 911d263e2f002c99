import os

import numpy as np
import pytest
import torch

# Keep test runs reproducible and light on a 2-core machine.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_small_world(root, size: int, test: int = 2):
    """A parts world in ``root``: 4 support scenes (seed 7: every class appears) in ``train/``, ``test``
    held-out scenes in ``test/`` and their hand-crafted bank in ``bank/``; returns ``root``."""
    from protoseg.offline.examples import bank_from_examples
    from protoseg.worlds import write_examples

    write_examples(root / "train", 4, seed=7, size=size)
    write_examples(root / "test", test, seed=6, size=size)
    bank_from_examples(root / "train", "handcrafted").save(root / "bank")
    return root


def world_scenes(world):
    """The held-out scene images of a :func:`make_small_world` world, in name order."""
    return sorted((world / "test" / "images").glob("*.png"))


def assert_same_segmentation(a, b, with_scores: bool = False):
    """Two :class:`~protoseg.segment.Segmentation` results are equal: labels, classes, diagnostics and scores
    (both absent, or equal; ``with_scores``: both must have them)."""
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.classes == b.classes and a.diagnostics == b.diagnostics
    assert (a.scores is None) == (b.scores is None)
    assert a.scores is not None or not with_scores
    if a.scores is not None:
        np.testing.assert_array_equal(a.scores.numpy(), b.scores.numpy())


@pytest.fixture
def cli_run(capsys):
    """The CLI in-process, as the console script runs it: ``cli_run(*args) -> (code, stdout, stderr)``."""
    from protoseg import cli

    def invoke(*args):
        capsys.readouterr()
        code = cli.run([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return invoke


@pytest.fixture
def cli_process(cli_run):
    """:func:`cli_run` returning a ``subprocess.CompletedProcess`` (``returncode``, ``stdout``, ``stderr``)."""
    import subprocess

    def invoke(*args):
        code, out, err = cli_run(*args)
        return subprocess.CompletedProcess(args, code, out, err)

    return invoke


def assert_one_error(result, *fragments) -> None:
    """``result`` (a ``CompletedProcess`` of the CLI) exited 2 with exactly one ``error:`` line, no traceback,
    and that line contains every fragment."""
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
