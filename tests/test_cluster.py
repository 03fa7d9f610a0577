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

EMULATOR_READS = {"LITDATA_ASYNC_CHUNK_PREFETCH": "0"}  # LitData's async prefetch (obstore) cannot reach the emulator

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


# A test-only callback: every rank records the split indices of each training batch it was sent (ShardImages.indices,
# read as the batch reaches the device, before the batch transform turns it into a tensor).
RECORD_CALLBACK = """
import json
from lightning.pytorch import Callback


class RecordIndices(Callback):
    def __init__(self, path):
        self.path = path
        self.batches = []

    def setup(self, trainer, pl_module, stage):
        datamodule = trainer.datamodule
        transfer = datamodule.on_after_batch_transfer

        def recording(batch, dataloader_idx):
            if trainer.training:
                self.batches.append(batch[0].indices.tolist())
            return transfer(batch, dataloader_idx)

        datamodule.on_after_batch_transfer = recording

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.path}/rank{trainer.global_rank}.json", "w") as f:
            json.dump({"node_rank": trainer.node_rank, "batches": self.batches}, f)
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


def train_on_two_nodes(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """Two train.py processes on 127.0.0.1, environments as Vertex AI sets them: one DDP job over gloo, one epoch.
    Each node has its own run dir and cache (separate machines, separate disks); `tmp_path` is on PYTHONPATH, for
    test-only callbacks written there."""
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    master_port = str(free_port())
    clean = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE")}
    processes = []
    for node, task_type in enumerate(["workerpool0", "workerpool1"]):
        node_env = clean | {
            "CLUSTER_SPEC": cluster_spec(task_type, 0, workers),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": master_port,
            "WORLD_SIZE": "2",  # Vertex: the number of nodes
            "RANK": str(node),  # Vertex: the node index
            "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        node_args = [
            *args,
            "trainer.accelerator=cpu",
            "trainer.devices=1",
            "trainer.num_nodes=2",
            "trainer.strategy=ddp",
            "trainer.max_epochs=1",
            "trainer.limit_val_batches=1",
            "test=false",
            f"hydra.run.dir={tmp_path / f'node{node}'}",
            f"paths.cache_dir={tmp_path / f'cache{node}'}",
        ]
        command = [sys.executable, str(ROOT / "train.py"), *node_args]
        processes.append(
            subprocess.Popen(
                command, cwd=tmp_path, env=node_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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


@pytest.mark.slow
def test_two_vertex_nodes_train_together_and_end_with_identical_weights(tmp_path: Path) -> None:
    """Two train.py processes on 127.0.0.1, environments as Vertex AI sets them: one DDP job over gloo."""
    (tmp_path / "dump_weights.py").write_text(DUMP_CALLBACK)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    data = make_image_folder(tmp_path / "images", per_class=12)
    train_on_two_nodes(
        tmp_path,
        "data=imagefolder",
        f"data.root={data}",
        "data.image_size=32",
        "data.cache_short_side=32",
        "data.batch_size=4",
        "data.num_workers=0",
        "trainer.limit_train_batches=3",
        "+callbacks.dump._target_=dump_weights.DumpWeights",
        f"+callbacks.dump.path={dumps}",
    )

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


@pytest.mark.slow
def test_two_vertex_nodes_streaming_one_shard_set_from_a_bucket_read_disjoint_parts_of_the_epoch(
    tmp_path: Path, gcs_emulator
) -> None:
    """Each node streams its own part of the same gs:// shard set: no image is trained twice, and together they
    train every image but the last `N mod (batch_size x 2)` of the epoch's shuffled order (whole global batches)."""
    from mlproj.data.imagefolder import ImageFolderDataModule
    from mlproj.data.shard_writer import write_shards

    # 42 training images (5 global batches of 8, 2 left out); 9 for validation, so that LitData gives each node at
    # least one batch of them (it gives the last rank what is left over from whole batches).
    images = make_image_folder(tmp_path / "images", per_class=20)
    url = f"{gcs_emulator.bucket('two-nodes')}/set"
    written = write_shards(ImageFolderDataModule(str(images), num_workers=0).load(), url, 32, workers=1, chunk_size=4)
    size = written.index.splits["train"]
    (tmp_path / "record_indices.py").write_text(RECORD_CALLBACK)
    records = tmp_path / "records"
    records.mkdir()
    train_on_two_nodes(
        tmp_path,
        "data=imagefolder",
        f"data.root={images}",
        f"data.shards={url}",
        "data.image_size=32",
        "data.batch_size=4",
        "data.num_workers=1",
        "+callbacks.record._target_=record_indices.RecordIndices",
        f"+callbacks.record.path={records}",
        env={**gcs_emulator.env, **EMULATOR_READS},
    )

    ranks = [json.loads((records / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["node_rank"] for r in ranks] == [0, 1]
    batches = [r["batches"] for r in ranks]
    assert len(batches[0]) == len(batches[1]) == size // 8 >= 2, "each node trains the same number of whole batches"
    assert all(len(batch) == 4 for part in batches for batch in part)
    seen = [[i for batch in part for i in batch] for part in batches]
    assert not set(seen[0]) & set(seen[1]), "no image is read by both nodes"
    union = set(seen[0]) | set(seen[1])
    assert len(seen[0]) + len(seen[1]) == len(union) == size - size % 8
    assert union <= set(range(size))
