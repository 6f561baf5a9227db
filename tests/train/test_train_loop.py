"""Training end to end on the tiny model: it learns, DF reaches the weights, frozen stays frozen,
resume is bit-exact, two CPU processes train data-parallel, and the result loads for inference."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from star_cli.errors import InputError
from star_cli.models.loading import load_star_unet, read_star_config, save_star_state
from star_cli.train import checkpoint as ckpt
from star_cli.train import loop
from star_cli.train.config_file import load_config
from star_cli.train.data import ClipSampler, make_loader
from star_cli.train.losses import decode_with_grad, df_terms
from star_cli.video.probe import probe




def _session(workspace: Path, **overrides: object) -> loop.Session:
    return loop.setup(load_config(workspace / "cfg.toml", overrides), Console(quiet=True))


def _first_batch(s: loop.Session) -> dict:
    return next(iter(make_loader(s.dataset, ClipSampler(len(s.dataset), 0), 1, 0)))


def test_overfits_one_batch(workspace: Path) -> None:
    s = _session(workspace, **{"loss.df_weight": 0.0, "model.gradient_checkpointing": False, "optim.lr": 1e-2,
                               "data.num_frames": 1})
    batch = _first_batch(s)
    losses = []
    for _ in range(30):
        s.generator.manual_seed(0)  # the same t and noise every step: one fixed target to fit
        torch.manual_seed(0)
        terms = loop.compute_loss(s, batch)
        s.accelerator.backward(terms.total)
        s.optimizer.step()
        s.optimizer.zero_grad(set_to_none=True)
        losses.append(terms.total.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.4 * losses[0], losses


def test_df_loss_reaches_the_controlnet(workspace: Path) -> None:
    s = _session(workspace)
    batch = _first_batch(s)
    gt = batch["gt"]
    z0 = s.vae.encode_videos(gt, s.generator)
    hint = s.vae.encode_videos(batch["lq"], s.generator)
    y = torch.stack([s.contexts[c] for c in batch["caption"]])
    t = torch.tensor([300])
    x_t = loop.q_sample(z0, t, torch.randn(z0.shape, generator=s.generator))
    x0 = loop.v_to_x0(s.model(x_t, t, y, hint), x_t, t)
    low, high = df_terms(decode_with_grad(s.vae, x0, 3), gt, s.cfg.loss)
    (low + high).sum().backward()
    grads = {name: p.grad for name, p in s.model.named_parameters() if name.startswith(ckpt.CONTROLNET_PREFIX)}
    assert any(g is not None and g.abs().sum() > 0 for g in grads.values())
    # The reference decodes x0 under no_grad: its DF term carries no gradient at all.
    with torch.no_grad():
        detached = decode_with_grad(s.vae, x0, 3)
    assert not detached.requires_grad


def test_frozen_stays_frozen_and_resume_is_bit_exact(workspace: Path) -> None:
    def run(out: str, steps: int, resume: str | None = None, **extra: object) -> Path:
        overrides = {"train.output_dir": workspace / out, "train.max_steps": steps, "data.num_frames": 1,
                     "train.ema_decay": 0.9, **extra}
        return loop.run_training(workspace / "cfg.toml", overrides, resume, Console(quiet=True))

    # Validation and checkpoint pruning in one run only: neither may disturb the training stream.
    validation = {"validation.clip": workspace / "clips" / "lq" / "c0.mp4", "validation.every": 5,
                  "validation.steps": 2, "checkpoint.keep": 1}
    straight = run("straight", 10, **validation)
    run("halves", 5)
    resumed = run("halves", 10, "latest")
    step10 = "checkpoints/step-00000010"
    for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "ema.pt", "rng-0.pt", "unet.safetensors"):
        assert (workspace / "straight" / step10 / name).read_bytes() == (workspace / "halves" / step10 / name).read_bytes(), name
    assert straight.read_bytes() == resumed.read_bytes()
    assert [p.name for p in ckpt.list_checkpoints(workspace / "straight")] == ["step-00000010"]
    for step in (5, 10):
        assert probe(workspace / "straight" / "validation" / f"step-{step:08d}.mp4").num_frames == 6

    start = load_file(workspace / "weights" / "star" / "light_deg.safetensors")
    end = load_file(straight)
    frozen = [k for k in start if not ckpt.is_trainable(k)]
    assert frozen and all(torch.equal(start[k], end[k]) for k in frozen)
    changed = [k for k in start if ckpt.is_trainable(k) and not torch.equal(start[k], end[k])]
    assert any(k.startswith(ckpt.CONTROLNET_PREFIX) for k in changed) and any(ckpt.is_liem(k) for k in changed)
    # The result is what `star upscale --checkpoint PATH` loads.
    model = load_star_unet(straight)
    assert model.config == read_star_config(workspace / "weights" / "star" / "light_deg.safetensors")
    rows = (workspace / "halves" / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == [str(i) for i in range(1, 11)]


def test_a_checkpoint_without_liems_starts_them_fresh(workspace: Path, tmp_path: Path) -> None:
    state = load_file(workspace / "weights" / "star" / "light_deg.safetensors")
    venhancer = {k: v for k, v in state.items() if not ckpt.is_liem(k)}
    path = tmp_path / "venhancer.safetensors"
    config = read_star_config(workspace / "weights" / "star" / "light_deg.safetensors")
    save_star_state(venhancer, config.to_dict(), path)
    model, initialised = ckpt.load_initial_model(path, device=torch.device("cpu"))
    assert initialised == sorted(k for k in state if ckpt.is_liem(k)) and initialised
    assert ckpt.select_trainable(model) == sorted(k for k in state if ckpt.is_trainable(k))
    save_star_state({**venhancer, "extra.weight": torch.zeros(1)}, config.to_dict(), path)
    with pytest.raises(InputError, match="extra.weight"):
        ckpt.load_initial_model(path, device=torch.device("cpu"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_train_data_parallel(workspace: Path, tmp_path: Path) -> None:
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import hashlib, sys, torch
        from pathlib import Path
        from rich.console import Console
        from star_cli.train import loop
        from star_cli.train.config_file import load_config
        from star_cli.train.data import DataPosition
        torch.set_num_threads(1)
        cfg = load_config(Path({str(workspace / "cfg.toml")!r}), {{
            "train.output_dir": Path({str(tmp_path / "run")!r}), "train.max_steps": 2, "loss.df_weight": 0.0,
            "data.num_frames": 1}})
        s = loop.setup(cfg, Console(quiet=True))
        loop.train(s, 0, DataPosition())
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in s.params)).hexdigest()
        Path({str(tmp_path)!r}, f"rank{{s.accelerator.process_index}}.txt").write_text(digest)
        s.accelerator.end_training()
    """), encoding="utf-8")
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), str(script)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    digests = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert digests[0] == digests[1]  # gradients were averaged: both replicas took the same steps
    folder = tmp_path / "run" / "checkpoints" / "step-00000002"
    state = ckpt.TrainState(**json.loads((folder / "state.json").read_text()))
    assert state.world_size == 2 and (folder / "rng-0.pt").is_file() and (folder / "rng-1.pt").is_file()
    # Each rank saw its own shard: 2 clips over 2 ranks is one clip per rank per epoch.
    assert (state.epoch, state.position) == (1, 1)


