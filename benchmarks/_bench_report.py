"""gpu_bench.py's records, verdicts and table: a stage's figures, memory against the estimate, the speed ratios."""

from __future__ import annotations

from star_cli.pipeline.estimate import GiB


def stage(per_unit: float, units: int, full_units: float, warmup: float, flops_per_unit: int, peak: float | None) -> dict:
    """A stage's figures: `per_unit` seconds measured over `units`, multiplied out to `full_units`.

    `warmup` is the first unit's time; what it took beyond a steady unit is paid once in the full run.
    """
    tflops = flops_per_unit / per_unit / 1e12 if per_unit > 0 else 0.0
    extra = max(0.0, warmup - per_unit)
    return {
        "per_unit_s": per_unit,
        "measured_units": units,
        "full_units": full_units,
        "warmup_extra_s": extra,
        "full_s": per_unit * full_units + extra,
        "units_per_s": 1 / per_unit if per_unit > 0 else 0.0,
        "tflop_per_unit": flops_per_unit / 1e12,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
    }


def memory(measured: int | None, predicted: int) -> dict:
    return {
        "peak_gib": None if measured is None else measured / GiB,
        "estimate_gib": predicted / GiB,
        "ratio": None if measured is None else measured / predicted,
    }


def speedups(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Per case: reference time / ours (full run and sampling alone); > 1 means ours is faster."""
    done = {(r["case"], r["policy"]): r for r in runs if "error" not in r}
    out = {}
    for case in dict.fromkeys(r["case"] for r in runs):
        ref, ours = done.get((case, "reference")), done.get((case, "ours"))
        if ref and ours:
            out[case] = {
                "total": ref["total_full_s"] / ours["total_full_s"],
                "sampling": ref["sample"]["full_s"] / ours["sample"]["full_s"],
            }
    return out


def _num(value: float | None, spec: str) -> str:
    """`value` formatted, or a right-aligned '-' of the same width when there is none (no CUDA)."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def render_table(result: dict) -> str:
    lines = [
        f"{result['card']} {result['dtype']}: full-run seconds are EXTRAPOLATED from {result['steps_timed']} timed "
        f"model call(s) (first = warm-up) to {result['calls_full']}, and from {result['vae_frames_timed']} VAE frames",
        f"{'case':<6} {'policy':<10} {'stage':<7} {'full s':>8} {'per unit':>10} {'units/s':>9} {'TFLOP/s':>8} "
        f"{'MFU':>6} {'peak GiB':>9} {'est GiB':>8} {'ratio':>6}   (units: f frame, c model call)",
    ]
    for run in result["runs"]:
        if "error" in run:
            lines.append(f"{run['case']:<6} {run['policy']:<10} failed: {run['error']}")
            continue
        for name, unit in (("encode", "frame"), ("sample", "call"), ("decode", "frame")):
            s = run[name]
            lines.append(
                f"{run['case']:<6} {run['policy']:<10} {name:<7} {s['full_s']:8.1f} {s['per_unit_s']:8.3f}s/"
                f"{unit[0]} {s['units_per_s']:9.2f} {s['tflops']:8.3g} {_num(s['mfu'], '6.1%')} "
                f"{_num(s['peak_gib'], '9.2f')} {s['estimate_gib']:8.2f} {_num(s['ratio'], '6.2f')}"
            )
        p = run["peak"]
        lines.append(
            f"{run['case']:<6} {run['policy']:<10} {'total':<7} {run['total_full_s']:8.1f}  tiles {run['tiles']}, "
            f"guidance {'batched' if run['batched_guidance'] else '2 passes'}, UNet forwards/s "
            f"{run['sample']['unet_forwards_per_s']:.2f}, peak {_num(p['peak_gib'], '.2f')} / est "
            f"{p['estimate_gib']:.2f} GiB, host RSS {run['host'].get('peak_rss', 0) / GiB:.1f} GiB"
        )
    for case, ratio in result["speedups"].items():
        lines.append(f"{case}: reference / ours = {ratio['total']:.2f}x end to end, {ratio['sampling']:.2f}x sampling")
    text = result["text"]
    lines.append(f"text encoder {text['seconds']:.3f} s; models built in {result['build_s']:.1f} s")
    return "\n".join(lines)
