"""Who this process is in a multi-process run, read from the launcher's environment (no torch).

torchrun, `accelerate launch` and `star upscale --gpus/--devices` (which starts
torch.distributed.run's elastic launcher) all start one process per device and
tell each its place through the same variables: RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE. A process started any other way is rank 0 of a world of 1,
and every distributed step becomes a no-op for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from star_cli.errors import InputError

DEVICE_NAME = re.compile(r"cpu|mps|cuda(:\d+)?")


@dataclass(frozen=True)
class Ranks:
    """This process's place: global rank and world, and the same on its own machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 joins, encodes and reports for the whole run."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Ranks:
        """The launcher's RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE (a world of 1 without them)."""
        env = os.environ if env is None else env
        try:
            world = int(env.get("WORLD_SIZE", "1"))
            rank = int(env.get("RANK", "0"))
            local_rank = int(env.get("LOCAL_RANK", str(rank)))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except ValueError:
            raise InputError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be whole numbers") from None
        if not (0 <= rank < world and 0 <= local_rank < local_world <= world):
            raise InputError(f"inconsistent launcher variables: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local_rank}")
        return cls(rank, world, local_rank, local_world)


def parse_devices(gpus: str | None, devices: str | None) -> tuple[str, ...]:
    """`--gpus 0,1` -> ('cuda:0', 'cuda:1'); `--devices cpu,cpu` as given. Empty when neither is set."""
    if gpus is not None and devices is not None:
        raise InputError("give --gpus or --devices, not both")
    if gpus is not None:
        items = [item.strip() for item in gpus.split(",")]
        if not all(item.isdigit() for item in items):
            raise InputError(f"--gpus must list GPU numbers like 0,1,2,3, got '{gpus}'")
        names = tuple(f"cuda:{int(item)}" for item in items)
    elif devices is not None:
        names = tuple(item.strip() for item in devices.split(","))
        bad = [name for name in names if not DEVICE_NAME.fullmatch(name)]
        if bad:
            raise InputError(f"--devices takes cpu, mps, cuda or cuda:N separated by commas, got '{bad[0]}'")
    else:
        return ()
    gpu_names = [name for name in names if name.startswith("cuda:")]
    if len(set(gpu_names)) != len(gpu_names):
        raise InputError(f"a GPU is listed twice in '{gpus or devices}': give each rank its own")
    return names


def reporting_process(env: Mapping[str, str] | None = None) -> bool:
    """False on the ranks other than 0 of a launched run, which leave the reporting to rank 0."""
    env = os.environ if env is None else env
    return env.get("RANK", "0").strip() in ("", "0")


def assign_jobs(costs: list[int], world: int) -> list[int]:
    """The rank of each job: longest first, each to the rank with the least work so far (ties: lowest rank).

    Every rank computes the same answer from the same plans, so no rank needs to be told.
    """
    load = [0] * world
    owners = [0] * len(costs)
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        owners[index] = rank
        load[rank] += costs[index]
    return owners


def windows_per_rank(windows: int, world: int) -> tuple[int, int]:
    """(fewest, most) windows a rank restores when windows cost alike (claims balance unequal ones)."""
    return windows // world, -(-windows // world)
