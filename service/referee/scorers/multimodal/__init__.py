"""Multimodal scorers: image-text and image-image rewards (CLIP-style) and the image
decoding and limits they share. Kinds here are registered in ``scorers/_registry.py``."""
