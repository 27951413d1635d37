"""`solo-deploy import`: SOLO / SOLOv2 / decoupled SOLO checkpoints trained elsewhere -> solo-deploy model files.

``checkpoint`` reads a foreign checkpoint safely (``weights_only`` with an allow-list of plain
metadata types); ``config_text`` reads the config text mmdetection stores in a checkpoint as
data (never executed); ``legacy`` recognises the source format and renames WXinlong/SOLO and
AdelaiDet state dicts to mmdetection 3.x names; ``infer`` works out the architecture from the
tensors; ``importer`` puts it together and writes the model file.
"""
