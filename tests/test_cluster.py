"""Multi-node DDP the way Vertex AI starts it: one process per node, each told its place only by CLUSTER_SPEC."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlproj.cloud.cluster import VertexEnvironment, cluster_plugins
from mlproj.errors import ConfigError

from conftest import ROOT, make_image_folder, read_summary

# A test-only callback, loaded through Hydra (+callbacks.dump) from tmp_path: every rank saves what it trained.
DUMP_CALLBACK = """
import json
import torch
from lightning.pytorch import Callback


class DumpWeights(Callback):
    def __init__(self, path):
        self.path = path

    def on_train_end(self, trainer, pl_module):
        rank = trainer.global_rank
        torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, f"{self.path}/rank{rank}.pt")
        ranks = {"node_rank": trainer.node_rank, "world_size": trainer.world_size, "step": trainer.global_step}
        with open(f"{self.path}/rank{rank}.json", "w") as f:
            json.dump(ranks, f)
"""


def cluster_spec(task_type: str, index: int, workers: list[str]) -> str:
    """The JSON Vertex AI puts in CLUSTER_SPEC on every replica of a two-pool job."""
    cluster = {"workerpool0": workers[:1], "workerpool1": workers[1:]}
    return json.dumps({"cluster": cluster, "environment": "cloud", "task": {"type": task_type, "index": index}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_vertex_replica_gets_its_node_rank(monkeypatch) -> None:
    workers = ["cmle-training-workerpool0-1a-0:2222", "wp1-0:2222", "wp1-1:2222"]
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.setenv("RANK", "2")  # Vertex's node index, which Lightning's default environment ignores
    for task_type, index, node_rank in [("workerpool0", 0, 0), ("workerpool1", 0, 1), ("workerpool1", 1, 2)]:
        monkeypatch.setenv("CLUSTER_SPEC", cluster_spec(task_type, index, workers))
        (environment,) = cluster_plugins(num_nodes=3)
        assert environment.node_rank() == node_rank
        assert (environment.main_address, environment.main_port) == ("cmle-training-workerpool0-1a-0", 2222)
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.2")
    monkeypatch.setenv("MASTER_PORT", "23456")
    assert (VertexEnvironment().main_address, VertexEnvironment().main_port) == ("10.0.0.2", 23456)


def test_without_cluster_spec_lightning_keeps_its_own_environment(monkeypatch) -> None:
    monkeypatch.delenv("CLUSTER_SPEC", raising=False)
    assert cluster_plugins(num_nodes=1) == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (cluster_spec("workerpool0", 0, ["a:1", "b:1"]), "trainer.num_nodes=3 but this Vertex AI job runs 2 nodes"),
        ("{not json", "CLUSTER_SPEC is not the JSON Vertex AI sets"),
        (cluster_spec("workerpool2", 0, ["a:1", "b:1", "c:1"]), "task type 'workerpool2'"),
    ],
)
def test_a_cluster_that_does_not_fit_is_one_line(spec: str, message: str, monkeypatch) -> None:
    monkeypatch.setenv("CLUSTER_SPEC", spec)
    with pytest.raises(ConfigError, match=message) as error:
        cluster_plugins(num_nodes=3)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_two_vertex_nodes_train_together_and_end_with_identical_weights(tmp_path: Path) -> None:
    """Two train.py processes on 127.0.0.1, environments as Vertex AI sets them: one DDP job over gloo."""
    (tmp_path / "dump_weights.py").write_text(DUMP_CALLBACK)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    data = make_image_folder(tmp_path / "images", per_class=12)
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    master_port = str(free_port())
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    processes = []
    for node, task_type in enumerate(["workerpool0", "workerpool1"]):
        env = clean | {
            "CLUSTER_SPEC": cluster_spec(task_type, 0, workers),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": master_port,
            "WORLD_SIZE": "2",  # Vertex: the number of nodes
            "RANK": str(node),  # Vertex: the node index
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            "data=imagefolder",
            f"data.root={data}",
            "data.image_size=32",
            "data.cache_short_side=32",
            "data.batch_size=4",
            "data.num_workers=0",
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            "trainer.strategy=ddp",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "test=false",
            f"hydra.run.dir={tmp_path / f'node{node}'}",  # separate machines, separate disks
            f"paths.cache_dir={tmp_path / f'cache{node}'}",
            "+callbacks.dump._target_=dump_weights.DumpWeights",
            f"+callbacks.dump.path={dumps}",
        ]
        command = [sys.executable, str(ROOT / "train.py"), *args]
        processes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=240)[0])
    finally:
        for process in processes:
            process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    import torch

    ranks = {rank: json.loads((dumps / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert [ranks[r]["node_rank"] for r in (0, 1)] == [0, 1]
    assert all(r["world_size"] == 2 and r["step"] == 3 for r in ranks.values())
    weights = [torch.load(dumps / f"rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    # Node 0 keeps the record and the checkpoints; node 1 writes neither, so a shared bucket is never fought over.
    summary = read_summary(tmp_path / "node0")
    assert summary["status"] == "finished" and summary["batch_size"] == 8
    assert (tmp_path / "node0" / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "node1" / "summary.json").exists()
    assert not (tmp_path / "node1" / "checkpoints").exists()
