"""``vpr download-weights`` and ``vpr export-onnx``: thin front ends over the model API.

The work is done by :func:`vpr_core.model.weights.download_weights` and
:func:`vpr_core.model.export.export_onnx`; this module only parses and prints.
"""
from __future__ import annotations

import argparse

from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import load_model
from vpr_core.model.export import DEFAULT_OPSET, export_onnx
from vpr_core.model.weights import CACHE_ENV, download_weights, OFFICIAL_WEIGHTS, weights_path


def register(subparsers) -> None:
    """Add ``vpr download-weights`` and ``vpr export-onnx``."""
    _register_download(subparsers)
    _register_export(subparsers)


def _register_download(subparsers) -> None:
    parser = subparsers.add_parser(
        'download-weights', help='download official weights into the cache (sha256-checked)',
        description='Download published weight files into the cache. Names: '
                    + ', '.join(OFFICIAL_WEIGHTS))
    parser.add_argument('names', nargs='*', metavar='NAME', help='weights to download')
    parser.add_argument('--list', action='store_true', help='list known files and exit')
    parser.add_argument('--cache-dir', help=f'cache directory (default ${CACHE_ENV} or '
                                            '~/.cache/vpr_ros)')
    parser.add_argument('--url-base', help='mirror to download from instead of the origin')
    parser.add_argument('--sha256', help='expected sha256 (overrides the table)')
    parser.add_argument('--force', action='store_true', help='download even if cached')
    parser.set_defaults(func=_run_download)


def _register_export(subparsers) -> None:
    parser = subparsers.add_parser(
        'export-onnx', help='export a .safetensors model to ONNX (dynamic batch)',
        description='Export one of our .safetensors models to ONNX for onnxruntime / '
                    'TensorRT (trtexec --onnx=OUT --fp16).')
    parser.add_argument('model', help='our .safetensors checkpoint')
    parser.add_argument('output', help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET, help='ONNX opset')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'),
                        help='input size (default: the model test_size)')
    parser.set_defaults(func=_run_export)


def _run_download(args: argparse.Namespace) -> int:
    if args.list:
        _print_table(args.cache_dir)
        return 0
    if not args.names:
        raise ConfigError(f'name at least one file to download; valid: '
                          f'{", ".join(OFFICIAL_WEIGHTS)} (or --list)')
    for name in args.names:
        path = download_weights(name, cache=args.cache_dir, url_base=args.url_base,
                                sha256=args.sha256, force=args.force)
        print(path)
    return 0


def _print_table(cache: str | None) -> None:
    for entry in OFFICIAL_WEIGHTS.values():
        present = 'cached' if weights_path(entry.name, cache=cache).is_file() else '-'
        print(f'{entry.name:30s} {present:7s} {entry.sha256 or "sha256 unknown":64s} '
              f'{entry.url()}')


def _run_export(args: argparse.Namespace) -> int:
    model = load_model(args.model)
    path = export_onnx(model, args.output, opset=args.opset,
                       input_size=tuple(args.size) if args.size else None)
    print(path)
    return 0
