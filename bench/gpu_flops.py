"""FLOPs per image of a model configuration and the peak FLOP/s of known GPUs, for
``bench/gpu.py``'s fraction of peak.

FLOPs are counted from the architecture itself: the model is built on torch's ``meta`` device
(shapes only, no memory, no weights) and one forward pass runs under
``torch.utils.flop_counter.FlopCounterMode``, which adds 2 x M x N x K for every matrix
product and convolution (attention's two products included; element-wise work, norms and
softmax not counted, as vendor peaks count multiply-adds only).

Peaks are the vendors' dense figures (no 2:4 sparsity), in TFLOP/s: ``fp32`` is the CUDA
cores' float32 rate (TF32 tensor cores off, as ``bench/gpu.py`` runs float32), ``fp16`` the
tensor cores' fp16 rate with float32 accumulation. Sources: NVIDIA's data sheets (H100 SXM and
PCIe, H100 NVL, H200 SXM and NVL, A100, L4, L40S, A10) and the Jetson AGX Orin technical
brief (GPU: 5.3 FP32 TFLOP/s, 170 sparse INT8 TOPS for the 64 GB module, so 42.5 dense fp16;
the 32 GB module 3.33 and 108). Jetson modules all report the name ``Orin``: the two AGX
modules are told apart by their SM count (16 and 14); other Orin modules (NX, Nano) are not
in the table. An unknown GPU has no peak: the bench then prints no fraction unless
``--peak-tflops FP32,FP16`` is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from vpr_core.model.architecture import build_model
from vpr_core.model.config import ModelConfig


@dataclass(frozen=True)
class GpuPeak:
    """Dense peak TFLOP/s of one GPU model: ``label``, float32 (CUDA cores), fp16 (tensor)."""

    label: str
    fp32: float
    fp16: float

    def of(self, precision: str) -> float:
        """Peak FLOP/s (not tera) for ``fp32`` or ``fp16``."""
        return 1e12 * (self.fp16 if precision == 'fp16' else self.fp32)


# (words that must all be in the lower-cased device name, SM count or None, peak);
# the first match wins, so the more specific names come first
PEAKS: tuple[tuple[tuple[str, ...], int | None, GpuPeak], ...] = (
    (('h100', 'nvl'), None, GpuPeak('H100 NVL', 60.0, 835.0)),
    (('h100', 'pcie'), None, GpuPeak('H100 PCIe', 51.2, 756.0)),
    (('h200', 'nvl'), None, GpuPeak('H200 NVL', 60.0, 835.0)),
    (('h200',), None, GpuPeak('H200 SXM', 66.9, 989.4)),
    (('gh200',), None, GpuPeak('GH200', 66.9, 989.4)),
    (('h100',), None, GpuPeak('H100 SXM', 66.9, 989.4)),
    (('a100',), None, GpuPeak('A100', 19.5, 312.0)),
    (('l40s',), None, GpuPeak('L40S', 91.6, 362.1)),
    (('l4',), None, GpuPeak('L4', 30.3, 121.0)),
    (('a10',), None, GpuPeak('A10', 31.2, 125.0)),
    (('orin',), 16, GpuPeak('Jetson AGX Orin 64GB', 5.3, 42.5)),
    (('orin',), 14, GpuPeak('Jetson AGX Orin 32GB', 3.33, 27.0)),
)


def peak_for(name: str, sms: int) -> GpuPeak | None:
    """The peak of the GPU called ``name`` with ``sms`` multiprocessors (None: unknown)."""
    words = name.lower().replace('-', ' ').split()
    for needed, count, peak in PEAKS:
        if all(word in words for word in needed) and count in (None, sms):
            return peak
    return None


def parse_peak(text: str) -> GpuPeak:
    """``'FP32,FP16'`` TFLOP/s from the command line -> a GpuPeak labelled ``given``."""
    try:
        fp32, fp16 = (float(part) for part in text.split(','))
    except ValueError as error:
        raise ValueError(f'--peak-tflops takes FP32,FP16 in TFLOP/s, got {text!r}') from error
    return GpuPeak('given', fp32, fp16)


def flops_per_image(config: ModelConfig) -> int:
    """Multiply-add FLOPs (2 per MAC) of one image through ``descriptors`` of ``config``'s
    model at its ``test_size``, counted on the meta device."""
    height, width = config.preprocess.test_size
    with torch.device('meta'):
        model = build_model(config).eval()
    image = torch.zeros(1, 3, height, width, device='meta')
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.descriptors(image)
    return int(counter.get_total_flops())
