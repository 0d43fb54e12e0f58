"""The ``vpr`` console script: the vpr_core commands plus the ROS ones (``bag-replay``) and
the training ones (``adapt``)."""
from __future__ import annotations

from typing import Sequence

from vpr_core import cli

ROS_COMMAND_MODULES = ('vpr_ros.commands',)
TRAINING_COMMAND_MODULES = ('training.commands',)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vpr``; returns the exit code."""
    return cli.main(argv, extra_modules=ROS_COMMAND_MODULES + TRAINING_COMMAND_MODULES)


if __name__ == '__main__':
    raise SystemExit(main())
