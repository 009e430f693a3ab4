"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class KDistillError(Exception):
    """Bad input or configuration the user can fix; never shown as a traceback."""


class TrainingDiverged(KDistillError):
    """A loss term became NaN or infinite; names the term so the user knows what to lower."""
