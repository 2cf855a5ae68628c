"""Name -> object registries whose errors list the valid names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mnist_pipeline.mlp.errors import MLPError


class Registry(dict[str, Any]):
    """A dict of named factories; :meth:`get` names the valid choices on a miss."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            self[name] = obj
            return obj

        return add

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted: the valid choices as every error lists them."""
        return tuple(sorted(self))

    def get(self, name: str) -> Any:  # type: ignore[override]
        if name not in self:
            raise MLPError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self[name]
