"""The model's one exception type, and the two checks its config types validate with.

Every message is one line that names the setting: ``train.lr=0 is invalid: must be > 0``,
``optimizer.name='adagrad' is not one of: adam, adamw, ...``. :class:`MLPError` is a
``ValueError``, so callers that do not care about the difference can catch that.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class MLPError(ValueError):
    """An unknown name, an impossible setting, or a training run that cannot go on."""


def check(key: str, ok: bool, requirement: str, value: Any) -> None:
    """Raise :class:`MLPError` ``"{key}={value!r} is invalid: must be {requirement}"`` unless ``ok``."""
    if not ok:
        raise MLPError(f"{key}={value!r} is invalid: must be {requirement}")


def check_choice(key: str, value: str, valid: Iterable[str]) -> None:
    """Raise :class:`MLPError` listing ``valid``, in the order given, unless ``value`` is one of them."""
    valid = tuple(valid)
    if value not in valid:
        raise MLPError(f"{key}={value!r} is not one of: {', '.join(valid)}")
