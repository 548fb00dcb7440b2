"""The two-stage FLUX engine (`engine.FluxEngine`): components, memory plan, schedules, the sampler, tiles, caches,
noise, propagation. Nothing is imported here: the registry imports the engine on use, so SR runs never pay for
diffusers and torch.compile's machinery."""
