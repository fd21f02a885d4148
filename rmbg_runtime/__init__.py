"""Slim runtime: numpy and Pillow only; backends are optional extras."""
