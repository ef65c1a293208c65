"""The vocabulary every part of moenas speaks: archs, spaces, models and their costs."""

from .arch import SCHEMA_VERSION, Arch, LayerArch, LMArch, StackArch, load_arch, load_archs, save_archs
from .errors import UserError
from .space import LMSearchSpace, SearchSpace, StackSpace, load_space, shipped_spaces

__all__ = [
    "SCHEMA_VERSION",
    "Arch",
    "LayerArch",
    "LMArch",
    "StackArch",
    "load_arch",
    "load_archs",
    "save_archs",
    "UserError",
    "SearchSpace",
    "LMSearchSpace",
    "StackSpace",
    "load_space",
    "shipped_spaces",
]
