"""The predecessor's call forms (ML4GW's ``ml4gw-hermes``): kept with their meaning, or refused loudly.

Scripts written for the predecessor port with small edits. Where a parameter was renamed,
the old name still works and a :class:`DeprecationWarning` names the new spelling; where the
order of positional parameters changed, a positional call is refused with a message that
shows the keyword form, so arguments are never silently swapped.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

__all__ = ["positional_to_keywords", "refuse_positional", "rename_keyword"]


def rename_keyword(kwargs: dict[str, Any], old: str, new: str, where: str, *, current: Any = None) -> Any:
    """Pop ``old`` from ``kwargs`` with a DeprecationWarning naming ``new``; return the value to use.

    Args:
        kwargs: the call's extra keyword arguments (changed in place).
        old: the predecessor's parameter name.
        new: today's name.
        where: the call, for messages (``"add_streaming_output"``).
        current: the value given under the new name (``None`` when not given).

    Raises:
        TypeError: both names were given.
    """
    if old not in kwargs:
        return current
    value = kwargs.pop(old)
    if current is not None:
        raise TypeError(f"{where}: {old}= is the old name of {new}=; give only {new}=")
    warnings.warn(
        f"{where}({old}=...) is the predecessor's spelling; write {where}({new}={value!r})",
        DeprecationWarning,
        stacklevel=3,
    )
    return value


def refuse_positional(where: str, extra: Sequence[Any], spelled: str, old_order: str) -> None:
    """Raise when a parameter whose position changed was passed by position.

    Args:
        where: the call (``"EnsembleModel.add_input"``).
        extra: the surplus positional arguments (nothing happens when empty).
        spelled: the keyword form to write instead.
        old_order: the predecessor's parameter order, for the message.

    Raises:
        TypeError: ``extra`` is not empty.
    """
    if extra:
        got = ", ".join(repr(a) for a in extra)
        raise TypeError(
            f"{where} takes these arguments by keyword only (got {got} by position): the predecessor's "
            f"order was {old_order}, so a positional call would swap them; write {spelled}"
        )


def positional_to_keywords(
    where: str, values: Sequence[Any], names: Sequence[str], kwargs: dict[str, Any]
) -> None:
    """Map the predecessor's trailing positional arguments to keywords, with a DeprecationWarning.

    Args:
        where: the call, for messages.
        values: the surplus positional arguments.
        names: the predecessor's names for them, in order (``streams_per_gpu`` becomes
            ``instances``).
        kwargs: the call's keyword arguments, updated in place.

    Raises:
        TypeError: more values than names, or a name also given by keyword.
    """
    if len(values) > len(names):
        raise TypeError(
            f"{where}: {len(values)} extra positional arguments; the predecessor took at most {len(names)}"
        )
    given = dict(zip(names, values, strict=False))
    for key in given:
        if key in kwargs:
            raise TypeError(f"{where}: {key} given by position and by keyword")
    spelled = ", ".join(f"{k}={v!r}" for k, v in given.items())
    warnings.warn(
        f"{where}: the predecessor's positional {', '.join(given)} are deprecated; write {where}(..., {spelled})",
        DeprecationWarning,
        stacklevel=3,
    )
    kwargs.update({("instances" if k == "streams_per_gpu" else k): v for k, v in given.items()})
