"""Dynamic mode: SLL for code that cannot be traced, as a context manager or a decorator.

``sll_fx.linearize(eps=...)`` is the seed package's ``sll_core.linearize`` on top of
``torch.overrides.TorchFunctionMode`` (nothing in ``torch.*`` is patched)::

    with sll_fx.linearize(eps=0.1):
        y = torch.round(x)                  # -> torch.ops.sll.round(x, eps=0.1)

    @sll_fx.linearize(eps=1e-2)             # on a function, a method, a staticmethod/classmethod
    def gate(x, t):
        return (x > t).float() * x.sign()   # -> sll.compare(x, t, "gt") and sll.sign(x)

Inside the block every call that the rule table (:data:`sll_fx.rules.RULES`) knows --
the same functions and method names that the graph pass rewrites, ``x > t`` and
``0.5 < x`` included, not its ``aten`` overloads (see :func:`_torch_level`) -- runs as its sll op with the
block's ``eps`` and ``mode``, so the results and gradients of those ops are the graph mode's
(``sll_fx.linearize_module``) on the same code.
Like the graph pass, it leaves hard: calls whose input is not floating (integers, bools),
calls with arguments the rule cannot carry (``out=``).

An in-place spelling of an elementwise rule (the rule's ``inplace`` names: ``t.round_()``, ``torch.round_(t)``,
``floor_``, ``ceil_``, ``trunc_``/``fix_``, ``sign_``, ``heaviside_``) runs as ``t.copy_(<sll op>(copy of t))`` and
returns ``t``, so its aliases see the written values and the gradient reaches what ``t`` held, where the block can
see at the call that ``t`` is an intermediate of the autograd graph (:func:`_intermediate`: grad mode on, floating,
``requires_grad`` with a ``grad_fn``, not a view).  The graph pass rewrites them where the tensor is a fresh
temporary (``passes/_plan.py``, ``_fresh_temporary``), which a block cannot tell from one shared by a module's
attribute: it writes the surrogate's values there too, as the in-place op writes its own.  A leaf, a parameter or a
buffer, a view, anything under ``torch.no_grad()`` (where, in ``mode="linear"``, the out-of-place spelling gives the
surrogate's values), the in-place comparisons (``x.gt_(0)``) and ``masked_fill_`` get the hard op
(tests/test_dynamic_inplace.py).

Comparisons return their ordinary bool tensor, and the block remembers (weakly, per
block) which comparison made it.  When that bool is cast to a floating dtype inside the
block (the casts of :data:`sll_fx.rules.FLOAT_CASTS`: ``.float()``, ``.double()``,
``.half()``, ``.to(float dtype)``, ``.to(x.dtype)``, ``.to(x)``, ``.type(...)``,
``.type_as(x)``), the cast is applied to the ``torch.ops.sll.compare`` surrogate instead:
exactly the graph pass's rewrite.  ``x * (x > t)`` (a float tensor times such a bool, either
order, ``torch.mul``/``Tensor.mul``) is read as ``x * (x > t).to(dtype)``, as the graph pass
reads it (``passes/_uses.py``, ``_mask_factor``): both modes linearize it.  Any other use of the bool
(indexing, ``masked_select``, ``torch.where``, logical ops) stays boolean and hard.
The rules whose match is a pattern of several calls in the graph (``where``/``masked_fill`` on a
comparison, ``one_hot(argmax(x))``, top-k masks) are the graph pass's only: a block runs those
calls as written (hard), where ``linearize_module`` blends them.  A cast
after the block, or after the comparison's operands or the bool were changed in place,
is the ordinary cast.

Blocks nest (the innermost ``eps``/``mode`` wins) and re-enter (a decorated function may
recurse; one ``linearize`` object may be entered again while it is active); leaving a block,
by return or by exception, restores whatever was active before.  Only the thread that
entered a block sees it.  Keep the optimizer step outside the block: inside it,
``torch.sign`` in an optimizer (Rprop) would be linearized as well.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import operator
import threading
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from . import rules
from .errors import EpsError, SLLError
from .config import _number
from .ops import DEFAULT_EPS, check_eps, check_mode

__all__ = ["linearize", "Linearize", "SLLFunctionMode"]


# --- what the mode intercepts, read from the rule table -------------------------------

class _Call:
    """A call's ``args``/``kwargs`` in the shape :class:`~sll_fx.rules.Rule` reads from an fx
    node (``.args``, ``.kwargs``), so operands, keywords, unsupported arguments and the sll
    call come from the rule's own readers, as in the graph pass."""

    __slots__ = ("args", "kwargs")

    def __init__(self, args: tuple, kwargs: dict):
        self.args, self.kwargs = tuple(args), dict(kwargs)


