"""Window claims, heartbeats and the rank arithmetic of distributed runs, in one process (no process group)."""

from __future__ import annotations

import pytest

from star_cli.errors import InputError, StarError
from star_cli.pipeline.claims import Heartbeat, Owner, RankWatch, WindowClaims
from star_cli.pipeline.plan import PlanOptions, make_plan
from star_cli.pipeline.ranks import Ranks, assign_jobs, parse_devices, windows_per_rank
from star_cli.pipeline.render import _ranks_text


def test_one_rank_wins_a_window_and_a_dead_runs_claim_is_taken_over(tmp_path):
    mine, peer, earlier = Owner("run-b", 0), Owner("run-b", 1), Owner("run-a", 1)
    assert WindowClaims(tmp_path, earlier).take(3)  # the killed run had claimed window 3
    assert WindowClaims(tmp_path, mine).take(3)  # ... which this run takes over
    assert not WindowClaims(tmp_path, peer).take(3)  # a rank of the same run never does
    assert WindowClaims(tmp_path, peer).owner_of(3) == mine
    assert WindowClaims(tmp_path, peer).take(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["window_000003", "window_000004"]  # no leftovers


def test_watch_names_a_rank_whose_heartbeat_stopped_by_its_own_clock(tmp_path):
    now = [0.0]
    Heartbeat(tmp_path, Owner("run", 0)).write()
    beat = Heartbeat(tmp_path, Owner("run", 1, host="node7", pid=42))
    beat.write()
    watch = RankWatch(tmp_path, "run", 2, timeout=10, clock=lambda: now[0])
    watch.check(0)
    now[0] = 9.0
    beat.write()  # it beat: the timeout starts again
    watch.check(0)
    now[0] = 18.0
    watch.check(0)
    now[0] = 19.5
    with pytest.raises(StarError, match=r"rank 1 \(node7, pid 42\) stopped responding.*--resume"):
        watch.check(0)


def test_watch_reports_a_failed_rank_and_ignores_cards_of_earlier_runs(tmp_path):
    Heartbeat(tmp_path, Owner("old", 1)).write()
    watch = RankWatch(tmp_path, "run", 2)
    assert watch.missing() == [0, 1]
    beat = Heartbeat(tmp_path, Owner("run", 1))
    beat.write()
    assert watch.missing() == [0]
    beat.stop("failed", "CUDA out of memory")
    with pytest.raises(StarError, match="rank 1 .* failed \\(CUDA out of memory\\)"):
        watch.check(0)


def test_ranks_come_from_the_launcher_environment():
    assert Ranks.from_env({}) == Ranks(0, 1, 0, 1)
    ranks = Ranks.from_env({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"})
    assert (ranks.rank, ranks.world, ranks.local_rank, ranks.local_world, ranks.is_main) == (5, 8, 1, 4, False)
    with pytest.raises(InputError, match="inconsistent"):
        Ranks.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_device_lists():
    assert parse_devices("0,1, 3", None) == ("cuda:0", "cuda:1", "cuda:3")
    assert parse_devices(None, "cpu,cpu") == ("cpu", "cpu")
    assert parse_devices(None, None) == ()
    for gpus, devices, message in [("0,a", None, "--gpus"), (None, "gpu0", "--devices"), ("0,0", None, "twice"), ("0", "cpu", "not both")]:
        with pytest.raises(InputError, match=message):
            parse_devices(gpus, devices)


def test_videos_go_longest_first_to_the_least_loaded_rank():
    # 50 -> 0, 40 -> 1, 30 -> 1 (40 < 50), 20 -> 0 (50 < 70), 10 -> 0 (70 = 70: the lower rank)
    assert assign_jobs([10, 50, 30, 20, 40], 2) == [0, 0, 1, 0, 1]
    assert assign_jobs([5], 3) == [0]


def test_dry_run_says_how_ranks_share_windows_and_how_to_keep_all_busy():
    assert windows_per_rank(7, 2) == (3, 4)
    options = PlanOptions(scale=2, chunk_len=8, chunk_overlap=2)
    plan = make_plan(24, 24, 32, options)  # 4 chunks in one window
    assert len(plan.windows) == 1 and len(plan.chunks) == 4
    assert _ranks_text(plan, 4) == (
        "4: windows claimed one at a time, 0-1 per rank when they cost alike; 3 idle (--window-chunks 1 gives 4 windows)"
    )
    one = make_plan(24, 24, 32, PlanOptions(scale=2, chunk_len=8, chunk_overlap=2, window_chunks=1))
    assert _ranks_text(one, 4) == "4: windows claimed one at a time, 1 per rank when they cost alike"
    # The window plan itself never depends on the number of ranks.
    assert make_plan(24, 24, 32, options) == plan


def test_only_a_plain_call_with_several_devices_starts_the_launcher(monkeypatch):
    from pathlib import Path

    from star_cli.pipeline.launch import launcher_arguments, must_launch
    from star_cli.pipeline.request import build_request

    defaults = dict(
        input=Path("a.mp4"), output=Path("b.mp4"), scale=2.0, engine="star", dry_run=False, overwrite=False,
        ignore_errors=False, chunk_len=32, chunk_overlap=None, blend="cosine", canvas="minimal", tile_size=None,
        window_chunks=4, scene_detect=True, checkpoint="light", weights_dir=None, prompt="", prompt_file=None,
        seed=0, steps=15, guidance=7.5, solver="dpmpp_2m_sde", color_fix="adain", device="auto", dtype=None,
        offload="none", vae_group=3, resume=False, codec="auto", crf=None, preset="medium", pix_fmt=None,
        quiet=False, verbose=False,
    )

    def request(**changes):
        return build_request(**{**defaults, **changes})

    monkeypatch.delenv("RANK", raising=False)
    assert must_launch(request(devices="cpu,cpu"))
    assert not must_launch(request(devices="cpu"))  # one device: the run just uses it
    assert not must_launch(request(devices="cpu,cpu", dry_run=True))
    monkeypatch.setenv("RANK", "1")  # a worker (torchrun's, accelerate's or ours) never launches again
    assert not must_launch(request(devices="cpu,cpu"))
    assert launcher_arguments(["upscale", "a.mp4"], 2)[-4:] == ["-m", "star_cli", "upscale", "a.mp4"]
