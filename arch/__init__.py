"""The vocabulary every part of moenas speaks: archs, spaces, models and their costs."""
from .arch import SCHEMA_VERSION, Arch, LayerArch, StackArch, load_arch, load_archs, save_archs
from .errors import UserError
from .space import SearchSpace, StackSpace, shipped_spaces

__all__ = [
    "SCHEMA_VERSION", "Arch", "LayerArch", "StackArch", "load_arch", "load_archs", "save_archs",
    "UserError", "SearchSpace", "StackSpace", "shipped_spaces",
]
