"""Bijections: invertible maps with exact log-Jacobians, the layers of normalizing flows."""

from ._base import AbstractBijection

__all__ = ["AbstractBijection"]
