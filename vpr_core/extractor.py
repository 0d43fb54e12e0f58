"""From RGB uint8 images to :class:`Descriptors`: preprocessing, batching, device, fp16.

Cross-image encoders (SuperVLAD's optional encoder) attend across the images of a batch, so
a descriptor depends on which other images share its forward pass. The extractor therefore
never lets batching decide that; ``crossimage_policy`` fixes it:

- ``'single'`` (default): every image is its own sequence of length one. A descriptor depends
  on its image only, whatever the batch size, the order, or which frames arrive together on
  the robot. Map and query descriptors are computed the same way.
- ``'fixed_batch'``: the papers' test protocol: consecutive groups of
  ``preprocess.infer_batch_size`` images in input order (the last group may be shorter), one
  forward pass per group. Use it to reproduce published numbers on a fixed, ordered list of
  files; the result depends on that order.

Models without a cross-image encoder ignore the policy: any batching gives the same result.

``backend`` picks what runs the forward pass (:mod:`vpr_core.backends`): ``torch``
(default), ``onnxruntime``, ``tensorrt`` (CUDA) or ``auto``. The descriptors agree across
backends to float rounding, so the model ``fingerprint`` stays the compatibility key;
:attr:`Extractor.backend` names the one in use for manifests and diagnostics.
"""
from __future__ import annotations

import gc
import logging
import os
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
import torch
from tqdm import tqdm

from vpr_core.backends import create_backend, TorchBackend
from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.devices import select_device
from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import default_model_path, load_model, model_fingerprint
from vpr_core.model.config import ModelConfig
from vpr_core.model.vpr_model import VPRModel
from vpr_core.preprocess import preprocess_batch

LOG = logging.getLogger(__name__)
CrossImagePolicy = Literal['single', 'fixed_batch']
CROSSIMAGE_POLICIES = ('single', 'fixed_batch')


