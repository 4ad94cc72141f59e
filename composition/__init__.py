"""Mosaic's composition library: experts, strategies, merging, contribution measurement, evaluation.

Pure Python/torch. Imports nothing from Django or the rest of the project."""
