"""Griffe extension for the dpflows API reference (static analysis only: nothing is imported).

Three things the Google-style parser does not know about this code base:

1. **Equinox modules are dataclasses.** ``eqx.Module`` generates ``__init__`` from the annotated
   fields (``dataclass_transform``), which griffe's dataclass support does not follow. For every
   class that derives from ``equinox.Module`` (directly or through a dpflows class) and defines no
   ``__init__``, a signature is synthesised from the fields, parents first, with the defaults of
   ``eqx.field(default=...)``; ``init=False`` fields are left out. The class docstring's ``Args:``
   then documents a real signature (and a stale entry is still reported).
2. **Sphinx roles.** Docstrings use ``:func:`run``` and friends (they also serve ``help()``); they are
   rendered as inline code. Cross-references proper are the doc pages' business.
3. **``Example:``** (singular) is read as the ``Examples:`` section, so doctests render as code.

No docstring text is dropped, and no warning is silenced here: the strict build still fails on an
unknown parameter, a malformed section or a broken reference.

``KNOWN_DEFECTS`` lists docstrings in ``src/`` that the strict build rejects, with the rewrite used
until the source is fixed (each entry is a no-op once its ``old`` text is gone; remove it then). The
docs test fails if an entry no longer matches, so the table cannot go stale silently.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Attribute, Class, Extension, Function, Module, Parameter, ParameterKind, Parameters

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const|ref|term):`~?([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_EQX_MODULE = {"equinox.Module", "equinox._module.Module", "equinox._module._module.Module"}
_ABSTRACT = (
    "equinox.AbstractVar",
    "equinox.AbstractClassVar",
    "eqx.AbstractVar",
    "eqx.AbstractClassVar",
    "AbstractVar",
    "AbstractClassVar",
    "typing.ClassVar",
    "ClassVar",
)


# object path -> (old, new): one-line source fixes pending in src/ (see the module docstring).
KNOWN_DEFECTS: dict[str, tuple[str, str]] = {}
APPLIED: set[str] = set()


def _clean(text: str) -> str:
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    return _EXAMPLE.sub(r"\1Examples:", text)


def _is_eqx_module(cls: Class, seen: set[str] | None = None) -> bool:
    seen = set() if seen is None else seen
    if cls.path in seen:
        return False
    seen.add(cls.path)
    for base in cls.bases:
        path = getattr(base, "canonical_path", str(base))
        if path in _EQX_MODULE:
            return True
        try:
            parent = cls.modules_collection[path]
        except Exception:  # noqa: BLE001 - an external or unresolvable base
            continue
        if isinstance(parent, Class) and _is_eqx_module(parent, seen):
            return True
    return False


def _call_kwargs(value: Any) -> dict[str, Any] | None:
    """``{"default": ..., "init": ...}`` of an ``eqx.field(...)`` / ``dataclasses.field(...)`` call, else None."""
    function = getattr(value, "function", None)
    if function is None or not str(getattr(function, "canonical_path", function)).endswith("field"):
        return None
    kwargs = {}
    for argument in getattr(value, "arguments", ()):
        name = getattr(argument, "name", None)
        if name is not None:
            kwargs[name] = argument.value
    return kwargs


def _fields(cls: Class) -> list[Parameter]:
    params = []
    for member in cls.members.values():
        if member.is_alias or not isinstance(member, Attribute) or member.annotation is None:
            continue
        if "property" in member.labels or str(member.annotation).startswith(_ABSTRACT):
            continue
        annotation_path = getattr(member.annotation, "canonical_path", "")
        if str(annotation_path).startswith(_ABSTRACT):
            continue
        default = member.value
        kwargs = _call_kwargs(default)
        if kwargs is not None:
            if str(kwargs.get("init", "True")) == "False":
                continue
            default = kwargs.get("default", kwargs.get("default_factory"))
        params.append(
            Parameter(
                member.name, annotation=member.annotation, kind=ParameterKind.positional_or_keyword, default=default
            )
        )
    return params


def _mro(cls: Class) -> list[Class]:
    try:
        return [c for c in cls.mro() if isinstance(c, Class)]
    except Exception:  # noqa: BLE001 - unresolvable bases: the class alone
        return []


class DpflowsDocstrings(Extension):
    """Equinox signatures, Sphinx roles as code, ``Example:`` as ``Examples:`` (see the module docstring)."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Rewrite the docstring's roles and section title as soon as the object is loaded."""
        if getattr(obj, "docstring", None) is None:
            return
        value = obj.docstring.value
        fix = KNOWN_DEFECTS.get(obj.path)
        if fix is not None and fix[0] in value:
            value = value.replace(*fix)
            APPLIED.add(obj.path)
        obj.docstring.value = _clean(value)

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        """Once the whole package is loaded (bases resolvable), give equinox modules their ``__init__``."""
        self._synthesised: set[str] = set()
        self._walk(pkg, set())

    def _walk(self, obj: Module | Class, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            if isinstance(member, Class):
                self._add_init(member)
                self._walk(member, seen)
            elif isinstance(member, Module):
                self._walk(member, seen)

    def _add_init(self, cls: Class) -> None:
        if "__init__" in cls.members or not _is_eqx_module(cls):
            return
        chain = [c for c in reversed(_mro(cls))] + [cls]
        if any("__init__" in c.members and c.path not in self._synthesised for c in chain[:-1]):
            return  # an inherited explicit __init__ is the signature
        by_name: dict[str, Parameter] = {}
        for c in chain:
            for p in _fields(c):
                by_name.pop(p.name, None)
                by_name[p.name] = p
        self_param = Parameter("self", kind=ParameterKind.positional_or_keyword)
        init = Function(
            "__init__",
            lineno=cls.lineno,
            endlineno=cls.lineno,
            parent=cls,
            parameters=Parameters(self_param, *by_name.values()),
            returns="None",
        )
        cls.set_member("__init__", init)
        self._synthesised.add(cls.path)
        cls.labels.add("dataclass")
