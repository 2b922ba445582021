"""thermax: deep variational free energy on JAX."""

__version__ = "0.1.0"
