"""Data stage: the built-in synthetic data set, a COCO-format loader and training transforms.

Importing this package loads only numpy; OpenCV, pycocotools and torch load with the
submodules that need them (``solo_deploy.data.synthetic``, ``.coco``, ``.transforms``).
"""
from __future__ import annotations

from .sample import Sample

__all__ = ["Sample"]
