"""`protoseg build-bank` end to end (subprocess, as a user runs it), SIGKILL mid-build, Ray vs local."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from build_fixtures import assert_banks_identical, tiny_cache
from PIL import Image

from protoseg.bank import PrototypeBank
from protoseg.offline import DpsmSource, RunOptions, build_bank, get_build_preset

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, PROTOSEG_CACHE=str(cache), PYTHONPATH=SRC)
    return env


def _cli(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "protoseg", *args], env=_env(cache), cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_build_bank_cli_dpsm_tiny_then_bank_info(tmp_path):
    cache = tmp_path / "cache"
    run = _cli("build-bank", "--preset", "dpsm-tiny", "--classes", "cat, dog", "--out", "B", "--steps", "2",
               cache=cache, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "wrote" in run.stderr and "dpsm-tiny" in run.stderr
    bank = PrototypeBank.load(tmp_path / "B")
    assert bank.classes == ["cat", "dog"] and bank.manifest.method == "dpsm"
    for name in ("cat", "dog"):
        assert bank.table["supply"][bank.rows_of(name, "part")].sum() == pytest.approx(1.0, abs=1e-5)
    assert (cache / "tiny" / "tiny-dinov2" / "config.json").is_file()
    info = _cli("bank", "info", "B", cache=cache, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "dpsm" in info.stdout and str(len(bank)) in info.stdout
    # The matching segmentation preset runs DPSM's sub-region transport on that bank.
    rgb = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    seg = _cli("segment", "photo.png", "--preset", "dpsm-tiny", "--bank", "B", "--classes", "cat, dog", "--out",
               "out", "--device", "cpu", cache=cache, cwd=tmp_path)
    assert seg.returncode == 0, seg.stderr
    labels = np.asarray(Image.open(tmp_path / "out" / "photo.png"))
    assert labels.shape == (96, 128) and set(np.unique(labels)) <= {0, 1}
    # a second build into the same place is refused in one line, without a traceback
    again = _cli("build-bank", "--preset", "dpsm-tiny", "--classes", "cat", "--out", "B", cache=cache,
                 cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = _cli("build-bank", "--preset", "dpsm-tiny", "--captions", "x.txt", "--out", "C", cache=cache,
               cwd=tmp_path)
    assert bad.returncode != 0 and "class names" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow  # three CLI builds; test_build_dpsm.py covers resume identity in-process
def test_sigkill_mid_build_then_resume_is_identical(tmp_path):
    """A real process killed with SIGKILL after its first shard; the rerun resumes and matches."""
    cache = tmp_path / "cache"
    args = ["build-bank", "--preset", "dpsm-tiny", "--classes", "cat", "--steps", "2", "--shard-size", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "protoseg", *args, "--out", "killed"], env=_env(cache),
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = tmp_path / "killed.partial" / "shards"
    deadline = time.time() + 400
    while time.time() < deadline and not list(shards.glob("*.npz")) and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = sorted(p.name for p in shards.glob("*.npz"))
    assert 1 <= len(finished) < 4, finished  # killed mid-build: some but not all of the 4 shards
    assert not (tmp_path / "killed").exists()
    resumed = _cli(*args, "--out", "killed", cache=cache, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight = _cli(*args, "--out", "straight", cache=cache, cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    assert_banks_identical(tmp_path / "killed", tmp_path / "straight")


def test_ray_build_equals_local_build(tmp_path):
    """Shards as tasks of a local Ray (CPU) give the bank of a local build, bit for bit when the tasks
    use the driver's torch thread count (CPU float sums depend on it)."""
    pytest.importorskip("ray")
    import torch

    with tiny_cache(tmp_path / "cache"):
        preset = get_build_preset("dpsm-tiny", steps=2)
        cat = DpsmSource(classes=("cat",))
        local = build_bank(preset, cat, tmp_path / "local", RunOptions(shard_size=4, seed=1))
        remote = build_bank(preset, cat, tmp_path / "ray", RunOptions(shard_size=4, seed=1, ray=True,
                                                                      ray_init={"num_cpus": 2},
                                                                      ray_task_threads=torch.get_num_threads()))
    assert_banks_identical(local, remote)
