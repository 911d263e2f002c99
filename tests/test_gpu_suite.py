"""``benchmarks/gpu_suite.py --tiny --device cpu``: the accelerator suite's code runs end to end on the tiny
models and prints one timed row per stage and the ``stages N`` line."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def load_suite():
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_prints_every_stage(tmp_path, capsys):
    suite = load_suite()
    suite.main(["--tiny", "--device", "cpu", "--model-dir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()

    assert lines[-1] == f"stages {len(suite.STAGES)}"
    header = next(line for line in lines if line.startswith("| stage |"))
    assert header == "| stage | fp32 s | peak memory |"
    rows = {}
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0] in suite.STAGES:
            rows[cells[0]] = cells[1:]
    assert list(rows) == list(suite.STAGES)
    for stage, (seconds, memory) in rows.items():
        assert float(seconds) >= 0, stage
        assert re.fullmatch(r"\d+\.\d+ GiB peak RSS", memory), (stage, memory)
    assert float(rows["DPSM: SAM decoder over the grid"][0]) > 0
    assert float(rows["offline: SD image + attention capture"][0]) > 0
    for method in ("FreeDA-B", "DPSM"):
        rate = next(line for line in lines if line.startswith(f"images_per_s {method} "))
        assert float(rate.split()[-1]) > 0
