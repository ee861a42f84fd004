"""Commands: pydantic models with a stable registered name, a schema version, a retention class and body options.

    class RenameCustomer(Command):
        cmd_class = "billing.RenameCustomer"
        customer_id: int
        name: str
        def subjects(self): return [f"customer:{self.customer_id}"]

Fields marked ``Sensitive`` (``iban: Annotated[str, Sensitive]``) are withheld from the global log;
``cmd_options = (ExcludeCmdBody,)`` keeps the whole body out of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from commandlog.errors import UnknownCommandError

Retention = Literal["short_lived", "long_lived", "permanent"]
RETENTION_CLASSES: tuple[str, ...] = ("short_lived", "long_lived", "permanent")


class _Marker:
    def __init__(self, name: str, doc: str) -> None:
        self._name = name
        self.__doc__ = doc

    def __repr__(self) -> str:
        return self._name


Sensitive = _Marker("Sensitive", "Field metadata: the value is withheld from the global log, kept in the tenant log.")
ExcludeCmdBody = _Marker("ExcludeCmdBody", "Command option: the body never reaches the global log.")
NeverStoreCmdBody = _Marker(
    "NeverStoreCmdBody",
    "Command option: the body is stored nowhere (global nor tenant log); such a command cannot be replayed.",
)


class Command(BaseModel):
    """Base class of every command: validated, immutable, with registration metadata as class variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cmd_class: ClassVar[str] = ""
    """Stable registered name, e.g. ``billing.RenameCustomer``."""
    cmd_version: ClassVar[int] = 1
    """Schema version of the body; older bodies are upcast on replay."""
    retention: ClassVar[Retention] = "long_lived"
    """How long its log entries live."""
    cmd_options: ClassVar[tuple[Any, ...]] = ()
    """Body options: ``ExcludeCmdBody``, ``NeverStoreCmdBody``."""
    replayable: ClassVar[bool] = True
    """False refuses replays of this class."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.retention not in RETENTION_CLASSES:
            raise TypeError(f"{cls.__name__}.retention must be one of {RETENTION_CLASSES}, not {cls.retention!r}")
        if cls.cmd_class:
            registry.register(cls)

    def subjects(self) -> list[str]:
        """The entities this command touches, as ``kind:id`` strings."""
        return []

    @classmethod
    def body_excluded(cls) -> bool:
        """True when the body must not reach the global log."""
        return ExcludeCmdBody in cls.cmd_options or NeverStoreCmdBody in cls.cmd_options

    @classmethod
    def body_stored(cls) -> bool:
        """False when the body must not be stored even in the tenant log."""
        return NeverStoreCmdBody not in cls.cmd_options


Upcaster = Callable[[dict], dict]


class CommandRegistry:
    """Command classes by registered name, and the upcasters that bring old bodies to the current version."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Command]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(self, cls: type[Command]) -> type[Command]:
        """Register ``cls`` under its ``cmd_class``; a second class with the same name is an error."""
        existing = self._classes.get(cls.cmd_class)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"command class {cls.cmd_class!r} is already registered by {existing.__qualname__}")
        self._classes[cls.cmd_class] = cls
        return cls

    def get(self, cmd_class: str) -> type[Command]:
        """The class registered as ``cmd_class``; ``UnknownCommandError`` if none."""
        try:
            return self._classes[cmd_class]
        except KeyError:
            raise UnknownCommandError(cmd_class) from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._classes)

    def upcaster(self, cmd_class: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator: register a function turning a body of ``from_version`` into ``from_version + 1``."""

        def decorate(fn: Upcaster) -> Upcaster:
            self._upcasters[(cmd_class, from_version)] = fn
            return fn

        return decorate

    def upcast(self, cmd_class: str, version: int, body: dict) -> dict:
        """Apply the registered upcasters from ``version`` up to the class's current version."""
        target = self.get(cmd_class).cmd_version
        while version < target:
            step = self._upcasters.get((cmd_class, version))
            if step is None:
                raise ValueError(f"no upcaster for {cmd_class} from version {version} to {version + 1}")
            body = step(dict(body))
            version += 1
        return body


registry = CommandRegistry()
"""The process-wide registry; command classes register themselves when defined."""