def test_resume_needs_a_checkpoint(workspace: Path) -> None:
    with pytest.raises(InputError, match="no checkpoint"):
        loop.run_training(workspace / "cfg.toml", {"train.output_dir": workspace / "empty"}, "latest", Console(quiet=True))
    with pytest.raises(InputError, match="not a checkpoint folder"):
        loop.run_training(workspace / "cfg.toml", {}, str(workspace), Console(quiet=True))


def test_fp16_on_a_cpu_is_ignored_and_the_user_told(monkeypatch):
    from types import SimpleNamespace

    from rich.console import Console

    from star_cli.train import loop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    console = Console(record=True, width=300)
    cfg = SimpleNamespace(train=SimpleNamespace(mixed_precision="fp16"))
    assert loop._precision(cfg, console) == "no"
    assert "'fp16' is ignored on a CPU" in console.export_text()
    assert loop._precision(SimpleNamespace(train=SimpleNamespace(mixed_precision="bf16")), console) == "bf16"


def test_step_log_prints_whole_lines_first_and_last(monkeypatch):
    from rich.console import Console

    from star_cli.train import loop

    console = Console(record=True, width=40, force_terminal=False)
    log = loop._StepLog(console, total=3, start=0)
    row = dict(loss=0.5, v_loss=0.4, df=0.1, df_low=0.05, df_high=0.05, lr=1e-4, it_per_s=2.0)
    for step in (1, 2, 3):
        log.step(step, row, final=step == 3)
    lines = console.export_text().splitlines()
    assert [line.split()[1] for line in lines] == ["1/3", "3/3"] and all("ETA" in line for line in lines)
