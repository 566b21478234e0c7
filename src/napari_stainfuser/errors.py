"""One exception hierarchy for the whole package.

Every error a user can cause derives from :class:`StainFuserError`; the CLI
prints these as one line and exits non-zero, the widgets show them as napari
notifications.
"""


class StainFuserError(Exception):
    """Base class for every error napari-stainfuser raises on bad input."""


class SlideReadError(StainFuserError):
    """A slide file cannot be opened or one of its tiles cannot be decoded."""


class SlideWriteError(StainFuserError):
    """An output pyramid cannot be written."""


class StainEstimationError(StainFuserError):
    """Stain vectors or statistics cannot be estimated from an image."""


class CheckpointError(StainFuserError):
    """Model weights or configs are missing, corrupt or do not match the architecture."""


class ParameterError(StainFuserError, ValueError):
    """A parameter value is invalid (unknown method name, bad tile size, ...)."""
