"""`star train`: fine-tune STAR's ControlNet and LIEM gates with accelerate.

One process per device (`accelerate launch -m star_cli train --config cfg.toml`, DDP;
FSDP is refused until checkpoints gather sharded optimizer/EMA state); every process
reads its own shard of the clips. A step: encode GT and LQ with the frozen VAE, draw t ~ U{0..999} and noise
from a per-process generator, predict v, decode the x0 estimate with gradient for
the DF term (`losses`), back-propagate, clip, step AdamW and the LR schedule, update
the EMA. Every random draw comes from state that checkpoints save, so `--resume`
continues a run exactly.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from star_cli.atomic import atomic_output
from star_cli.diffusion.noise import derive_seed
from star_cli.diffusion.schedule import NUM_TIMESTEPS, q_sample, v_to_x0, x0_eps_to_v
from star_cli.errors import InputError, StarError
from star_cli.hub.layout import check_weights_dir, resolve_weights_dir
from star_cli.report import LOG_INTERVAL, clock_text
from star_cli.models.text import TextEncoder
from star_cli.models.vae import VideoVAE
from star_cli.terminal import message
from star_cli.train import checkpoint as ckpt
from star_cli.train.config import Config
from star_cli.train.config_file import load_config
from star_cli.train.data import ClipDataset, ClipSampler, DataPosition, make_loader, scan_sources
from star_cli.train.losses import LossTerms, decode_with_grad, training_loss
from star_cli.train.rundir import LOGS, METRICS_CSV, check_output_dir, clear_run
from star_cli.train.validate import ValidationClip, validation_clip, write_validation

METRICS = ("step", "loss", "v_loss", "df", "df_low", "df_high", "grad_norm", "lr", "it_per_s")
_TEXT_BATCH = 16


@dataclass
class Session:
    """Everything a run holds; built once by `setup`."""

    cfg: Config
    accelerator: Accelerator
    model: torch.nn.Module
    vae: VideoVAE
    contexts: dict[str, torch.Tensor]
    trainable: list[str]
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: EMAModel | None
    generator: torch.Generator
    dataset: ClipDataset
    weight_dtype: torch.dtype
    validation: ValidationClip | None
    console: Console
    reported: set[str] = field(default_factory=set)


# ----------------------------------------------------------------------------- setup


def _precision(cfg: Config, console: Console) -> str:
    """The mixed precision to run: fp16 has no autocast on a CPU, so there it is ignored, and the user told."""
    precision = cfg.train.mixed_precision
    accelerated = torch.cuda.is_available() or (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if precision == "fp16" and not accelerated:
        console.print("[yellow]note:[/] train.mixed_precision = 'fp16' is ignored on a CPU (no fp16 autocast there): "
                      "training in fp32; 'bf16' gives mixed precision on a CPU", highlight=False)
        return "no"
    return precision


def _accelerator(cfg: Config, console: Console) -> Accelerator:
    trackers = ["tensorboard"] if cfg.log.tensorboard and importlib.util.find_spec("tensorboard") else None
    try:
        accelerator = Accelerator(
            mixed_precision=_precision(cfg, console),
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            log_with=trackers,
            project_config=ProjectConfiguration(project_dir=str(cfg.train.output_dir),
                                                logging_dir=str(cfg.train.output_dir / LOGS)),
        )
    except ValueError as error:
        raise InputError(f"train.mixed_precision={cfg.train.mixed_precision!r}: {error}") from None
    if accelerator.distributed_type == DistributedType.FSDP:
        # Checkpoints hold rank 0's optimizer and EMA state, which under FSDP is one shard only.
        raise InputError("FSDP is not supported by star train's checkpoints yet; launch with DDP (--multi_gpu)")
    return accelerator


def _weight_dtype(accelerator: Accelerator) -> torch.dtype:
    """Frozen helpers (VAE, text tower) run in the mixed-precision dtype, as in the reference."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def _caption_contexts(encoder: TextEncoder, captions: list[str]) -> dict[str, torch.Tensor]:
    """Each distinct caption's (77, dim) context, computed once by the frozen text tower, kept on the CPU."""
    unique = sorted(set(captions) | {""})
    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(unique), _TEXT_BATCH):
        chunk = unique[start:start + _TEXT_BATCH]
        out.update(zip(chunk, encoder.encode(chunk).cpu()))
    return out


