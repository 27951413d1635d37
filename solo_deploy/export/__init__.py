"""Export stage: ONNX, TensorRT engines, Triton repositories (heavy imports on use)."""
