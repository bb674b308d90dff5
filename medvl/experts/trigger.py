"""The expert trigger in a model's reply, VILA-M3's convention: ``<NAME(arg)>``.

    "I segmented the entire image using <VISTA3D(everything)>."  -> Trigger("VISTA3D", "everything")
    "<VISTA3D>" / "<VISTA3D()>"                                    -> Trigger("VISTA3D", None)  (default argument)
    "The liver is normal."                                        -> None
    "<A(x)> then <B(y)>"                                           -> TriggerError (more than one trigger)
    "<VISTA3D(a)(b)>" / "<VISTA3D(a, b)>"                          -> TriggerError (more than one argument)

VILA-M3 (``m3/demo/experts/expert_monai_vista3d.py``) finds ``<(.*?)>`` in the reply, runs nothing unless there is
exactly one, and reads the argument from ``\\((.*?)\\)`` after the model name. We keep those rules and are stricter
where it is silent: the name must be an identifier, parentheses must close, and a comma also separates arguments.
The argument is returned as a plain string: it is only ever compared with an expert's list of valid arguments
(``medvl.experts.tool_caller``), never evaluated, never used as a path or a command.
"""
from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MAX_ARGUMENT_CHARS", "Trigger", "TriggerError", "find_triggers", "parse_trigger"]

#: Longest argument accepted (VILA-M3's longest label group is 16 characters).
MAX_ARGUMENT_CHARS = 100

_BRACKETED = re.compile(r"<([^<>]*)>")
_NAME_AND_REST = re.compile(r"\s*([A-Za-z][A-Za-z0-9_\-]*)\s*(.*?)\s*$", re.DOTALL)
_ARGUMENT = re.compile(r"\(([^()]*)\)")
_QUOTES = ("'", '"')


class TriggerError(ValueError):
    """A reply holds more than one trigger, or a malformed one; the message says which and why."""


class Trigger(NamedTuple):
    """An expert call: the expert's name and its argument (None = the expert's default argument)."""

    name: str
    argument: str | None


def find_triggers(reply: str) -> list[str]:
    """Every ``<...>`` span of ``reply`` (contents without the brackets), in order."""
    return _BRACKETED.findall(str(reply))


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        return text[1:-1].strip()
    return text


def parse_trigger(reply: str) -> Trigger | None:
    """The single expert trigger of a model reply, or None when it holds none.

    Args:
        reply: the model's reply text.

    Returns:
        ``Trigger(name, argument)``; ``argument`` is None for ``<NAME>`` and ``<NAME()>`` (the default), else the
        argument text with surrounding spaces and one pair of quotes removed (inner spaces kept: "hepatic tumor").

    Raises:
        TriggerError: more than one ``<...>`` in the reply (nothing is run), a ``<...>`` that is not
            ``NAME`` / ``NAME(arg)``, unbalanced parentheses, more than one argument, or an argument longer than
            ``MAX_ARGUMENT_CHARS``.
    """
    spans = find_triggers(reply)
    if not spans:
        return None
    if len(spans) > 1:
        shown = ", ".join(f"<{s}>" for s in spans[:5])
        raise TriggerError(f"the reply holds {len(spans)} expert triggers ({shown}); give exactly one <NAME(arg)>, "
                           "so nothing was run")
    content = spans[0]
    match = _NAME_AND_REST.match(content)
    if match is None:
        raise TriggerError(f"<{content}> is not an expert trigger; write <NAME(arg)> or <NAME>")
    name, rest = match.group(1), match.group(2)
    if not rest:
        return Trigger(name, None)
    if rest.count("(") != rest.count(")") or not rest.startswith("(") or not rest.endswith(")"):
        raise TriggerError(f"<{content}>: the argument must be one (...) right after the name, with its parentheses "
                           "closed, e.g. <NAME(arg)>")
    arguments = _ARGUMENT.findall(rest)
    if _ARGUMENT.sub("", rest).strip():
        raise TriggerError(f"<{content}>: unexpected text around the argument; write <NAME(arg)>")
    if len(arguments) > 1 or (arguments and "," in arguments[0]):
        raise TriggerError(f"<{content}>: more than one argument; an expert takes one argument per call")
    argument = _unquote(arguments[0]) if arguments else ""
    if len(argument) > MAX_ARGUMENT_CHARS:
        raise TriggerError(f"<{name}(...)>: the argument is {len(argument)} characters long, over the limit of "
                           f"{MAX_ARGUMENT_CHARS}")
    return Trigger(name, argument or None)