def _optimizer(cfg: Config, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    opt = cfg.optim
    cls = torch.optim.AdamW
    if opt.use_8bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise InputError("optim.use_8bit needs bitsandbytes (pip install bitsandbytes), or set it to false")
        import bitsandbytes

        cls = bitsandbytes.optim.AdamW8bit
    return cls(params, lr=opt.lr, betas=opt.betas, weight_decay=opt.weight_decay, eps=opt.eps)


def setup(cfg: Config, console: Console) -> Session:
    accelerator = _accelerator(cfg, console)
    device, dtype = accelerator.device, _weight_dtype(accelerator)
    # Global RNGs drive dropout (the UNet trains with the reference's p=0.1) and fresh LIEM
    # initialisation; checkpoints save them with the step generator.
    set_seed(derive_seed(cfg.train.seed, accelerator.process_index, 1) % 2**32)
    sources, problems = scan_sources(cfg.data)
    if accelerator.is_main_process:
        for line in problems:
            console.print(message(line, "left out", "yellow"))
    weights = check_weights_dir(resolve_weights_dir(cfg.model.weights_dir), cfg.model.variant)
    text = TextEncoder.from_dirs(weights.text_encoder_dir, weights.tokenizer_dir, device=device, dtype=dtype)
    contexts = _caption_contexts(text, [source.caption for source in sources])
    validation = validation_clip(cfg, text) if cfg.validation.clip is not None else None
    del text
    vae = VideoVAE.from_dir(weights.vae_dir, device=device, dtype=dtype)
    model, initialised = ckpt.load_initial_model(cfg.model.init_from or weights.star, device=device)
    if initialised and accelerator.is_main_process:
        console.print(message(f"initialised {len(initialised)} LIEM tensors the checkpoint lacks: {', '.join(initialised)}"))
    factor = vae.spatial_factor
    try:
        model.check_latent_size(cfg.data.crop_height // factor, cfg.data.crop_width // factor)
    except ValueError as error:
        raise InputError(f"data.crop_height x data.crop_width = {cfg.data.crop_height}x{cfg.data.crop_width}: "
                         f"{error} (latents are 1/{factor} of the crop)") from None
    model.train()
    model.enable_gradient_checkpointing(cfg.model.gradient_checkpointing)
    trainable = ckpt.select_trainable(model)
    named = dict(model.named_parameters())
    params = [named[name] for name in trainable]
    optimizer = _optimizer(cfg, params)
    scheduler = get_scheduler(cfg.optim.scheduler, optimizer=optimizer, num_warmup_steps=cfg.optim.warmup_steps,
                              num_training_steps=cfg.train.max_steps)
    ema = EMAModel(params, decay=cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    model, optimizer = accelerator.prepare(model, optimizer)
    generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.train.seed, accelerator.process_index))
    return Session(cfg, accelerator, model, vae, contexts, trainable, params, optimizer, scheduler, ema, generator,
                   ClipDataset(sources, cfg.data, cfg.train.seed), dtype, validation, console)


# ----------------------------------------------------------------------------- one step


def compute_loss(s: Session, batch: dict[str, object]) -> LossTerms:
    device = s.accelerator.device
    gt = batch["gt"].to(device, s.weight_dtype)
    z0 = s.vae.encode_videos(gt, s.generator)
    hint = s.vae.encode_videos(batch["lq"].to(device, s.weight_dtype), s.generator)
    y = torch.stack([s.contexts[c] for c in batch["caption"]]).to(device)
    t = torch.randint(0, NUM_TIMESTEPS, (z0.shape[0],), generator=s.generator, device=device)
    noise = torch.randn(z0.shape, generator=s.generator, device=device)
    x_t = q_sample(z0, t, noise)
    with s.accelerator.autocast():
        v_pred = s.model(x_t, t, y, hint)
        pixels = None
        if s.cfg.loss.df_weight > 0:
            pixels = decode_with_grad(s.vae, v_to_x0(v_pred.float(), x_t, t), s.cfg.loss.decode_chunk)
    return training_loss(v_pred, x0_eps_to_v(z0, noise, t), t, s.cfg.loss, pixels, gt.float())


# ----------------------------------------------------------------------------- state on disk


def _inference_state(s: Session) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(raw state, state to export): the export carries the EMA weights when there is an EMA."""
    raw = s.accelerator.get_state_dict(s.model)
    export = dict(raw)
    if s.ema is not None:
        export.update(zip(s.trainable, (p.detach() for p in s.ema.shadow_params)))
    return raw, export


def save_checkpoint(s: Session, step: int, position: DataPosition) -> Path:
    acc, out = s.accelerator, s.cfg.train.output_dir
    raw, export = _inference_state(s)
    tmp = ckpt.staging_dir(out, step)
    if acc.is_main_process:
        ckpt.reset_dir(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.write_checkpoint(
            tmp, full_state=raw, export=export, trainable=s.trainable,
            model_config=acc.unwrap_model(s.model).config.to_dict(), optimizer=s.optimizer.state_dict(),
            scheduler=s.scheduler.state_dict(), ema=s.ema.state_dict() if s.ema is not None else None,
            state=ckpt.TrainState(step, position.epoch, position.position, acc.num_processes),
        )
    ckpt.write_rng(tmp, acc.process_index, s.generator)
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.publish(tmp, out, step, s.cfg.checkpoint.keep)
    acc.wait_for_everyone()
    return ckpt.checkpoint_dir(out, step)


def resume_from(s: Session, folder: Path) -> tuple[int, DataPosition]:
    loaded = ckpt.read_checkpoint(folder, s.accelerator.process_index, s.accelerator.num_processes)
    absent = [name for name in s.trainable if name not in loaded.trainable]
    if absent:
        raise StarError(f"{folder}: the checkpoint lacks trainable tensor {absent[0]}")
    with torch.no_grad():
        for name, param in zip(s.trainable, s.params):
            param.copy_(loaded.trainable[name])
    s.optimizer.load_state_dict(loaded.optimizer)
    s.scheduler.load_state_dict(loaded.scheduler)
    if s.ema is not None and loaded.ema is not None:
        s.ema.load_state_dict(loaded.ema)
    ckpt.restore_rng(loaded.rng, s.generator)
    return loaded.state.step, loaded.position


# ----------------------------------------------------------------------------- monitoring


def open_metrics(path: Path, resumed_step: int) -> tuple[object, csv.DictWriter]:
    """metrics.csv for appending; rows past a resumed step (a run that went on) are dropped first."""
    rows = []
    if path.is_file() and resumed_step:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resumed_step]
    handle = path.open("w", newline="", encoding="utf-8")
    writer = csv.DictWriter(handle, fieldnames=METRICS)
    writer.writeheader()
    writer.writerows(rows)
    return handle, writer


def _check_finite(grad_norm: torch.Tensor | None, step: int, precision: str) -> None:
    """Stop on NaN/inf gradients; fp16 is exempt, its loss scaler skips such steps by design."""
    if grad_norm is not None and precision != "fp16" and not torch.isfinite(grad_norm):
        raise StarError(f"step {step}: the gradients are not finite (NaN/inf); lower optim.lr, or use "
                        f"train.mixed_precision = 'no' (now {precision!r})")


def _report_skipped(s: Session, lines: list[str]) -> None:
    for line in lines:
        if line not in s.reported:
            s.reported.add(line)
            s.console.print(message(line, "skipped", "yellow"))


def _summary(row: dict[str, float]) -> str:
    return (f"loss {row['loss']:.4f} (v {row['v_loss']:.4f}, df {row['df']:.4f}: low {row['df_low']:.3f} "
            f"high {row['df_high']:.3f})  lr {row['lr']:.2e}  {row['it_per_s']:.2f} it/s")


class _StepLog:
    """Plain progress lines for a log: the first step, then every LOG_INTERVAL seconds, and the last."""

    def __init__(self, console: Console, total: int, start: int) -> None:
        self.console, self.total, self.start = console, total, start
        self.began = self.last = time.monotonic()

    def step(self, step: int, row: dict[str, float], *, final: bool) -> None:
        now = time.monotonic()
        if not (final or step == self.start + 1 or now - self.last >= LOG_INTERVAL):
            return
        self.last = now
        elapsed = now - self.began
        eta = elapsed / (step - self.start) * (self.total - step)
        self.console.print(f"step {step}/{self.total}  {_summary(row)}  elapsed {clock_text(elapsed)}, ETA {clock_text(eta)}",
                           highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- the run


def train(s: Session, step: int, position: DataPosition) -> Path:
    """Run from `step` (< train.max_steps) to train.max_steps; return the final checkpoint folder."""
    acc, cfg = s.accelerator, s.cfg
    main = acc.is_main_process
    sampler = ClipSampler(len(s.dataset), cfg.train.seed, acc.process_index, acc.num_processes, position)
    batches = iter(make_loader(s.dataset, sampler, cfg.train.batch_size, cfg.data.num_workers))
    cfg.train.output_dir.mkdir(parents=True, exist_ok=True)
    handle, metrics = open_metrics(cfg.train.output_dir / METRICS_CSV, step) if main else (None, None)
    if acc.log_with:
        acc.init_trackers("star-train")
    columns = (TextColumn("step"), MofNCompleteColumn(), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[info]}"))
    live = s.console.is_terminal  # a log gets whole plain lines instead of a bar cut to the console's width
    log = _StepLog(s.console, cfg.train.max_steps, step) if main and not live else None
    try:
        with Progress(*columns, console=s.console, disable=not (main and live), transient=False) as progress:
            task = progress.add_task("train", total=cfg.train.max_steps, completed=step, info="")
            sums, micro, started = torch.zeros(5), 0, time.perf_counter()
            while step < cfg.train.max_steps:
                batch = next(batches)
                _report_skipped(s, batch["skipped"])
                with acc.accumulate(s.model):
                    terms = compute_loss(s, batch)
                    acc.backward(terms.total)
                    grad_norm = acc.clip_grad_norm_(s.params, cfg.optim.max_grad_norm) if acc.sync_gradients else None
                    _check_finite(grad_norm, step + 1, acc.mixed_precision)
                    s.optimizer.step()
                    s.optimizer.zero_grad(set_to_none=True)
                sums += torch.stack([terms.total.detach().float().cpu(), terms.v.cpu(), terms.df.cpu(),
                                     terms.low.cpu(), terms.high.cpu()])
                micro += 1
                if not acc.sync_gradients:
                    continue
                s.scheduler.step()
                if s.ema is not None:
                    s.ema.step(s.params)
                step, position = step + 1, batch["next"]
                elapsed = time.perf_counter() - started
                means = (sums / micro).tolist()
                row = dict(zip(METRICS, [step, *means, float(grad_norm), s.scheduler.get_last_lr()[0], 1 / elapsed]))
                sums, micro, started = torch.zeros(5), 0, time.perf_counter()
                progress.update(task, completed=step, info=_summary(row))
                if log is not None:
                    log.step(step, row, final=step == cfg.train.max_steps)
                if step % cfg.log.every == 0 or step == cfg.train.max_steps:
                    if metrics is not None:
                        metrics.writerow(row)
                        handle.flush()
                    if acc.log_with:
                        acc.log({k: v for k, v in row.items() if k != "step"}, step=step)
                if step % cfg.checkpoint.every == 0 or step == cfg.train.max_steps:
                    save_checkpoint(s, step, position)
                if s.validation is not None and step % cfg.validation.every == 0:
                    if main:
                        write_validation(s, step)
                    acc.wait_for_everyone()
    finally:
        if handle is not None:
            handle.close()
    return ckpt.checkpoint_dir(cfg.train.output_dir, cfg.train.max_steps)


def run_training(config_path: Path, overrides: dict[str, object], resume: str | None, console: Console, *,
                 overwrite: bool = False) -> Path:
    """`star train`: returns the trained UNet + ControlNet weights (`<output_dir>/unet.safetensors`),
    a file `star upscale --checkpoint PATH` loads.

    An output folder holding another run is refused before anything loads (see `rundir`);
    `overwrite` deletes that run's files, but only once the models have loaded and the
    checkpoint to resume (if any) has been read, so a run that cannot start loses nothing.
    """
    cfg = load_config(config_path, overrides)
    check_output_dir(cfg.train.output_dir, resume, overwrite)
    folder = ckpt.find_checkpoint(cfg.train.output_dir, resume) if resume else None
    s = setup(cfg, console)
    step, position = resume_from(s, folder) if folder else (0, DataPosition())
    if step >= cfg.train.max_steps:
        raise InputError(f"the checkpoint is at step {step}, not before train.max_steps={cfg.train.max_steps}")
    if overwrite:
        if s.accelerator.is_main_process:
            clear_run(cfg.train.output_dir)
        s.accelerator.wait_for_everyone()
    result = cfg.train.output_dir / ckpt.EXPORT_NAME
    try:
        last = train(s, step, position)
        if s.accelerator.is_main_process:
            with atomic_output(result) as tmp:
                shutil.copyfile(last / ckpt.EXPORT_NAME, tmp)
            console.print(message(f"trained weights: {result}"))
        s.accelerator.wait_for_everyone()
    finally:
        s.accelerator.end_training()  # closes trackers and the process group
    return result
