"""The ``vpr`` command line: a thin front end over the vpr_core API.

Each command module exposes ``register(subparsers)`` which adds its sub-command and sets
``func`` (called with the parsed namespace, returns an exit code).
"""
from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module
from typing import Sequence

import cv2

from vpr_core.errors import VPRError

COMMAND_MODULES = (
    'vpr_core.evaluation.commands',
    'vpr_core.model.commands',
    'vpr_core.mapdb.commands',
    'vpr_core.evaluation.bag_commands',
    'vpr_core.loops.commands',
)


def build_parser(extra_modules: Sequence[str] = ()) -> argparse.ArgumentParser:
    """Parser with every sub-command of ``COMMAND_MODULES`` and ``extra_modules``."""
    parser = argparse.ArgumentParser(prog='vpr', description='Visual place recognition tools.')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name in (*COMMAND_MODULES, *extra_modules):
        import_module(name).register(subparsers)
    for verb in subparsers.choices.values():
        verb.add_argument('--threads', type=int, default=None, metavar='N',
                          help='CPU threads per worker for torch, onnxruntime, faiss and OpenCV '
                               '(default: 1 on hosts with 2 cores or fewer, where a second '
                               'thread only slowed frames down)')
    return parser


def main(argv: Sequence[str] | None = None, extra_modules: Sequence[str] = ()) -> int:
    """Run one ``vpr`` sub-command; a :class:`VPRError` becomes a one-line message, exit 2.

    So does a ``cv2.error`` that escaped a decoder (the decoders turn the ones they expect
    into UnsupportedImageError): the user gets its first line, not a traceback.
    """
    args = build_parser(extra_modules).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(levelname)s %(name)s: %(message)s')
    try:
        from vpr_core.devices import apply_thread_policy
        apply_thread_policy(args.threads)
        return int(args.func(args) or 0)
    except VPRError as exc:
        print(f'vpr {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except cv2.error as exc:
        first = (str(exc).strip().splitlines() or ['unknown error'])[0]
        print(f'vpr {args.command}: error: OpenCV could not process an image: {first}',
              file=sys.stderr)
        return 2