class Extractor:
    """Computes global descriptors of RGB images with one model on one device.

    ``fp16`` None: fp16 on CUDA (torch autocast or a TensorRT fp16 engine), float32 on CPU.
    ``batch_size``
    bounds how many images share a forward pass (memory), never what a descriptor is.
    ``backend``: ``torch``, ``onnxruntime``, ``tensorrt`` or ``auto`` (:mod:`vpr_core.backends`);
    ``onnx_cache`` overrides where the ONNX graph is cached.
    """

    def __init__(self, model: VPRModel, *, device: str | torch.device = 'auto',
                 batch_size: int = 16, fp16: bool | None = None, progress: bool = False,
                 crossimage_policy: CrossImagePolicy = 'single', backend: str = 'torch',
                 onnx_cache: str | os.PathLike | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f'batch_size must be >= 1, got {batch_size}')
        if crossimage_policy not in CROSSIMAGE_POLICIES:
            raise ConfigError(f'unknown crossimage_policy {crossimage_policy!r}; valid: '
                              f'{", ".join(CROSSIMAGE_POLICIES)}')
        self.device = select_device(device)
        self.requested_backend = backend    # as asked ('auto' unresolved), for other devices
        self._fingerprint: str | None = getattr(model, 'fingerprint', None)
        self._backend = create_backend(backend, model.eval(), self.device, fp16=fp16,
                                       cache=onnx_cache)
        self.model = model
        torch_backend = isinstance(self._backend, TorchBackend)
        self.fp16 = bool(getattr(self._backend, 'fp16', False))
        # onnxruntime takes host arrays: preprocess where its input lives
        self._input_device = self.device if torch_backend else torch.device('cpu')
        self.batch_size = int(batch_size)
        self.progress = progress
        self.crossimage_policy = crossimage_policy
        self.weights_path: Path | None = None     # the checkpoint, when loaded from one

    @classmethod
    def from_weights(cls, path: str | os.PathLike | None = None, **kwargs) -> 'Extractor':
        """Extractor over one of our ``.safetensors`` checkpoints (None: the default model).

        When another backend than torch runs it (onnxruntime, TensorRT: they hold their own
        copy of the weights), the torch weights are dropped: :attr:`model` keeps its config,
        dimensions and fingerprint on the ``meta`` device, and :attr:`weights_path` names the
        checkpoint (a ViT-B would otherwise be held twice, 350 MB more on a robot).
        """
        path = Path(default_model_path() if path is None else path).resolve()
        extractor = cls(load_model(path), **kwargs)
        extractor.weights_path = path
        if extractor.backend != 'torch':
            extractor._fingerprint = extractor.fingerprint    # while the weights exist
            extractor.model.to('meta')
            gc.collect()
        return extractor

    @property
    def holds_weights(self) -> bool:
        """False when :meth:`from_weights` dropped the torch weights (another backend runs)."""
        return not any(p.is_meta for p in self.model.parameters())

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def descriptor_dim(self) -> int:
        """Float descriptor dimension (0 for a hashing-only model)."""
        return int(self.model.out_dim)

    @property
    def code_bits(self) -> int:
        """Binary code length in bits (0 without a hashing branch)."""
        return int(self.model.code_bits)

    @property
    def fingerprint(self) -> str:
        """sha256 of architecture + weights, as written in our checkpoints (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint

    @property
    def backend(self) -> str:
        """The inference backend in use: ``torch``, ``onnxruntime`` or ``tensorrt`` (``auto``
        resolved)."""
        return self._backend.name

    @property
    def batch_dependent(self) -> bool:
        """True when the model mixes information across the images of a forward pass."""
        return bool(getattr(self.model, 'batch_dependent', False))

    def extract(self, images: Sequence[np.ndarray]) -> Descriptors:
        """N RGB uint8 images [H, W, 3] (any sizes) -> Descriptors of N rows, input order."""
        floats, codes = self._allocate(len(images))
        bar = tqdm(total=len(images), unit='img', desc='descriptors', disable=not self.progress)
        with bar:
            for start, stop in self._groups(len(images)):
                batch = preprocess_batch(images[start:stop], self.model.config.preprocess,
                                         device=self._input_device)
                self._store(batch, floats, codes, start)
                bar.update(stop - start)
        return Descriptors(floats, codes)

    def extract_tensor(self, batch: torch.Tensor) -> Descriptors:
        """Already preprocessed [N, 3, H, W] ImageNet-normalised images -> Descriptors."""
        floats, codes = self._allocate(int(batch.shape[0]))
        for start, stop in self._groups(int(batch.shape[0])):
            self._store(batch[start:stop], floats, codes, start)
        return Descriptors(floats, codes)

    def _groups(self, count: int) -> Iterator[tuple[int, int]]:
        size = self.batch_size
        if self.batch_dependent:
            size = 1 if self.crossimage_policy == 'single' else \
                self.model.config.preprocess.infer_batch_size
        for start in range(0, count, size):
            yield start, min(start + size, count)

    def _allocate(self, count: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        floats = np.empty((count, self.descriptor_dim), np.float32) \
            if self.descriptor_dim else None
        codes = np.empty((count, self.code_bits // 8), np.uint8) if self.code_bits else None
        return floats, codes

    def _store(self, batch: torch.Tensor, floats: np.ndarray | None, codes: np.ndarray | None,
               start: int) -> None:
        values, signs = self._backend.run(batch)
        stop = start + int(batch.shape[0])
        if floats is not None:
            floats[start:stop] = values
        if codes is not None:
            codes[start:stop] = pack_codes(signs)


def describe(images: Sequence[np.ndarray], *, weights: str | os.PathLike | None = None,
             model: VPRModel | None = None, device: str | torch.device = 'auto',
             backend: str = 'torch') -> Descriptors:
    """One-call descriptors of RGB uint8 images with ``model`` or the checkpoint ``weights``.

    Neither given: the bundled default model. Loads the model on every call; keep an
    :class:`Extractor` for repeated use.
    """
    if model is not None and weights is not None:
        raise ConfigError('describe() takes weights= or model=, not both')
    extractor = Extractor(model, device=device, backend=backend) if model is not None else \
        Extractor.from_weights(weights, device=device, backend=backend)
    return extractor.extract(images)
