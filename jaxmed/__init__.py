"""jaxmed: fast JAX/Flax transfer learning for small medical image datasets."""

from jaxmed.runtime import platform as _platform

_platform.configure_xla_flags()

__version__ = "0.1.0"
