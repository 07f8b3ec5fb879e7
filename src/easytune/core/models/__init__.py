"""Generator networks: the motion VAE and latent denoiser of MLD, and the frame denoiser of MDM.

Each model has a dataclass config with a ``preset`` field (``tiny`` for tests, ``cpu`` the default, ``paper`` the
published sizes) whose ``None`` fields are filled from the model's ``PRESETS`` table; explicit values override.
"""
