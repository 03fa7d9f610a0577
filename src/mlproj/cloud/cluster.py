"""Multi-node DDP on Vertex AI: Lightning learns its node rank from Vertex's `CLUSTER_SPEC`.

Vertex gives every replica `CLUSTER_SPEC` and sets `RANK` to the node index, while Lightning's
default environment reads `NODE_RANK`: without this mapping every node believes it is node 0 and
the process group never forms (Lightning issue #13374). Lightning's `KubeflowEnvironment` is no
longer chosen on its own and assumes one process per node; this environment keeps Lightning's
launcher, so each node still starts one process per GPU. Imported only when a Trainer is built.
"""

import json
import os
from typing import Any

from lightning.fabric.plugins.environments import LightningEnvironment

from mlproj.errors import ConfigError

CLUSTER_SPEC = "CLUSTER_SPEC"
# Pool 0 is the primary replica, pool 1 the other nodes; pools 2 and 3 (reduction server, evaluator) do not train.
TRAINING_POOLS = ("workerpool0", "workerpool1")


def cluster_plugins(num_nodes: int) -> list[Any]:
    """The Trainer plugins for where this process runs: the Vertex environment when `CLUSTER_SPEC` is set."""
    if CLUSTER_SPEC not in os.environ:
        return []
    environment = VertexEnvironment()
    if environment.num_nodes != num_nodes:
        raise ConfigError(
            f"trainer.num_nodes={num_nodes} but this Vertex AI job runs {environment.num_nodes} nodes "
            f"(CLUSTER_SPEC): pass trainer.num_nodes={environment.num_nodes}, or submit with "
            f"`mlproj vertex submit --nodes {num_nodes}`"
        )
    return [environment]


class VertexEnvironment(LightningEnvironment):
    """Lightning's own environment with node rank, main address and port taken from `CLUSTER_SPEC`."""

    def __init__(self) -> None:
        super().__init__()
        try:
            spec = json.loads(os.environ[CLUSTER_SPEC])
            self.pools: dict[str, list[str]] = {name: list(spec["cluster"].get(name, [])) for name in TRAINING_POOLS}
            self.task_type: str = spec["task"]["type"]
            self.task_index = int(spec["task"]["index"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(
                f"{CLUSTER_SPEC} is not the JSON Vertex AI sets ({error!r}): unset it outside Vertex AI, or give "
                '{"cluster": {"workerpool0": ["HOST:PORT"], ...}, "task": {"type": "workerpool0", "index": 0}}'
            ) from error
        if self.task_type not in TRAINING_POOLS or not self.pools["workerpool0"]:
            raise ConfigError(
                f"{CLUSTER_SPEC} task type {self.task_type!r} with workerpool0={self.pools['workerpool0']}: "
                "training runs in workerpool0 (the primary, one replica) and workerpool1 (the other nodes)"
            )

    @property
    def num_nodes(self) -> int:
        return sum(len(hosts) for hosts in self.pools.values())

    @property
    def main_address(self) -> str:
        """Vertex's `MASTER_ADDR`, else the primary replica's host."""
        return os.environ.get("MASTER_ADDR") or self.pools["workerpool0"][0].rsplit(":", 1)[0]

    @property
    def main_port(self) -> int:
        """Vertex's `MASTER_PORT`, else the primary replica's port."""
        return int(os.environ.get("MASTER_PORT") or self.pools["workerpool0"][0].rsplit(":", 1)[1])

    def node_rank(self) -> int:
        """The primary replica is node 0, replica i of workerpool1 is node i + 1."""
        return 0 if self.task_type == "workerpool0" else 1 + self.task_index
