"""Importable helpers for tests (conftest fixtures cannot be imported by name)."""
from __future__ import annotations


def tiny(arch: str = "solov2", backbone: str = "resnet18", num_classes: int = 4):
    from conftest import tiny_config

    return tiny_config(arch, backbone, num_classes)
