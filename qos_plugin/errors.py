"""The one exception root of ``qos_plugin`` and its structured children.

Every message is meant to be shown to a user as one line: what was wrong, the
value, and what to do about it.
"""

from __future__ import annotations


class QosPluginError(Exception):
    """Root of every error the planner raises on purpose."""


class InputError(QosPluginError):
    """A file or argument given by the user is malformed or inconsistent.

    ``source`` names the file or option, ``detail`` says what is wrong with which
    value, and ``hint`` says what to do. ``str()`` joins them into one line.
    """

    def __init__(self, source: str, detail: str, hint: str = "") -> None:
        self.source = source
        self.detail = detail
        self.hint = hint
        text = f"{source}: {detail}"
        if hint:
            text += f"; {hint}"
        super().__init__(text)


class ModelError(QosPluginError):
    """The inputs are well formed but the model cannot be evaluated on them."""
