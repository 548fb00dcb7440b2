"""Upscaling engines. They take and return RGB uint8 frames and know nothing of files or containers."""
