"""The one vocabulary of array annotations used across thermax.

Dimension names: ``batch`` (samples), ``n`` (sites or particles), ``dim`` (space
dimension), ``*shape`` (the configuration shape of a system), ``channels``.
"""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = Float[ArrayLike, ""]
Configuration: TypeAlias = Float[Array, "*shape"]
Key: TypeAlias = PRNGKeyArray

__all__ = ["Array", "Configuration", "Key", "Scalar", "ScalarLike"]
