"""``SLLConfig``: per-kind and per-submodule settings for ``linearize_module``.

``linearize_module(model, 0.05)`` is the simple form; ``linearize_module(model, SLLConfig(...))``
sets, in one frozen value:

- ``eps``/``mode``: the defaults;
- ``kind_eps``: eps per rule kind (``"round"``, ``"gt"``, ... or a group: ``"compare"`` for the
  four comparisons, ``"select"`` for where/masked_fill);
- ``module_eps`` / ``module_mode``: per submodule, keyed by qualified name (``"encoder.block1"``,
  covering everything below it; ``""``, the root's name in ``named_modules()``: the whole model) or by module
  type (``nn.TransformerEncoderLayer``);
- ``disabled``: rule kinds switched off (their nodes stay hard and are reported so);
- ``skip``: submodules (names or types) left exactly as they are: not rewritten;
- ``method``: the estimator, ``"sll"`` (default), ``"ste"`` or ``"sigmoid"``; those two run the hard
  forward in every node, so ``module_mode`` with them is a ``ValueError`` (it would be ignored).

Priority, most specific first: a submodule by qualified name (the longest matching name
wins) > a submodule by type (the innermost enclosing module of a listed type) > the rule
kind (``kind_eps``) > the default.  Mode: by name > by type > the default.  Unknown kinds,
unknown submodule names, non-module types and module types the model holds no submodule of are a
``ValueError`` naming them; a bad eps or
mode in ``kind_eps``/``module_eps``/``module_mode`` is an ``EpsError``/``ModeError`` naming the
dict and the key (``SLLConfig: module_mode['enc']: mode='hrad' is not one of ...``).

``eps="auto"`` with ``kind_eps``/``module_eps`` (SLLConfig's own default eps is a fixed 0.01; pass
``eps="auto"`` to calibrate): ``"auto"`` is then the default, so only the nodes
that no ``kind_eps``/``module_eps`` entry covers are calibrated (``sll_fx/calibration.py``); a node
given a number by ``kind_eps`` or ``module_eps`` keeps it, through the automatic calibration and
through ``sll_fx.calibrate`` (``set_eps`` still changes it).  The report marks the calibrated
nodes (``Entry.auto``).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping, Union

import torch
from torch import nn

from .errors import EpsError, ModeError
from .ops import DEFAULT_EPS, check_eps, check_has_value, check_method, check_mode, check_no_grad
from .rules import KIND_GROUPS, KINDS

ModuleKey = Union[str, type]


def _own_check(check, value) -> None:
    """``check_eps``/``check_mode`` on SLLConfig's own ``eps``/``mode``: the message starts with
    ``SLLConfig: `` (``SLLConfig: eps=0.0 must be positive and finite``), not the ops' ``sll.`` prefix."""
    try:
        check("SLLConfig", value)
    except (EpsError, ModeError) as e:
        raise type(e)(f"SLLConfig: {str(e).split(': ', 1)[-1]}") from None


def _freeze(mapping) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


def _number(eps, what: str = "SLLConfig"):
    """A NumPy scalar or a one-element tensor without gradient as the Python float it holds (``set_eps`` takes
    them too); anything else as it is, for the checks to name.  ``what``: the caller, for the error."""
    if isinstance(eps, torch.Tensor) and eps.numel() == 1 and eps.is_floating_point():
        check_has_value(what, eps)
        check_no_grad(what, eps)  # (it would be read as a number: no gradient could reach it)
        return float(eps)
    if isinstance(eps, numbers.Real) and not isinstance(eps, (bool, int, float, torch.Tensor)):
        return float(eps)
    return eps


