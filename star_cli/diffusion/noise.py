"""Noise sources: the VAE posterior draws, the start noise and the SDE solver's increments.

Everything random in restoring one window goes through a `NoiseSource`, the one seam
where randomness enters: `SeededNoise` (what runs) draws from (seed, window), and
`RecordedNoise` replays the tensors a recorded run drew (e.g. the reference's, to check
every stage against it), so a replay runs the very code a real run does.

Every seeded draw of a window is derived from `(seed, window index)` alone, so a
window can be re-run (after a crash, or to resume) without replaying the windows
before it, and `--seed` reproduces a whole run on the same device.

The SDE noise comes from a torchsde Brownian tree, as in the reference: the
increment over [sigma_next, sigma] is the same whatever steps were queried before,
so the noise does not depend on the order of evaluation. torchsde's `BrownianTree`
is a `BrownianInterval` with a 45-entry cache: about 55 window-sized latents alive
(2.25 GiB for 104 frames at 976x1728). The same interval with a 4-entry cache draws
identical noise (the cache only saves recomputation) and keeps about 13.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable, Protocol

import numpy as np
import torch
import torchsde

NoiseSampler = Callable[[float, float], torch.Tensor]

BROWNIAN_CACHE = 4
"""Intervals the Brownian tree caches; torchsde's BrownianTree uses 45 (same noise, more memory)."""

BROWNIAN_TOL = 1e-6
_BROWNIAN_DIGITS = 6
"""torchsde quantises the tree's ends and every query time to `tol` (round(t, 6)); we hand it
times already rounded so, which draws the same noise and never trips its `ta >= t0` check (a
float32 sigma_min can lie a hair below its own rounded value)."""

_START_NOISE_STREAM = 0
_BROWNIAN_STREAM = 1
_POSTERIOR_STREAM = 2


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 63-bit seed for the random stream named by `keys` (e.g. window, stream) under `seed`."""
    state = np.random.SeedSequence(entropy=seed, spawn_key=keys).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def start_noise(shape: tuple[int, ...], seed: int, window: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """Standard normal noise (float32) for diffusing a window's LR latent.

    Drawn on the CPU and then moved, so the start is identical on every device.
    """
    generator = torch.Generator("cpu").manual_seed(derive_seed(seed, window, _START_NOISE_STREAM))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


def brownian_noise_sampler(x: torch.Tensor, sigma_min: float, sigma_max: float, seed: int, window: int) -> NoiseSampler:
    """Unit-variance noise for the step sigma -> sigma_next, from a Brownian tree over [sigma_min, sigma_max].

    The tree lives on x's device and dtype: the increments are drawn where they are used.
    """
    tree = torchsde.BrownianInterval(
        t0=round(sigma_min, _BROWNIAN_DIGITS),
        t1=round(sigma_max, _BROWNIAN_DIGITS),
        size=x.shape,
        dtype=x.dtype,
        device=x.device,
        entropy=derive_seed(seed, window, _BROWNIAN_STREAM),
        tol=BROWNIAN_TOL,
        pool_size=24,
        cache_size=BROWNIAN_CACHE,
        halfway_tree=True,
    )

    def sample(sigma: float, sigma_next: float) -> torch.Tensor:
        low, high = sorted((sigma, sigma_next))
        return tree(round(low, _BROWNIAN_DIGITS), round(high, _BROWNIAN_DIGITS)) / (high - low) ** 0.5

    return sample


class NoiseSource(Protocol):
    """Every random draw of one window, in the order the engine asks for them."""

    def posterior(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """Unit normal noise shaped like `like` (its device and dtype) for the VAE posterior of frame `index`."""
        ...

    def start(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        """Unit normal float32 noise that diffuses the window's LR latent to t_max."""
        ...

    def sde(self, x: torch.Tensor, sigma_min: float, sigma_max: float) -> NoiseSampler:
        """The SDE solver's unit-variance noise for steps between `sigma_min` and `sigma_max`."""
        ...


class SeededNoise:
    """The noise of window `window` under `seed`: independent streams derived with `derive_seed`.

    Posterior draws come from one CPU generator in frame order (then moved), so they do
    not depend on the device or on how frames are batched.
    """

    def __init__(self, seed: int, window: int) -> None:
        self.seed, self.window = seed, window
        self._posterior = torch.Generator("cpu").manual_seed(derive_seed(seed, window, _POSTERIOR_STREAM))

    def posterior(self, index: int, like: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(like.shape, generator=self._posterior, dtype=like.dtype)
        return noise.to(like.device)

    def start(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        return start_noise(shape, self.seed, self.window, device=device)

    def sde(self, x: torch.Tensor, sigma_min: float, sigma_max: float) -> NoiseSampler:
        return brownian_noise_sampler(x, sigma_min, sigma_max, self.seed, self.window)


class RecordedNoise:
    """Noise a recorded run drew, handed back where it was drawn.

    `posterior` (F, C, h, w): row k for frame k; `start`: the start noise; `sde`: the
    solver's noise, one tensor per noisy step in step order. Shapes are checked, so a
    replay that asks for other draws than the recording fails instead of drifting.
    """

    def __init__(self, posterior: torch.Tensor, start: torch.Tensor, sde: Sequence[torch.Tensor]) -> None:
        self._posterior, self._start, self._sde = posterior, start, list(sde)

    def posterior(self, index: int, like: torch.Tensor) -> torch.Tensor:
        return _checked(self._posterior[index : index + 1], like.shape, f"posterior noise of frame {index}").to(like)

    def start(self, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
        return _checked(self._start, shape, "start noise").float().to(device)

    def sde(self, x: torch.Tensor, sigma_min: float, sigma_max: float) -> NoiseSampler:
        steps = iter(self._sde)

        def sample(sigma: float, sigma_next: float) -> torch.Tensor:
            noise = next(steps, None)
            if noise is None:
                raise ValueError(f"the recording has only {len(self._sde)} SDE noise tensors")
            return _checked(noise, x.shape, "SDE noise").to(x)

        return sample


def _checked(tensor: torch.Tensor, shape: Sequence[int], what: str) -> torch.Tensor:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"recorded {what} is {tuple(tensor.shape)}, the run needs {tuple(shape)}")
    return tensor
