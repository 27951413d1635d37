"""Importable helpers for tests (conftest fixtures cannot be imported by name)."""
from __future__ import annotations


def tiny(arch: str = "solov2", backbone: str = "resnet18", num_classes: int = 4):
    from conftest import tiny_config

    return tiny_config(arch, backbone, num_classes)


def count_frames(path) -> int:
    """Frames OpenCV decodes from the video at ``path`` (0 if it cannot open it)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n
