"""`segment --ray`, `eval --ray` and `build-bank --ray` on a real 2-node Ray cluster (``ray.cluster_utils.Cluster``,
every node on 127.0.0.1) give exactly the local results, and a worker node killed mid-run still ends with every
output written once.

About 90 s on 2 cores, in the default run (nothing faster covers a real cluster). The cluster runs inside a
private network namespace with only loopback (``unshare -n``, as root, which CI is):
:func:`test_cluster_in_a_loopback_only_network_namespace` re-runs this file there with ``PROTOSEG_TEST_NETNS=1``,
and only then do the ``inside`` tests run, so Ray can neither bind nor dial anything but 127.0.0.1.
"""

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from build_fixtures import assert_banks_identical, tiny_cache
from conftest import make_small_world, world_scenes

import protoseg.batch
import protoseg.ray_shards
from protoseg.bank import PrototypeBank
from protoseg.batch import BatchSettings, segment_files
from protoseg.config.build import DpsmSource, get_build_preset
from protoseg.datasets import open_examples
from protoseg.errors import ProtosegError
from protoseg.eval.benchmarks import dataset_preset
from protoseg.eval.segmenter_predictor import SegmenterPredictor
from protoseg.eval.shards import evaluate
from protoseg.offline.build import RunOptions, build_bank
from protoseg.offline.examples import bank_from_examples
from protoseg.segment import Segmenter
from protoseg.worlds import PARTS_WORLD_CLASSES, write_examples

INSIDE = os.environ.get("PROTOSEG_TEST_NETNS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs in a loopback-only network namespace (the test below)")


