"""Exceptions and warnings that users see.

Every user-facing failure is an :class:`InputError` rendered as one line,
``"<source>: <reason>; <hint>"``; the CLI prints it on stderr and exits with code 2.
"""

from __future__ import annotations


class CeusflowError(Exception):
    """Base class of every ceusflow error."""


class InputError(CeusflowError, ValueError):
    """Bad input: names what failed, where, and what to do.

    Parameters
    ----------
    source : str
        What the input is: a file path relative to the export, a patient pseudonym,
        or an argument name. Never a patient identifier.
    reason : str
        What is wrong with it.
    hint : str, optional
        What the user can do about it.
    """

    def __init__(self, source: str, reason: str, hint: str = "") -> None:
        self.source = str(source)
        self.reason = reason
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.source}: {self.reason}"
        return f"{text}; {self.hint}" if self.hint else text


class StoreError(CeusflowError):
    """A Zarr store is missing, incomplete or of an unknown layout."""


class ConvergenceWarning(UserWarning):
    """An iterative fit stopped before converging."""
