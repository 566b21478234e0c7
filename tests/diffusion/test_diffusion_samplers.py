"""The schedulers step unbounded latents exactly as their equations say.

The model's scheduler config is PNDM's; the other schedulers are built from it
and must not pick up pixel-space defaults (DDIM's ``clip_sample``) that bound
the latents, which reach |x| of several tens.
"""

import numpy as np
import pytest
import torch

from napari_stainfuser.diffusion import load_configs, make_sampler

CONFIG = load_configs().scheduler  # the published model's (the fixture's is identical)


def alphas_cumprod() -> np.ndarray:
    """ᾱ_t of the "scaled_linear" schedule, computed here in float64."""
    n = CONFIG["num_train_timesteps"]
    betas = np.linspace(CONFIG["beta_start"] ** 0.5, CONFIG["beta_end"] ** 0.5, n) ** 2
    return np.cumprod(1.0 - betas)


def ddim_step(x_t, eps, a_t, a_prev):
    """Deterministic DDIM (eta = 0), Song et al. 2021 eq. 12."""
    x0 = (x_t - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t)
    return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps


@pytest.mark.parametrize("index", [0, 9])  # the first step, and the last (to t = 0)
def test_ddim_step_matches_the_closed_form_on_large_latents(index):
    steps = 10
    scheduler = make_sampler("ddim", CONFIG)
    scheduler.set_timesteps(steps)
    # "leading" spacing with steps_offset 1, as PNDM (the reference) uses.
    expected_t = [901 - 100 * i for i in range(steps)]
    assert scheduler.timesteps.tolist() == expected_t
    t = expected_t[index]
    gen = torch.Generator().manual_seed(0)
    x_t = 20 * torch.randn((2, 4, 8, 8), generator=gen, dtype=torch.float64)
    eps = torch.randn((2, 4, 8, 8), generator=gen, dtype=torch.float64)
    ac = alphas_cumprod()
    # set_alpha_to_one=False: the step past t = 1 lands on ᾱ_0, not on 1.
    a_prev = ac[t - 100] if t - 100 >= 0 else ac[0]
    want = ddim_step(x_t.numpy(), eps.numpy(), ac[t], a_prev)
    assert np.abs(want).max() > 5  # far outside [-1, 1]: clipping would show
    got = scheduler.step(eps.float(), t, x_t.float(), return_dict=False)[0]
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["pndm", "ddim", "dpm++", "euler"])
def test_scheduler_runs_are_linear_in_their_inputs(name):
    """For an epsilon model each update is linear in (x_t, eps), so scaling the
    start and every eps by c scales the result by c. Any clipping or
    thresholding of the sample breaks this at c = 30."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((1, 4, 8, 8), generator=gen)
    eps_seq = [torch.randn((1, 4, 8, 8), generator=gen) for _ in range(12)]

    def run(c: float) -> torch.Tensor:
        scheduler = make_sampler(name, CONFIG)
        scheduler.set_timesteps(5)
        latents = c * x * scheduler.init_noise_sigma
        for i, t in enumerate(scheduler.timesteps):
            scheduler.scale_model_input(latents, t)  # Euler keeps state here
            latents = scheduler.step(c * eps_seq[i], t, latents, return_dict=False)[0]
        return latents

    small, large = run(1.0), run(30.0)
    assert large.abs().max() > 30
    torch.testing.assert_close(large, 30 * small, rtol=1e-4, atol=1e-4)


def test_sampling_schedulers_inherit_the_model_schedule():
    for name in ("pndm", "ddim", "dpm++", "euler"):
        cfg = make_sampler(name, CONFIG).config
        for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps"):
            assert cfg[key] == CONFIG[key], (name, key)
        assert cfg["timestep_spacing"] == "leading" and cfg["steps_offset"] == 1, name
    assert make_sampler("dpm++", CONFIG).config["algorithm_type"] == "dpmsolver++"


def test_the_one_list_of_sampler_names_is_the_samplers_the_model_has():
    from napari_stainfuser.diffusion.sampling import SAMPLERS
    from napari_stainfuser.methods import SAMPLER_ALIASES
    from napari_stainfuser.methods import SAMPLERS as NAMES

    assert tuple(SAMPLERS) == NAMES
    assert set(SAMPLER_ALIASES.values()) <= set(NAMES)
