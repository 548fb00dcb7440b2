"""Temporal coherence: optical flow between input frames, warped priors with confidence, scene cuts."""
