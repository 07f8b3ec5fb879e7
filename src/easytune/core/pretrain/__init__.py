"""Pretraining of the base generators: the generic resumable training loop, the VAE / MLD / MDM runs and MotionLCM distillation."""
