"""Offline generation of support images: prompts, Stable Diffusion synthesis with attention capture, masks."""
