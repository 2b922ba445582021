"""Every public class and function of thermax has a docstring, and so has every public
method of a public class.

The public names of a module are its ``__all__``, or, where it has none, every name not
starting with ``_``; only objects defined in thermax are checked (a re-exported
``diffrax.Tsit5`` is diffrax's business). A class must carry its own docstring (not the
signature ``dataclasses`` writes in when there is none); a method may inherit its docstring
from the abstract method it implements, since the interface is documented once on the base.
All missing docstrings are reported at once.
"""

import dataclasses
import importlib
import inspect
import pkgutil

import thermax

MODULES = [
    "thermax",
    "thermax.systems",
    "thermax.distributions",
    "thermax.bijections",
    "thermax.nn",
    "thermax.objectives",
    "thermax.exact",
    "thermax.mcmc",
    "thermax.quantum",
    "thermax.train",
    "thermax.catalog",
    "thermax.cli",
]
# Public modules added later are checked too.
MODULES += sorted(f"thermax.{m.name}" for m in pkgutil.iter_modules(thermax.__path__)
                  if not m.name.startswith("_") and f"thermax.{m.name}" not in MODULES)


def _public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return list(names)


def _defined_in_thermax(obj) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "thermax"


def _own_class_doc(cls) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    # dataclasses (and so eqx.Module) fill a missing docstring with "Name(field: type, ...)".
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""
    return doc.strip()


def _unwrap(member):
    """The function behind a class attribute (method, static/class method, property), or
    None when the attribute is not a routine."""
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if inspect.isfunction(member):
        return member
    # Equinox wraps Module methods; the wrapper keeps the function as __wrapped__/method.
    for attr in ("__wrapped__", "method"):
        inner = getattr(member, attr, None)
        if inspect.isfunction(inner):
            return inner
    return None


def _method_doc(cls, name: str, func) -> str:
    if (func.__doc__ or "").strip():
        return func.__doc__.strip()
    for base in cls.__mro__[1:]:          # the interface documented once on a base class
        member = base.__dict__.get(name)
        inner = _unwrap(member) if member is not None else None
        if inner is not None and (inner.__doc__ or "").strip():
            return inner.__doc__.strip()
    return ""


def _missing() -> list[str]:
    missing: list[str] = []
    seen: set[int] = set()
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in _public_names(module):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not _defined_in_thermax(obj) or id(obj) in seen:
                continue
            seen.add(id(obj))
            where = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isfunction(obj):
                if not (obj.__doc__ or "").strip():
                    missing.append(where)
                continue
            if not _own_class_doc(obj):
                missing.append(where)
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = _unwrap(member)
                if func is None or not _defined_in_thermax(func):
                    continue
                if not _method_doc(obj, attr, func):
                    missing.append(f"{where}.{attr}")
    return missing


def test_every_public_name_has_a_docstring():
    missing = _missing()
    assert not missing, f"{len(missing)} public names lack a docstring:\n  " + "\n  ".join(
        missing)
