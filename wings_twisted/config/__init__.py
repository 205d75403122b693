"""
The daemon configuration: ``config.yml`` turned into frozen dataclasses.
"""

from __future__ import annotations

from .load import *  # noqa: F403 - the package's public names, until the split
from .load import __all__  # noqa: F401
