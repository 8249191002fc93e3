"""Multi-node placement, on a local cluster: a CPU head and two nodes of 8 logical GPUs.

Each replica's placement group is made exactly as Serve makes it, from `replica_bundles()` and
`placement_strategy()` of a GPU model config; the assertions name the node of every bundle.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

from serve_app.config import ModelConfig, Parallelism, ReplicaResources
from serve_app.placement import placement_strategy, replica_bundles
from tests.deploy.cluster import LocalCluster, local_cluster, wait_for

pytestmark = pytest.mark.e2e


def gpu_model(tensor: int, pipeline: int = 1, placement: str = "strict_pack") -> ModelConfig:
    return ModelConfig(name="m", source="org/m", device="gpu",
                       parallelism=Parallelism(tensor=tensor, pipeline=pipeline, placement=placement),
                       resources=ReplicaResources(num_cpus=0.1, worker_cpus=0.2))


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with local_cluster(gpu_nodes=2, gpus_per_node=8, cpus_per_node=4, head_cpus=2) as running:
        yield running


@pytest.fixture
def replicas(cluster):
    """Creates replica placement groups; removes whatever the test left."""
    from ray.util.placement_group import placement_group, remove_placement_group

    made = []

    def make(model: ModelConfig):
        group = placement_group(replica_bundles(model), strategy=placement_strategy(model))
        made.append(group)
        return group

    yield make
    for group in made:
        remove_placement_group(group)
    assert settles_to(cluster, {"gpu0": 8, "gpu1": 8})


def nodes_of(cluster: LocalCluster, group) -> list[str]:
    """The node of each bundle, in bundle order ('-' while unplaced)."""
    from ray.util.placement_group import placement_group_table

    table = placement_group_table(group)
    return [cluster.name(node) for _, node in sorted(table["bundles_to_node_id"].items())]


def state(group) -> str:
    from ray.util.placement_group import placement_group_table

    return placement_group_table(group)["state"]


def gpus_free(cluster: LocalCluster) -> dict[str, float]:
    """Free GPUs per GPU node, as the autoscaler sees them."""
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(cluster.address)
    return {cluster.name(node.node_id): node.available_resources().get("GPU", 0.0)
            for node in status.active_nodes + status.idle_nodes
            if node.total_resources().get("GPU")}


def settles_to(cluster: LocalCluster, free: dict[str, float]) -> bool:
    """The autoscaler's view lags placement by a resource report; wait for it."""
    try:
        wait_for(lambda: gpus_free(cluster) == free, 15, f"free GPUs {free}")
    except TimeoutError:
        return False
    return True


def test_a_tp4_replica_lands_whole_on_one_gpu_node(cluster, replicas):
    group = replicas(gpu_model(4))
    assert group.wait(30)
    nodes = nodes_of(cluster, group)
    assert len(nodes) == 5  # the replica actor's bundle, then one per tensor-parallel worker
    assert len(set(nodes)) == 1 and nodes[0] in ("gpu0", "gpu1")


def test_two_tp4_replicas_fill_an_8_gpu_node(cluster, replicas):
    groups = [replicas(gpu_model(4)) for _ in range(4)]
    assert all(group.wait(30) for group in groups)
    per_node = collections.Counter()
    for group in groups:
        (node,) = set(nodes_of(cluster, group))
        per_node[node] += 1
    assert per_node == {"gpu0": 2, "gpu1": 2}
    assert settles_to(cluster, {"gpu0": 0, "gpu1": 0})


def test_a_replica_that_fits_nowhere_waits_and_the_autoscaler_sees_its_demand(cluster, replicas):
    from ray.autoscaler.v2.sdk import get_cluster_status

    placed = [replicas(gpu_model(4)) for _ in range(4)]
    assert all(group.wait(30) for group in placed)
    waiting = replicas(gpu_model(4))
    assert not waiting.wait(3)
    assert state(waiting) == "PENDING"
    assert set(nodes_of(cluster, waiting)) == {"-"}

    # What the Ray autoscaler (cluster launcher or KubeRay in-tree) reads to add a GPU node.
    demand = wait_for(lambda: get_cluster_status(cluster.address).resource_demands.placement_group_demand,
                      15, "pending placement-group demand")
    (pending,) = [d for d in demand if d.pg_id == waiting.id.hex()]
    assert pending.strategy == "STRICT_PACK"
    asked = {tuple(sorted(r.bundle.items())): r.count for r in pending.bundles_by_count}
    assert asked == {(("CPU", 0.1),): 1, (("CPU", 0.2), ("GPU", 1.0)): 4}

    from ray.util.placement_group import remove_placement_group

    remove_placement_group(placed[0])  # a replica leaves: the waiting one takes its place
    assert waiting.wait(30)
    assert len(set(nodes_of(cluster, waiting))) == 1


def test_tp8_pp2_with_pack_spans_two_nodes(cluster, replicas):
    group = replicas(gpu_model(8, 2, placement="pack"))
    assert group.wait(30)
    nodes = nodes_of(cluster, group)
    assert len(nodes) == 17
    assert collections.Counter(nodes[1:]) == {"gpu0": 8, "gpu1": 8}  # 16 workers, 8 per node
    assert settles_to(cluster, {"gpu0": 0, "gpu1": 0})


def test_tp8_pp2_with_strict_pack_never_fits_an_8_gpu_node(cluster, replicas):
    group = replicas(gpu_model(8, 2))
    time.sleep(2)
    assert state(group) == "PENDING"
    assert settles_to(cluster, {"gpu0": 8, "gpu1": 8})
