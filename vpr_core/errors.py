"""Error types raised at the boundaries of vpr_core.

Every error a user can trigger with bad input derives from :class:`VPRError`, so front ends
(CLI, ROS node) catch one type, report it and carry on.
"""


class VPRError(Exception):
    """Base class of every error vpr_core raises on purpose."""


class ConfigError(VPRError, ValueError):
    """A configuration value or key is invalid."""


class CheckpointError(VPRError):
    """A weight file is missing, truncated, or does not fit the architecture."""


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """A weight file that must be placed by hand (or downloaded explicitly) is absent."""


class MapError(VPRError):
    """A map directory is missing, truncated or corrupt."""


class IncompatibleMapError(MapError):
    """A map was built by a different model (fingerprint or descriptor layout differ)."""


class UnsupportedImageError(VPRError, ValueError):
    """An image has an unknown encoding, wrong size, or cannot be decoded."""


class BagError(VPRError):
    """A rosbag2 cannot be read, or lacks the requested topics."""
