"""The application layer: turns what the user gave (a ``.ckpt``, ``.safetensors``, ``.onnx``,
``.engine``, a Triton model name or nothing, meaning the shipped model) into something deployable,
for the CLI and the Python API alike. It sits above the runtime (which never exports) and beside
export/ (whose cache it uses); nothing below it imports it.
"""