@dataclass(frozen=True)
class SLLConfig:
    eps: float = DEFAULT_EPS
    mode: str = "linear"
    kind_eps: Mapping[str, float] = field(default_factory=dict)
    module_eps: Mapping[ModuleKey, float] = field(default_factory=dict)
    module_mode: Mapping[ModuleKey, str] = field(default_factory=dict)
    disabled: frozenset[str] = frozenset()
    skip: tuple[ModuleKey, ...] = ()
    method: str = "sll"        # estimator: "sll", "ste" or "sigmoid" (see ``kernels.estimator_grad``)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "eps", _number(self.eps))
        set_(self, "kind_eps", _freeze({k: _number(v) for k, v in _mapping("kind_eps", self.kind_eps).items()}))
        set_(self, "module_eps", _freeze({k: _number(v) for k, v in _mapping("module_eps", self.module_eps).items()}))
        set_(self, "module_mode", _freeze(_mapping("module_mode", self.module_mode)))
        set_(self, "disabled", frozenset(_names("disabled", self.disabled)))
        set_(self, "skip", _names("skip", self.skip))
        if isinstance(self.eps, str) and self.eps != "auto":  # ("AUTO", "0.1": read as no float at all)
            raise EpsError(f"SLLConfig: eps={self.eps!r} (a str) is neither a number nor \"auto\"\nFix: eps=\"auto\" "
                           "(calibrated on the first forward call) or a float, e.g. eps=0.05")
        if not (isinstance(self.eps, str) and self.eps == "auto"):  # "auto": calibrated (sll_fx/calibration.py)
            _own_check(check_eps, self.eps)
        _own_check(check_mode, self.mode)
        check_method("SLLConfig", self.method)
        if self.method != "sll" and self.module_mode:  # an estimator runs the hard forward everywhere
            raise ValueError(
                f"SLLConfig: module_mode={{{', '.join(f'{_key(k)}: {v!r}' for k, v in self.module_mode.items())}}} "
                f"cannot be combined with method={self.method!r}: module_mode picks the forward of the sll "
                f"surrogate (method='sll'), while method={self.method!r} runs the hard forward in every node; "
                f"drop module_mode, or use method='sll'")
        for kind in (*self.kind_eps, *self.disabled):
            if kind not in KINDS and kind not in KIND_GROUPS:
                raise ValueError(f"SLLConfig: unknown rule kind {kind!r}; known kinds: "
                                 f"{', '.join(KINDS)} and groups {', '.join(KIND_GROUPS)}")
        for kind in self.kind_eps:
            if kind in ("where", "masked_fill", "select"):
                raise ValueError(f"SLLConfig: kind_eps[{kind!r}]: a {kind}'s band is its comparison's; "
                                 "set kind_eps for 'compare' (or 'gt', 'lt', ...) instead")
        for table in ("kind_eps", "module_eps", "module_mode"):   # errors name the dict and the key
            for key, value in getattr(self, table).items():
                try:
                    (check_mode if table == "module_mode" else check_eps)("SLLConfig", value)
                except (EpsError, ModeError) as e:
                    raise type(e)(f"SLLConfig: {table}[{_key(key)}]: {str(e).split(': ', 1)[-1]}") from None
        for key in (*self.module_eps, *self.module_mode, *self.skip):
            if not isinstance(key, str) and not (isinstance(key, type) and issubclass(key, nn.Module)):
                raise ValueError(f"SLLConfig: submodule key {key!r} is neither a qualified name nor an nn.Module type")

    def __repr__(self) -> str:
        parts = [f"eps={self.eps!r}" if isinstance(self.eps, str) else f"eps={self.eps:g}", f"mode={self.mode!r}"]
        if self.method != "sll":
            parts.append(f"method={self.method!r}")
        for name in ("kind_eps", "module_eps", "module_mode"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={{{', '.join(f'{_key(k)}: {v!r}' for k, v in value.items())}}}")
        if self.disabled:
            parts.append(f"disabled={sorted(self.disabled)}")
        if self.skip:
            parts.append(f"skip=[{', '.join(_key(k) for k in self.skip)}]")
        return f"SLLConfig({', '.join(parts)})"

    @classmethod
    def of(cls, eps_or_config, mode: str = "linear", method: str | None = None) -> "SLLConfig":
        """``SLLConfig`` from ``linearize_module``'s ``eps`` argument (a float, "auto" or a config);
        ``method`` (when given) overrides a config's."""
        if isinstance(eps_or_config, SLLConfig):
            if method is None or method == eps_or_config.method:
                return eps_or_config
            import dataclasses
            return dataclasses.replace(eps_or_config, method=method)
        method = method or "sll"
        if eps_or_config is None and method == "ste":  # the STE backward does not read eps
            eps_or_config = DEFAULT_EPS
        return cls(eps=eps_or_config, mode=mode, method=method)

    @property
    def auto(self) -> bool:
        """eps="auto" (given as the default eps): the nodes that take the default (no ``kind_eps``/``module_eps``
        entry covers them) get a placeholder eps until calibrated (``sll_fx.calibrate``)."""
        return isinstance(self.eps, str) and self.eps == "auto"

    def is_auto(self, kind: str, stack: list[tuple[str, type]]) -> bool:
        """Is the eps of a node of ``kind`` inside ``stack`` calibrated (``eps_for`` gives ``"auto"``)?"""
        eps = self.eps_for(kind, stack)
        return isinstance(eps, str) and eps == "auto"

    def check_against(self, model: nn.Module, also: Iterable[str] = (), also_types: Iterable = ()) -> list[str]:
        """Every submodule name the config uses exists in ``model`` (or is one of ``also``: the submodules an
        exported graph's nodes name, which ``ep.module()`` drops when they hold no parameter or buffer), and every
        module type is a submodule's (:meth:`_check_types`).  A module shared by several parents has a name per
        parent (``encoder.blk``, ``dec.blk``), and a node is named by the call it was made in, so each name covers
        the calls through it.  Returns the names used that are not a module's first name (see
        :func:`check_reached`)."""
        self._check_types(model, also_types)
        keys = [k for k in (*self.module_eps, *self.module_mode, *self.skip) if isinstance(k, str)]
        if not keys:
            return []
        first = {n for n, _ in model.named_modules()} | set(also)
        others = [k for k in keys if k not in first]
        if others:
            names = {n for n, _ in model.named_modules(remove_duplicate=False)}
            for key in others:
                if key not in names:
                    raise ValueError(f"SLLConfig: no submodule named {key!r} in {type(model).__name__} "
                                     f"(submodules: {', '.join(sorted(n for n in first if n)) or 'none'})")
        return others

    def _check_types(self, model: nn.Module, also_types: Iterable = ()) -> None:
        """Every module type in ``module_eps``/``module_mode``/``skip`` is the type (or a base) of a submodule of
        ``model``, or of one an exported graph's nodes name (``also_types``: classes, or export's class names): one
        the model does not hold selected nothing, silently, where a misspelled name is refused (a58).  The model's
        own type is no submodule's (its nodes sit in no submodule of it)."""
        if not any(isinstance(key, type) for table in ("module_eps", "module_mode", "skip")
                   for key in getattr(self, table)):
            return  # (no type to look for: the model's modules are not walked)
        held = [type(m) for path, m in model.named_modules() if path]
        held += [t for t in also_types if isinstance(t, type)]
        names = {t for t in also_types if isinstance(t, str)}
        for table in ("module_eps", "module_mode", "skip"):
            for key in getattr(self, table):
                if not isinstance(key, type) or any(issubclass(t, key) for t in held) or \
                        f"{key.__module__}.{key.__qualname__}" in names:
                    continue
                own = (f"; {type(model).__name__} is the model itself, whose nodes take SLLConfig's eps and mode"
                       if isinstance(model, key) else "")
                types = sorted({t.__name__ for t in held} | {n.rpartition(".")[2] for n in names})
                raise ValueError(f"SLLConfig: {table} names the type {key.__name__}, and {type(model).__name__} holds "
                                 f"no submodule of it{own} (its submodules' types: {', '.join(types) or 'none'})\n"
                                 f"Fix: drop {key.__name__} from {table}, or name a type (or a submodule) the model "
                                 "holds")

    def check_opaque_shared(self, model: nn.Module, opaque_paths: list[str]) -> None:
        """No ``module_eps``/``module_mode`` name covers some but not all the paths of a shared submodule kept
        opaque (``opaque_paths``: the report's): its copy, with one graph for every call, is named by its first
        path, so a setting for one parent would reach every call of it, or none."""
        keys = [k for k in (*self.module_eps, *self.module_mode) if isinstance(k, str)]
        if not keys or not opaque_paths:
            return
        from .scans import called_by_parent
        every: dict[int, list[str]] = {}
        for p, m in model.named_modules(remove_duplicate=False):
            if called_by_parent(model, p):  # (an alias no forward reads, self.last = self.layers[-1]: not a call)
                every.setdefault(id(m), []).append(p)
        under = lambda p, k: p == k or p.startswith(k + ".")  # noqa: E731
        for path in opaque_paths:
            try:
                paths = every.get(id(model.get_submodule(path)), [])
            except AttributeError:
                continue
            if len(paths) < 2:
                continue
            for key in keys:
                if under(key, path):  # (the module itself, by its first name, or inside it: every call)
                    continue
                covered = [p for p in paths if under(p, key)]
                if covered and len(covered) < len(paths):
                    raise ValueError(
                        f"SLLConfig: the setting for {key!r} covers {covered[0]!r}, a submodule kept opaque that is "
                        f"shared with another parent (also {next(p for p in paths if p not in covered)!r}): its copy "
                        f"runs one graph for every call, named by its first path {path!r}, so the setting cannot "
                        f"reach only the calls through {key!r}\nFix: set it for {path!r} (every call of it), or give "
                        "each parent its own copy of the module")

    @staticmethod
    def check_reached(model: nn.Module, gm: nn.Module, names: list[str]) -> None:
        """Each of ``names`` (other names of shared submodules, :meth:`check_against`) named a call the trace made:
        a module that a forward calls by iterating a container (``for layer in self.layers``, three times the
        same block) is named by its first path, so ``'layers.2'`` would reach no node."""
        from torch import fx
        made = {path for g in gm.modules() if isinstance(g, fx.GraphModule) for node in g.graph.nodes
                for path, _ in (node.meta.get("nn_module_stack") or {}).values()}
        for key in names:
            if not any(p == key or p.startswith(key + ".") for p in made):
                module = model.get_submodule(key)
                first = next(p for p, m in model.named_modules() if m is module)
                raise ValueError(f"SLLConfig: {key!r} is another name of the submodule {first!r} of "
                                 f"{type(model).__name__}, and no call of it was made by that name (a module "
                                 f"reached by iterating a container, or through a list, is named by its first path)"
                                 f"\nFix: use {first!r} (every call of it)")

    def skipped_modules(self, model: nn.Module) -> list[nn.Module]:
        """The submodules of ``model`` that ``skip`` names (by qualified name or type)."""
        if not self.skip:
            return []
        return [m for path, m in model.named_modules() if path and
                any(key == path if isinstance(key, str) else isinstance(m, key) for key in self.skip)]

    # -- what applies to one node ---------------------------------------------------------
    def is_disabled(self, kind: str) -> bool:
        return kind in self.disabled or any(kind in KIND_GROUPS.get(g, ()) for g in self.disabled)

    def is_skipped(self, stack: list[tuple[str, type]]) -> bool:
        return any(_matches(key, stack) for key in self.skip)

    def eps_for(self, kind: str, stack: list[tuple[str, type]]) -> float | str:
        """eps for a node of ``kind`` created inside the modules ``stack`` (outermost first); ``"auto"``
        when that is the default and no ``kind_eps``/``module_eps`` entry covers the node."""
        found = _lookup(self.module_eps, stack)
        if found is not None:
            return found
        if kind in self.kind_eps:
            return self.kind_eps[kind]
        group = next((g for g, kinds in KIND_GROUPS.items() if kind in kinds and g in self.kind_eps), None)
        return self.kind_eps[group] if group else self.eps

    def mode_for(self, stack: list[tuple[str, type]]) -> str:
        found = _lookup(self.module_mode, stack)
        return self.mode if found is None else found


_EXAMPLES = {"kind_eps": "{'round': 0.1}", "module_eps": "{'encoder': 0.1}", "module_mode": "{'encoder': 'hard'}",
             "disabled": "{'round', 'gt'}", "skip": "('encoder', nn.LayerNorm)"}


def _mapping(name: str, value) -> Mapping:
    """``value`` of the dict field ``name``; a list of pairs (or another non-mapping) is a TypeError with the fix
    (it raised "'list' object has no attribute 'items'")."""
    if isinstance(value, Mapping):
        return value
    raise TypeError(f"SLLConfig: {name} must be a dict, got {type(value).__name__} {value!r}\nFix: {name}="
                    + (repr(dict(value)) if _pairs(value) else _EXAMPLES[name]))


def _pairs(value) -> bool:
    try:
        dict(value)
        return not isinstance(value, (str, bytes))
    except (TypeError, ValueError):
        return False


def _names(name: str, value) -> tuple:
    """``disabled``/``skip`` as a tuple: a single string (or, for ``skip``, a single module type) is one name, not
    the letters it iterates to (``disabled="round"`` was the unknown kinds 'r', 'o', ...)."""
    if isinstance(value, str) or (name == "skip" and isinstance(value, type)):
        return (value,)
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(f"SLLConfig: {name} must be a collection of names, got {type(value).__name__} {value!r}\n"
                        f"Fix: {name}={_EXAMPLES[name]}") from None


def _key(k: ModuleKey) -> str:
    return repr(k) if isinstance(k, str) else k.__name__


def _within(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + ".")


def _matches(key: ModuleKey, stack) -> bool:
    if isinstance(key, str):
        return key == "" or any(_within(path, key) for path, _ in stack)
    return any(isinstance(t, type) and issubclass(t, key) for _, t in stack)


def _lookup(table: Mapping, stack):
    if not table:
        return None
    by_name = [(len(k), v) for k, v in table.items()  # ("": the root, every node; a top-level one has no stack)
               if isinstance(k, str) and (k == "" or any(_within(p, k) for p, _ in stack))]
    if by_name:
        return max(by_name, key=lambda kv: kv[0])[1]
    for _, t in reversed(stack):  # innermost first
        for k, v in table.items():
            if isinstance(k, type) and isinstance(t, type) and issubclass(t, k):
                return v
    return None


