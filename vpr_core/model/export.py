"""ONNX export of the descriptor models, for onnxruntime and TensorRT deployment.

The graph takes ``image`` [B, 3, H, W] float32 (ImageNet-normalised, H x W = the model's
``test_size``; the batch axis is dynamic) and returns, as the model has them,

- ``descriptor`` [B, D] float32, L2-normalised (float and two-branch models);
- ``code`` [B, bits] float32 in {-1, +1} (hashing and two-branch models); pack with
  ``vpr_core.descriptors.pack_codes`` (bit = 1 where the code is +1, MSB first).

The ONNX metadata carries the model fingerprint, the full model config and the preprocessing,
so a deployment can check that its map was built by the same model.

TensorRT on Jetson (JetPack ships ``trtexec``)::

    vpr export-onnx model.safetensors model.onnx
    /usr/src/tensorrt/bin/trtexec --onnx=model.onnx --saveEngine=model.plan --fp16 \\
        --minShapes=image:1x3x322x322 --optShapes=image:1x3x322x322 \\
        --maxShapes=image:8x3x322x322

Build the engine on the Jetson that runs it (engines are tied to the GPU and the TensorRT
version). An fp16 engine's descriptors are close to, not equal to, the float32 ones: build the
map with the same engine that localises, or check recall before mixing them. Cross-image
encoders (SuperVLAD option) mix the images of one call: feed one image per call to keep the
``'single'`` policy of :mod:`vpr_core.extractor`.
"""
from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

from google.protobuf.message import DecodeError
import onnx
import torch
from torch import nn
import torch.nn.functional as F

from vpr_core.config import to_json
from vpr_core.model.checkpoint import model_fingerprint
from vpr_core.model.vpr_model import VPRModel

LOG = logging.getLogger(__name__)
INPUT_NAME = 'image'
DEFAULT_OPSET = 18


class DescriptorGraph(nn.Module):
    """What gets exported: [B, 3, H, W] -> (descriptor [B, D], code [B, bits]) as present."""

    def __init__(self, model: VPRModel) -> None:
        super().__init__()
        self.model = model
        self.output_names = tuple(name for name, size in
                                  (('descriptor', model.out_dim), ('code', model.code_bits))
                                  if size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        floats, signs = self.model.descriptors(image)
        outputs = []
        if floats is not None:
            outputs.append(F.normalize(floats, dim=-1))
        if signs is not None:
            outputs.append(signs.to(torch.float32))
        return tuple(outputs)


def export_onnx(model: VPRModel, path: str | os.PathLike, *,
                input_size: tuple[int, int] | None = None,
                opset: int = DEFAULT_OPSET, example_batch: int = 2) -> Path:
    """Write ``model`` as an ONNX graph with a dynamic batch axis to ``path`` (atomically).

    ``input_size`` (height, width) defaults to the model's ``preprocess.test_size``. Graphs
    over 2 GB (ViT-g) keep their weights in ``path`` + ``.data`` next to it.
    """
    path = Path(path)
    model = model.to('cpu').eval()
    graph = DescriptorGraph(model).eval()
    height, width = input_size or model.config.preprocess.test_size
    program = _torch_export(graph, torch.zeros(example_batch, 3, height, width), opset)
    program.model.metadata_props.update(_metadata(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f'.{path.name}.') as tmp:
        staged = Path(tmp) / path.name
        program.save(staged)
        onnx.checker.check_model(str(staged))
        for part in sorted(Path(tmp).iterdir(), key=lambda p: p == staged):  # graph last
            os.replace(part, path.parent / part.name)
    LOG.info('exported %s (outputs %s, input %dx%d)', path, ', '.join(graph.output_names),
             height, width)
    return path


def onnx_fingerprint(path: str | os.PathLike) -> str | None:
    """The model fingerprint in an exported graph's metadata (None: unreadable or absent)."""
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except (OSError, ValueError, DecodeError) as error:     # missing, truncated, corrupt
        LOG.debug('cannot read ONNX metadata of %s: %s', path, error)
        return None
    return {entry.key: entry.value for entry in graph.metadata_props}.get(
        'vpr_ros.fingerprint')


def _torch_export(graph: DescriptorGraph, example: torch.Tensor, opset: int):
    """The torch.export-based exporter with a symbolic batch axis.

    The TorchScript-based exporter (``dynamo=False``) cannot export the seeds' GeM with a
    dynamic batch: its pooling kernel is the traced feature-map size, which that exporter keeps
    symbolic and then refuses as a non-constant kernel.
    """
    batch = torch.export.Dim('batch', min=1, max=4096)
    quiet = logging.getLogger('torch.onnx._internal.exporter._registration')
    level = quiet.level
    quiet.setLevel(logging.ERROR)      # it warns about every absent torchvision op
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter('ignore', FutureWarning)
            return torch.onnx.export(
                graph, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=list(graph.output_names), opset_version=opset,
                dynamic_shapes={INPUT_NAME: {0: batch}}, verbose=False)
    finally:
        quiet.setLevel(level)


def _metadata(model: VPRModel) -> dict[str, str]:
    return {
        'vpr_ros.fingerprint': getattr(model, 'fingerprint', None) or model_fingerprint(model),
        'vpr_ros.model_config': to_json(model.config),
        'vpr_ros.preprocess': to_json(model.config.preprocess),
        'vpr_ros.descriptor_dim': str(int(model.out_dim)),
        'vpr_ros.code_bits': str(int(model.code_bits)),
    }