_RULE, _INPLACE, _CAST, _MUL = "rule", "inplace", "cast", "mul"

#: spellings of a product that dynamic mode reads as ``x * (x > t).to(dtype)`` (not in the rule table;
#: the graph pass reads the same product in ``passes/_uses.py``, ``_mask_factor``)
_MUL_NAMES = ("mul", "multiply", "__mul__", "__rmul__")


def _torch_level(f: Callable) -> Callable | None:
    """What TorchFunctionMode receives for a rule-table function target, None for one a block leaves alone.

    ``operator.gt`` (an fx spelling of ``x > t``) arrives as ``Tensor.__gt__`` or, as in
    current torch, as ``Tensor.gt`` (listed among the rule's methods); ``0.5 < x`` arrives
    already reflected, as ``gt(x, 0.5)``.  ``torch.*`` functions arrive as themselves.  ``aten``
    overloads (the rule table's spellings for exported graphs) are not a block's: Python calls them
    where a graph of aten ops runs, and such a graph may be an sll op's own arithmetic, decomposed
    (``torch.compile`` with ``aot_eager``, ``ExportedProgram.run_decompositions()``), which a block
    would linearize again.  An exported graph is linearized by ``linearize_module``.
    """
    if isinstance(f, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return None
    name = getattr(f, "__name__", None)
    if name and getattr(operator, name, None) is f:
        return getattr(Tensor, f"__{name}__", None)
    return f


@functools.lru_cache(maxsize=1)
def _dispatch() -> Mapping[Any, tuple[str, Any]]:
    """Read-only map: the callable TorchFunctionMode receives -> (kind, rule / cast name)."""
    table: dict[Any, tuple[str, Any]] = {}
    for rule in rules.RULES:
        if rule.pattern not in ("elementwise", "cast"):  # where/masked_fill, one_hot(argmax), top-k: graph patterns
            continue
        for f in rule.functions:
            if (g := _torch_level(f)) is not None:
                table.setdefault(g, (_RULE, rule))
        for m in rule.methods:
            if (g := getattr(Tensor, m, None)) is not None:
                table.setdefault(g, (_RULE, rule))
        if rule.pattern == "elementwise":  # x.round_(), torch.round_(x); not x.gt_(0) nor masked_fill_ (graph mode's)
            for g in (*(getattr(Tensor, m, None) for m in rule.inplace), *rule.inplace_functions):
                if g is not None:
                    table.setdefault(g, (_INPLACE, rule))
    for name in rules.FLOAT_CASTS:
        if (g := getattr(Tensor, name, None)) is not None:
            table.setdefault(g, (_CAST, name))
    for name in _MUL_NAMES:
        for owner in (torch, Tensor):
            if (g := getattr(owner, name, None)) is not None:
                table.setdefault(g, (_MUL, name))
    return MappingProxyType(table)


def _lookup(func) -> tuple[str, Any] | None:
    try:
        return _dispatch().get(func)
    except TypeError:  # an unhashable callable: nothing of ours
        return None


def _describe(func) -> str:
    name = getattr(func, "__name__", repr(func))
    owner = getattr(func, "__objclass__", None)  # Tensor methods: method descriptors of TensorBase
    return f"Tensor.{name}" if owner is not None and issubclass(owner, torch._C.TensorBase) else f"torch.{name}"


_FLOAT_TYPE_NAMES = ("Float", "Double", "Half", "BFloat16")


def _casts_to_float(name: str, args: tuple, kwargs: dict) -> bool:
    """Does this cast of a bool give floats? (``.float()``, ``.to(torch.float32)``, ``.to(x)``, ``.type_as(x)``)"""
    if rules.FLOAT_CASTS[name] is not None:
        return rules.FLOAT_CASTS[name].is_floating_point
    for a in (*args[1:], *kwargs.values()):
        if isinstance(a, torch.dtype):
            return a.is_floating_point
        if isinstance(a, Tensor):  # .to(other), .type_as(other)
            return a.is_floating_point()
        if name == "type" and isinstance(a, str):  # .type("torch.FloatTensor")
            return any(w in a for w in _FLOAT_TYPE_NAMES)
        if isinstance(a, type) and isinstance(getattr(a, "dtype", None), torch.dtype):  # .type(torch.FloatTensor)
            return a.dtype.is_floating_point
    return False  # .to("cpu"), .type() (returns a string), ...


def _intermediate(t) -> bool:
    """May a block write an sll op's values into ``t`` in place (``t.round_()``)?  Only where it can see, at the call,
    that ``t`` is a float intermediate of the autograd graph: made by an op that records a gradient (not a leaf, a
    parameter or a buffer, whose state would take the linearized values) and not a view (its base would).  Anything
    else, and everything under ``torch.no_grad()`` (no gradient to gain), gets the hard op."""
    return (isinstance(t, Tensor) and torch.is_grad_enabled() and t.is_floating_point() and t.requires_grad
            and t.grad_fn is not None and t._base is None)


def _keeps_shape(operands: tuple) -> bool:
    """Do the operands broadcast to the shape of the first, which the op writes?  (Else ``t.heaviside_(values)`` raises
    torch's own error: the hard op runs.)"""
    try:
        return torch.broadcast_shapes(*(v.shape for v in operands)) == operands[0].shape
    except RuntimeError:
        return False


# --- the mode ---------------------------------------------------------------------------

def _version(v) -> int | None:
    return v._version if isinstance(v, Tensor) else None


@dataclass(frozen=True, eq=False)
class _Origin:
    """The comparison a bool tensor came from, and the versions of everything it read."""
    rule: rules.Rule
    call: _Call
    versions: tuple            # (bool, operand, operand, ...) ._version at comparison time

    def fresh(self, b: Tensor) -> bool:
        return self.versions == (b._version, *(_version(v) for v in self.rule.operand_values(self.call)))


class SLLFunctionMode(TorchFunctionMode):
    """The ``TorchFunctionMode`` behind one ``with sll_fx.linearize(...)`` block.

    One instance per entered block; it remembers the comparisons made in it (weakly: an
    entry goes when its bool tensor goes, and all go with the block's mode object).
    """

    def __init__(self, eps: float, mode: str):
        super().__init__()
        self.eps, self.mode = eps, mode
        self._origins: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refusal = (  # (made here: torch.compile traces the raise, and fails on an f-string there)
            f"sll_fx.linearize(eps={eps!r}, mode={mode!r}) does not run under torch.compile: a block follows "
            "tensors as they run (a comparison's bool result by identity), which a compiled graph cannot\nFix: "
            "compile a linearize_module result instead (the same ops and spellings, with fullgraph=True), or keep "
            "the block out of the compiled code; without fullgraph, torch.compile runs the block's ops eagerly, as "
            "written")

    def __repr__(self) -> str:
        return f"SLLFunctionMode(eps={self.eps!r}, mode={self.mode!r})"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = _lookup(func)
        if hit is not None:
            kind, what = hit
            if kind == _RULE:
                return self._rule(func, what, args, kwargs)
            if kind == _INPLACE:
                return self._inplace(func, what, args, kwargs)
            if kind == _CAST:
                return self._cast(func, what, args, kwargs)
            return self._mul(func, args, kwargs)
        return func(*args, **kwargs)

    # -- a rule-table op: its sll op, or (comparisons) the bool, remembered ---------------
    @staticmethod
    def _read(rule: rules.Rule, args: tuple, kwargs: dict) -> tuple | None:
        """``(call, operands)`` of a call ``rule`` can carry, else None: ``out=`` or extra positionals (left hard, as
        in graph mode), a spelling the rule cannot read (the hard op runs: torch raises its own error)."""
        call = _Call(args, kwargs)
        if rule.unsupported_arguments(call):
            return None
        try:
            return call, rule.operand_values(call)
        except KeyError:
            return None

    def _rule(self, func, rule: rules.Rule, args: tuple, kwargs: dict):
        if (read := self._read(rule, args, kwargs)) is None:
            return func(*args, **kwargs)
        call, operands = read
        x = operands[0]
        if not isinstance(x, Tensor) or not x.is_floating_point():  # integer/bool data: no gradient
            return func(*args, **kwargs)
        self._not_compiling()
        if rule.needs_float_cast:
            out = func(*args, **kwargs)
            if isinstance(out, Tensor) and out.dtype == torch.bool and isinstance(operands[1], (Tensor, int, float)):
                self._origins[out] = _Origin(rule, call, (out._version, *(_version(v) for v in operands)))
            return out
        if not all(isinstance(v, Tensor) for v in operands):
            return func(*args, **kwargs)
        sll_args, sll_kwargs = rule.sll_call(call, self.eps, self.mode)
        return self._sll(func, rule, sll_args, sll_kwargs)

    # -- t.round_(), torch.round_(t): t written with the sll op's values, where t is an intermediate ------------
    def _inplace(self, func, rule: rules.Rule, args: tuple, kwargs: dict):
        if (read := self._read(rule, args, kwargs)) is None:
            return func(*args, **kwargs)
        call, operands = read
        t = operands[0]
        if not _intermediate(t) or not all(isinstance(v, Tensor) for v in operands) or not _keeps_shape(operands):
            return func(*args, **kwargs)
        self._not_compiling()
        sll_args, sll_kwargs = rule.sll_call(call, self.eps, self.mode)
        # the sll op reads copies: its backward may read what it saved, which the write changes (t, and any operand
        # that is t or a view of it, t.heaviside_(t): copied all, since a fake or functorch tensor shows no storage)
        sll_args = tuple(v.clone() if isinstance(v, Tensor) else v for v in sll_args)
        out = self._sll(func, rule, sll_args, sll_kwargs)
        return t.copy_(out)  # t itself, as the in-place op returns: its aliases see the written values

    def _sll(self, func, rule: rules.Rule, args: tuple, kwargs: dict) -> Tensor:
        try:
            return rule.target(*args, **kwargs)
        except EpsError as e:
            raise EpsError(f"sll_fx.linearize(eps={self.eps!r}, mode={self.mode!r}): at {_describe(func)}: {e}") \
                from None

    def _not_compiling(self) -> None:
        """Raise where torch.compile traces a block's op that the block would change: a trace cannot follow a
        comparison's bool by identity.  Without ``fullgraph`` torch.compile then runs the op eagerly, where the block
        works."""
        if torch.compiler.is_dynamo_compiling():  # (dynamo only: torch.export's non-strict tracing runs the block)
            raise SLLError(self._refusal)

    def _origin(self, b) -> _Origin | None:
        if not isinstance(b, Tensor) or b.dtype != torch.bool:
            return None
        self._not_compiling()
        origin = self._origins.get(b)
        return origin if origin is not None and origin.fresh(b) else None

    def _surrogate(self, func, origin: _Origin) -> Tensor:
        args, kwargs = origin.rule.sll_call(origin.call, self.eps, self.mode)
        return self._sll(func, origin.rule, args, kwargs)

    # -- (x > t).float() and the other float casts: the cast of the surrogate ------------
    def _cast(self, func, name: str, args: tuple, kwargs: dict):
        origin = self._origin(args[0]) if args else None
        if origin is None or not _casts_to_float(name, args, kwargs):
            return func(*args, **kwargs)
        return func(self._surrogate(func, origin), *args[1:], **kwargs)

    # -- x * (x > t): the product with the surrogate, in the product's own dtype ----------
    def _mul(self, func, args: tuple, kwargs: dict):
        if len(args) == 2 and not kwargs:
            for i in (0, 1):
                b, other = args[i], args[1 - i]
                floating = isinstance(other, Tensor) and other.is_floating_point() or type(other) is float
                if floating and (origin := self._origin(b)):  # ((x > t) * 2.0: the default dtype, as graph mode)
                    s = self._surrogate(func, origin).to(torch.result_type(b, other))
                    return func(*((s, other) if i == 0 else (other, s)))
        return func(*args, **kwargs)


# --- the public object: context manager and decorator -----------------------------------

#: True while sll_fx's tracer runs a forward (``linearize_module``): a block entered then raises BlockTraced
TRACED: contextvars.ContextVar[bool] = contextvars.ContextVar("sll_fx_traced", default=False)


#: the end of the reason of a module kept opaque because its forward enters a block (``export_hard`` refuses it)
BLOCK_KEPT = "kept opaque so the block's eps and mode apply"


class BlockTraced(Exception):
    """A ``sll_fx.linearize`` block entered while ``linearize_module`` traces: fx would record the ops of the block
    (a ``torch.*`` call through the mode, ``x.round()`` and ``x > t`` past it) and the graph pass would rewrite them
    with its own eps and mode.  The tracer keeps the module that entered it opaque, so the block runs as written."""

    def __init__(self, block: "Linearize"):
        super().__init__(f"enters {block!r}")
        self.block = block


class Linearize:
    """What :func:`linearize` returns: a context manager and a decorator.

    Each ``with`` (and each call of a decorated function) enters a fresh
    :class:`SLLFunctionMode`; the object itself may be entered again while active
    (recursion, reuse) and from several threads, each thread seeing only its own blocks.
    """

    def __init__(self, eps: float = DEFAULT_EPS, *, mode: str = "linear"):
        check_mode("linearize", mode)
        self.eps = check_eps("linearize", _number(eps, "sll_fx.linearize"))
        self.mode = mode
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"sll_fx.linearize(eps={self.eps!r}, mode={self.mode!r})"

    def __reduce__(self):  # (a module holding one deep-copies and pickles: a fresh object, no block entered)
        return _linearize_object, (self.eps, self.mode)

    def _stack(self) -> list[SLLFunctionMode]:
        stack = getattr(self._local, "stack", None)
        if stack is None:
            stack = self._local.stack = []
        return stack

    def __enter__(self) -> "Linearize":
        if TRACED.get():
            raise BlockTraced(self)
        mode = SLLFunctionMode(self.eps, self.mode)
        mode.__enter__()
        self._stack().append(mode)
        return self

    def __exit__(self, exc_type, exc, tb):
        return self._stack().pop().__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable) -> Callable:
        if isinstance(fn, (staticmethod, classmethod)):
            return type(fn)(self(fn.__func__))
        if not callable(fn):
            raise TypeError(f"{self!r} decorates a function or a method, got {type(fn).__name__}")
        if isinstance(fn, type):  # (a class: only its construction would run in the block, and it would become a
            # function, which no isinstance or subclass accepts)
            raise TypeError(f"{self!r} decorates a function or a method, not a class ({fn.__qualname__}): only its "
                            "construction would run in the block\nFix: decorate its forward (@sll_fx.linearize(...) "
                            "above def forward)")
        if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"{self!r} cannot decorate {getattr(fn, '__qualname__', fn)!r}: a generator or "
                            "coroutine would run outside the block; use `with sll_fx.linearize(...)` inside it")

        @functools.wraps(fn)
        def linearized(*args, **kwargs):
            with self:
                return fn(*args, **kwargs)

        linearized.sll_linearize = self
        return linearized


def _linearize_object(eps: float, mode: str) -> Linearize:
    return Linearize(eps, mode=mode)


def linearize(eps: float | Callable = DEFAULT_EPS, *, mode: str = "linear") -> Linearize | Callable:
    """Run code with every discrete op the rule table knows replaced by its SLL surrogate.

    Usable as ``with sll_fx.linearize(eps=...):``, as ``@sll_fx.linearize(eps=...)`` on a
    function or method, and bare as ``@sll_fx.linearize`` (default eps).

    Args:
        eps: band half-width, in the units of each op's own input (as in ``linearize_module``).
            It must be positive and finite (checked here); an op with a tighter limit (0.5 for
            round/floor/ceil/trunc, ``0.5 * 10**-d`` for ``round(decimals=d)``) raises
            :class:`~sll_fx.EpsError` where it is met.
        mode: ``"linear"`` (forward is the surrogate) or ``"hard"`` (forward is the hard op,
            backward the surrogate's slope).

    Raises:
        EpsError, ModeError: for a bad ``eps`` or ``mode``, before anything runs.
    """
    if callable(eps) and not isinstance(eps, (int, float)):  # bare @sll_fx.linearize
        return Linearize(mode=mode)(eps)
    return Linearize(eps, mode=mode)
