"""Marching cubes: dense grid -> watertight indexed triangle mesh (torch reference + Triton kernels).

Importing this subpackage makes Python bind ``recon.kernels.marching_cubes`` to the module rather than
the function, so the module itself is made callable: both spellings run the op.
"""
import sys
import types

from recon.kernels.marching_cubes.op import marching_cubes

__all__ = ["marching_cubes"]


class _CallableOpModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return marching_cubes(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableOpModule
