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


# How messages name options: Python keywords (``batch_size``, ``overwrite=True``)
# unless the command line asked for its own flags (``--batch-size``, ``--overwrite``).
_NAMING = {"cli": False}

# Options whose flag is not simply the keyword with dashes.
_FLAGS = {"output": "-o", "tissue": "--no-tissue", "slide": "SLIDE"}


def use_cli_names(on: bool = True) -> None:
    """Make :func:`opt` name command-line flags (the ``stainfuser`` command calls this)."""
    _NAMING["cli"] = bool(on)


def opt(name: str, value=...) -> str:
    """The name of option ``name`` (set to ``value``) as the user wrote it.

    ``opt("batch_size")`` is ``batch_size`` in Python and ``--batch-size`` on
    the command line; ``opt("overwrite", True)`` is ``overwrite=True`` or
    ``--overwrite``; ``opt("tile", 512)`` is ``tile=512`` or ``--tile 512``.
    """
    if not _NAMING["cli"]:
        return name if value is ... else f"{name}={value!r}"
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    return flag if value is ... or value is True else f"{flag} {value}"
