"""The img2img step rule of diffusers' pipelines (`get_timesteps`), a leaf: config checks it, schedules slice by it."""


def start_index(steps: int, strength: float) -> int:
    """Where an img2img run of `steps` at `strength` enters the full schedule (diffusers' `get_timesteps`)."""
    initial = min(steps * strength, steps)
    return int(max(steps - initial, 0))


def denoising_steps(steps: int, strength: float) -> int:
    """How many steps an img2img run of (steps, strength) takes: 28 x 0.75 -> 21, 28 x 0.4 -> 12."""
    return steps - start_index(steps, strength)