def test_cluster_in_a_loopback_only_network_namespace():
    if INSIDE:
        pytest.skip("already inside the namespace")
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs root with unshare and ip for a private network namespace (CI runs as root)")
    pytest.importorskip("ray")
    script = (f"ip link set lo up && exec {sys.executable} -m pytest {__file__} -q -s -p no:xdist "
              "-p no:cacheprovider -x -k inside")
    # Ray's own temporary folder apart: Ray records the newest cluster there (/tmp/ray/ray_current_cluster by
    # default), and a local ray.init() of a test running beside this one would try to join this cluster,
    # which is unreachable outside the namespace.
    with tempfile.TemporaryDirectory(prefix="rayns-") as ray_tmp:
        env = {**os.environ, "PROTOSEG_TEST_NETNS": "1", "RAY_TMPDIR": ray_tmp}
        proc = subprocess.run(["unshare", "-n", "sh", "-c", script], env=env, capture_output=True, text=True,
                              timeout=600, cwd=Path(__file__).resolve().parents[1])
    print("\n".join(line for line in proc.stdout.splitlines() if "segment --ray" in line or "killed-node" in line))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert re.search(r"\b5 passed", proc.stdout), proc.stdout[-2000:]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """The tiny-model cache of the driver and of every node (nodes take the environment they start in)."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="module")
def cluster(cache):
    cluster_utils = pytest.importorskip("ray.cluster_utils")  # optional dependency (protoseg[ray])
    with tiny_cache(cache):
        nodes = cluster_utils.Cluster(initialize_head=True,
                                      head_node_args={"num_cpus": 2, "node_ip_address": "127.0.0.1"})
        worker = nodes.add_node(num_cpus=2, node_ip_address="127.0.0.1")
    nodes.wait_for_nodes(timeout=120)
    yield nodes, worker
    nodes.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_small_world(tmp_path_factory.mktemp("cluster"), size=96, test=8)


def _settings(world, out, **extra):
    return BatchSettings(classes=PARTS_WORLD_CLASSES, bank=world / "bank", preset="handcrafted", device="cpu",
                         out=out, workers=0, **extra)


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@inside
def test_inside_segment_on_ray_writes_what_a_local_run_writes(cluster, world, tmp_path, caplog):
    nodes, _ = cluster
    segment_files(world_scenes(world), _settings(world, tmp_path / "local"))
    with caplog.at_level(logging.INFO, logger="protoseg"):
        summary = segment_files(world_scenes(world), _settings(world, tmp_path / "ray", ray=True,
                                                          ray_address=nodes.address, ray_shard_size=1))
    assert len(summary.written) == 8
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
    used = {m.split()[-1] for m in caplog.messages if m.startswith("Ray worker started on node")}
    print("segment --ray worker nodes:", sorted(used))
    assert len(used) == 2  # both nodes segmented
    again = segment_files(world_scenes(world), _settings(world, tmp_path / "ray", ray=True, ray_address=nodes.address))
    assert not again.written and len(again.skipped) == 8  # resumable: up-to-date outputs are skipped


@inside
def test_inside_a_worker_of_another_protoseg_build_is_one_error(cluster, world, tmp_path, monkeypatch):
    nodes, _ = cluster
    monkeypatch.setattr(protoseg.ray_shards, "build_id", lambda: "0.0.0+driver")
    with pytest.raises(ProtosegError, match=r"runs protoseg \S+ but this driver runs 0.0.0\+driver"):
        segment_files(world_scenes(world)[:1], _settings(world, tmp_path / "o", ray=True, ray_address=nodes.address))


@inside
def test_inside_eval_on_ray_gives_the_local_totals(cluster, tmp_path):
    nodes, _ = cluster
    write_examples(tmp_path / "train", count=6, seed=0, size=224)
    write_examples(tmp_path / "test", count=4, seed=1, size=224)
    preset = dataset_preset("parts-world").apply("handcrafted")
    bank_from_examples(tmp_path / "train", preset).save(tmp_path / "bank")
    test = open_examples(tmp_path / "test", name="parts-world")
    recipe = {"preset": preset.to_dict(), "bank": str(tmp_path / "bank"), "device": "cpu"}

    def predictor():
        return SegmenterPredictor(Segmenter(preset, PrototypeBank.load(tmp_path / "bank")), test,
                                  {"preset": "handcrafted"}, recipe=recipe)

    local = evaluate(test, predictor(), run_dir=tmp_path / "local", shard_size=1, workers=0)
    remote = evaluate(test, predictor(), run_dir=tmp_path / "ray", shard_size=1, workers=0, ray=True,
                      ray_address=nodes.address)
    assert np.array_equal(local.totals, remote.totals) and np.array_equal(local.confusion, remote.confusion)


@inside
def test_inside_build_bank_on_ray_gives_the_local_bank(cluster, cache, tmp_path):
    nodes, _ = cluster
    with tiny_cache(cache):
        preset = get_build_preset("dpsm-tiny", steps=2)
        cat = DpsmSource(classes=("cat",))
        local = build_bank(preset, cat, tmp_path / "local", RunOptions(shard_size=4, seed=1))
        remote = build_bank(preset, cat, tmp_path / "ray", RunOptions(
            shard_size=4, seed=1, ray=True, ray_address=nodes.address, ray_task_threads=torch.get_num_threads()))
    assert_banks_identical(local, remote)


@inside
def test_inside_a_worker_node_killed_mid_run_still_writes_every_output_once(cluster, world, tmp_path,
                                                                           monkeypatch, caplog):
    nodes, worker = cluster
    segment_files(world_scenes(world), _settings(world, tmp_path / "local"))
    real = protoseg.batch.save_segmentation
    writes = []

    def counted(out, stem, *args, **kwargs):
        writes.append(stem)
        return real(out, stem, *args, **kwargs)

    def kill_after_first(stage, done, total):
        if stage == "segmenting" and done == 1 and worker in nodes.worker_nodes:
            nodes.remove_node(worker)  # the worker node's raylet and its workers die

    monkeypatch.setattr(protoseg.batch, "save_segmentation", counted)
    with caplog.at_level(logging.INFO, logger="protoseg"):
        summary = segment_files(world_scenes(world), _settings(world, tmp_path / "ray", ray=True,
                                                          ray_address=nodes.address, ray_shard_size=1),
                                progress=kill_after_first)
    print("killed-node run:", [m for m in caplog.messages if "Ray worker" in m])
    assert worker not in nodes.worker_nodes
    assert len(summary.written) == 8 and sorted(writes) == sorted(p.stem for p in world_scenes(world))
    assert _files(tmp_path / "local") == _files(tmp_path / "ray")
