"""One registry class for every name a flag picks (``--model``, ``--netG``, ``--netD``,
``--dataset_mode``, ``--dataset``), after detectron2's ``Registry``: entries join with a
decorator or a call, and a wrong name fails loudly, naming the flag and the valid choices.

    GENERATORS = Registry("generator", flag="--netG")

    @GENERATORS.register("rotate")
    class RotateGenerator(nn.Module): ...

    GENERATORS.get("rotate")   # the class; an unknown name is a one-line ValueError
"""

from __future__ import annotations

from collections.abc import Iterator


class Registry:
    def __init__(self, what: str, flag: str, hint: str = ""):
        """``what`` names the kind of entry in messages, ``flag`` the option that picks one;
        ``hint`` is appended to the unknown-name error (e.g. where to add a new entry)."""
        self.what, self.flag, self.hint = what, flag, hint
        self._entries: dict[str, object] = {}

    def register(self, name: str, obj=None):
        """``register(name, obj)`` adds ``obj``; ``@register(name)`` adds the decorated
        class or function. A name that is already taken is an error: two entries silently
        shadowing each other would make the flag's meaning depend on import order."""
        if obj is None:
            def decorator(target):
                self.register(name, target)
                return target

            return decorator
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice ({self._entries[name]!r} "
                             f"and {obj!r}); give one of them another name")
        self._entries[name] = obj
        return obj

    def get(self, name: str):
        if name not in self._entries:
            hint = f" ({self.hint})" if self.hint else ""
            raise ValueError(f"unknown {self.flag} {name!r}; choose one of: "
                             f"{', '.join(self._entries)}{hint}")
        return self._entries[name]

    def name_of(self, obj) -> str | None:
        """The name ``obj`` is registered under, or None."""
        return next((k for k, v in self._entries.items() if v is obj), None)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.flag}: {', '.join(self._entries)})"
