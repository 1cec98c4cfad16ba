"""mbmpo_jax: Model-Based Meta-Policy Optimization in JAX."""

__version__ = "0.1.0"
