"""The one exception root of ``qos_plugin`` and its structured children.

Every message is meant to be shown to a user as one line: what was wrong, the
value, and what to do about it.
"""

from __future__ import annotations

import re

# Line breaks and other control characters a value may carry into a message
# (a stage name from a file, a file name, an argument): shown escaped, so an
# error is always exactly one line whatever the input held. Lone surrogates
# (from a JSON escape or an undecodable file name) too: they cannot be printed.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class QosPluginError(Exception):
    """Root of every error the planner raises on purpose; ``str()`` is one line."""

    def __str__(self) -> str:
        return one_line(super().__str__())


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
