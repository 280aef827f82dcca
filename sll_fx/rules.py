"""The rule table: one declarative entry per discrete op.

An entry lists the graph spellings that mean the op (``call_function`` targets such
as ``torch.sign`` or ``aten.sign.default``, and ``call_method`` names such as
``"sign"``), the sll op it becomes and the hard op that ``export_hard`` puts back.
Both passes read this table and nothing else, so they cannot drift apart: adding an
op is adding an entry (plus its surrogate in ``kernels.py``/``ops.py``).

An entry's ``pattern`` says what the match looks like around the node:

- ``elementwise``: the node alone (``torch.sign(x)``);
- ``cast``: a comparison whose bool result is cast to a floating dtype (``(x > t).float()``);
  bools carry no gradient, so only the cast uses are rewritten (``FLOAT_CASTS``);
- ``mask``: ``torch.where(c, a, b)`` / ``x.masked_fill(c, v)`` whose ``c`` is a comparison:
  the comparison becomes ``sll.compare`` and the selection ``sll.select`` (a blend);
- ``onehot``: ``one_hot(argmax(x, dim), n)`` (or argmin) becomes ``sll.argmax_onehot``;
- ``topk``: ``zeros_like(x).scatter(dim, topk(x, k, dim).indices, 1.0)`` (also ``scatter_``)
  becomes ``sll.topk_mask``.

``emit_hard`` builds an sll node's hard counterpart; it is the inverse of the rewrite.  It speaks
the graph's own level: for an sll node whose target is an ``OpOverload`` (how ``torch.export`` writes it:
``sll.round.eps_tensor``, ``sll.compare.Scalar_eps_tensor``, ... for a linearized model, whose eps are
buffers; ``sll.round.default``, ``sll.compare.Scalar``, ... for an explicit op with a float eps) the hard op is
the aten overload (``aten.round.default``, ``aten.gt.Scalar``, ``aten.where.ScalarOther``, ...), always one of
the rule's own ``functions``; for an ``OpOverloadPacket`` target (what ``linearize_module`` writes) it is the
torch-level call.

The aten-level spellings (``torch.export``'s graphs) are matched too: each rule lists its aten
overloads among ``functions``, and ``ATEN_CASTS`` / ``ATEN_PIECES`` name the aten spellings of
the pieces around a match (``.float()`` is ``aten.to.dtype`` or ``aten._to_copy.default``, ``.to(x)``
is ``aten.to.device``, ``argmax``/``topk``/``zeros_like`` their aten overloads), which
:mod:`sll_fx.exported` rewrites to the torch-level spellings the linearize pass reads.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch._ops import OpOverload
from torch.fx import Node

from .ops import SLL_OPS

aten = torch.ops.aten


_ABSENT = object()


def operand(node: Node, position: int, name: str):
    """A call's operand at ``position`` or keyword ``name`` (aten schemas call ``input`` ``self``), else _ABSENT."""
    if len(node.args) > position:
        return node.args[position]
    if name in node.kwargs:
        return node.kwargs[name]
    if name == "input" and "self" in node.kwargs:
        return node.kwargs["self"]
    return _ABSENT


@dataclass(frozen=True)
class Rule:
    kind: str                                  # the name reports and configs use: "sign", "gt", ...
    sll_op: str                                # key of ops.SLL_OPS: torch.ops.sll.<sll_op>
    hard: Callable                             # what export_hard puts back
    functions: tuple = ()                      # call_function targets meaning this op
    methods: tuple[str, ...] = ()              # call_method names meaning this op
    inplace: tuple[str, ...] = ()              # in-place spellings, found and reported: an elementwise rule's is
                                               # rewritten out of place on a fresh temporary (passes/_plan.py,
                                               # _plan_in_place), else left hard, as gt_ and masked_fill_ always are
                                               # (Tensor method names; the same names are the aten overloads' and,
                                               # where torch has them, the functions': x.round_(), aten.round_,
                                               # torch.round_(x))
    operands: tuple[str, ...] = ("input",)     # tensor operands, by position or by these keyword names
    required: int | None = None                # how many of them a call must pass (None: all)
    keywords: tuple[tuple[str, Any], ...] = () # (name, default) carried from the hard call to the sll op
    cmp: str | None = None                     # comparisons: sll::compare's cmp argument
    pattern: str = "elementwise"               # see the module docstring
    select_op: str | None = None               # mask rules: sll::select's op ("where", "masked_fill")

    @property
    def target(self):
        return SLL_OPS[self.sll_op]

    @property
    def needs_float_cast(self) -> bool:
        return self.pattern == "cast"

    @property
    def discriminator(self):
        """What tells this rule's sll nodes from other rules' nodes of the same sll op."""
        return self.cmp if self.pattern == "cast" else self.select_op

    def matches(self, node: Node) -> bool:
        val = node.meta.get("val")  # a fake-tensor trace's value: a comparison of sizes gives a SymBool
        if val is not None and not isinstance(val, torch.Tensor):
            return False
        if node.op == "call_function":
            found = any(node.target is f for f in self.functions)
        else:
            found = node.op == "call_method" and node.target in self.methods
        return found and self._carries_operands(node)

    def _carries_operands(self, node: Node) -> bool:
        """Does the call pass every operand (the one-argument ``torch.where(cond)`` is another function)?"""
        kwargs = node.kwargs
        return all(len(node.args) > i or name in kwargs or (name == "input" and "self" in kwargs)
                   for i, name in enumerate(self.operands[:self.required]))

    @property
    def inplace_functions(self) -> tuple:
        """The torch functions among the in-place spellings: ``torch.round_``, ``torch.fix_``, ... (those torch has)."""
        return tuple(f for name in self.inplace if (f := getattr(torch, name, None)) is not None)

    def matches_inplace(self, node: Node) -> bool:
        if node.op == "call_function":  # aten.round_.default, ...: the same names as aten overloads
            t = node.target
            if isinstance(t, OpOverload):
                return t.namespace == "aten" and t._opname in self.inplace
            return any(t is f for f in self.inplace_functions)  # torch.round_(x)
        return node.op == "call_method" and node.target in self.inplace

    # -- reading a matched hard node ------------------------------------------------
    def operand_values(self, node: Node) -> tuple:
        """The tensor operands of a hard call, positional or keyword (``input=``, ``other=``; aten
        schemas call ``input`` ``self``, in any position: ``aten.where.self(condition, self, other)``)."""
        out = []
        for i, name in enumerate(self.operands):
            value = operand(node, i, name)
            if value is _ABSENT:
                raise KeyError(name)
            out.append(value)
        return tuple(out)

    def keyword_values(self, node: Node) -> dict:
        vals = {}
        for j, (name, default) in enumerate(self.keywords):
            pos = len(self.operands) + j
            vals[name] = node.args[pos] if len(node.args) > pos else node.kwargs.get(name, default)
        return vals

    def unsupported_arguments(self, node: Node) -> list[str]:
        """Arguments this rule cannot carry over (``out=``, extra positionals): the node stays hard."""
        known = set(self.operands) | {k for k, _ in self.keywords} | {"self"}
        extra = [k for k in node.kwargs if k not in known]
        if len(node.args) > len(self.operands) + len(self.keywords):
            extra.append(f"{len(node.args)} positional arguments")
        return extra

    # -- building the replacement and the inverse -------------------------------------
    def sll_call(self, node: Node, eps: float, mode: str) -> tuple[tuple, dict]:
        args = self.operand_values(node) + ((self.cmp,) if self.cmp else ())
        kwargs = {"eps": eps, "mode": mode}
        kwargs.update({k: v for (k, d), v in zip(self.keywords, self.keyword_values(node).values()) if v != d})
        return args, kwargs

    def hard_call(self, sll_node: Node) -> tuple[Callable, tuple, dict]:
        """Elementwise and cast rules: the one hard call that replaces ``sll_node`` (at its graph's level)."""
        args = sll_node.args[:len(self.operands)]
        kwargs = {k: sll_node.kwargs[k] for k, d in self.keywords if sll_node.kwargs.get(k, d) != d}
        return (self.aten_hard(args, kwargs) if is_aten_level(sll_node) else self.hard), args, kwargs

    def aten_hard(self, args: tuple, kwargs: dict) -> OpOverload:
        """Elementwise and cast rules: the aten overload of the hard op for these arguments."""
        packet = getattr(aten, self.hard.__name__)  # torch.round -> aten.round, torch.gt -> aten.gt
        if self.pattern == "cast":
            op = packet.Tensor if isinstance(args[1], (Node, torch.Tensor)) else packet.Scalar
        else:
            op = packet.decimals if kwargs.get("decimals") else packet.default
        assert op in self.functions, f"{op} is not a spelling of rule {self.kind!r}"  # the table stays the source
        return op

    def emit_hard(self, graph, sll_node: Node) -> Node:
        """Insert, before ``sll_node``, the hard node(s) it stands for; return the one that replaces it.

        At the graph's level: aten overloads for an ``OpOverload`` target (an exported graph),
        torch-level calls otherwise.
        """
        at_aten = is_aten_level(sll_node)
        call = graph.call_function
        with graph.inserting_before(sll_node):  # one node per call: insertion order is graph order
            if self.pattern == "mask":
                s, a, b = sll_node.args
                if self.select_op == "masked_fill":
                    if at_aten:
                        return call(aten.masked_fill.Tensor if isinstance(a, Node) else aten.masked_fill.Scalar,
                                    (b, s, a))
                    return graph.call_method("masked_fill", (b, s, a))
                if at_aten:
                    op = {(True, True): aten.where.self, (False, True): aten.where.ScalarSelf,
                          (True, False): aten.where.ScalarOther, (False, False): aten.where.Scalar}[
                        (isinstance(a, Node), isinstance(b, Node))]
                    return call(op, (s, a, b))
                return call(torch.where, (s, a, b))
            if self.pattern == "onehot":
                x, dim, n = sll_node.args
                largest = sll_node.kwargs.get("largest", True)
                if at_aten:
                    idx = call(aten.argmax.default if largest else aten.argmin.default, (x, dim))
                    return call(aten.one_hot.default, (idx, n))
                idx = call(torch.argmax if largest else torch.argmin, (x, dim))
                return call(torch.nn.functional.one_hot, (idx, n))
            if self.pattern == "topk":
                x, k, dim = sll_node.args
                largest = sll_node.kwargs.get("largest", True)
                if at_aten:
                    zeros = call(aten.zeros_like.default, (x,))
                    top = call(aten.topk.default, (x, k, dim, largest))
                    idx = call(operator.getitem, (top, 1))
                    return call(aten.scatter.value, (zeros, dim, idx, 1.0))
                zeros = call(torch.zeros_like, (x,))
                top = call(torch.topk, (x, k, dim), {"largest": largest})
                idx = call(operator.getitem, (top, 1))
                return graph.call_method("scatter", (zeros, dim, idx, 1.0))
            fn, args, kwargs = self.hard_call(sll_node)
            return call(fn, args, kwargs)


def is_aten_level(sll_node: Node) -> bool:
    """Is this sll node written as an ``OpOverload`` (``torch.export``'s spelling: ``sll.round.eps_tensor``,
    ``sll.round.default``)?"""
    return isinstance(sll_node.target, OpOverload)


def _unary(kind, hard, *, aten_ops=(), keywords=(), methods=None):
    methods = (kind,) if methods is None else methods
    return Rule(kind=kind, sll_op=kind, hard=hard, functions=(hard, *aten_ops), methods=methods,
                inplace=tuple(m + "_" for m in methods), keywords=keywords)


def _comparison(cmp, functions, methods, aten_ops):
    alias = {"gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal"}[cmp]
    aten_ops = (*aten_ops, getattr(aten, alias).Scalar, getattr(aten, alias).Tensor)
    return Rule(kind=cmp, sll_op="compare", hard=getattr(torch, cmp), cmp=cmp, pattern="cast",
                functions=(getattr(operator, cmp), *functions, *aten_ops), methods=methods,
                inplace=tuple(m + "_" for m in methods), operands=("input", "other"))


RULES: tuple[Rule, ...] = (
    _unary("sign", torch.sign, aten_ops=(aten.sign.default,)),
    _unary("round", torch.round, aten_ops=(aten.round.default, aten.round.decimals), keywords=(("decimals", 0),)),
    _unary("floor", torch.floor, aten_ops=(aten.floor.default,)),
    _unary("ceil", torch.ceil, aten_ops=(aten.ceil.default,)),
    Rule(kind="trunc", sll_op="trunc", hard=torch.trunc, functions=(torch.trunc, torch.fix, aten.trunc.default,
                                                                    aten.fix.default),
         methods=("trunc", "fix"), inplace=("trunc_", "fix_")),
    Rule(kind="heaviside", sll_op="heaviside", hard=torch.heaviside, functions=(torch.heaviside, aten.heaviside.default),
         methods=("heaviside",), inplace=("heaviside_",), operands=("input", "values")),
    _comparison("gt", (torch.gt, torch.greater), ("gt", "greater"), (aten.gt.Scalar, aten.gt.Tensor)),
    _comparison("ge", (torch.ge, torch.greater_equal), ("ge", "greater_equal"), (aten.ge.Scalar, aten.ge.Tensor)),
    _comparison("lt", (torch.lt, torch.less), ("lt", "less"), (aten.lt.Scalar, aten.lt.Tensor)),
    _comparison("le", (torch.le, torch.less_equal), ("le", "less_equal"), (aten.le.Scalar, aten.le.Tensor)),
    # selections: operands[0]/the "mask" operand must come from a comparison (see passes/linearize.py)
    Rule(kind="where", sll_op="select", hard=torch.where, pattern="mask", select_op="where",
         functions=(torch.where, aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar),
         operands=("condition", "input", "other")),
    Rule(kind="where", sll_op="select", hard=torch.where, pattern="mask", select_op="where",
         methods=("where",), operands=("input", "condition", "other")),
    Rule(kind="masked_fill", sll_op="select", hard=torch.masked_fill, pattern="mask", select_op="masked_fill",
         functions=(torch.masked_fill, aten.masked_fill.Scalar, aten.masked_fill.Tensor), methods=("masked_fill",),
         inplace=("masked_fill_",), operands=("input", "mask", "value")),
    Rule(kind="argmax_onehot", sll_op="argmax_onehot", hard=torch.nn.functional.one_hot, pattern="onehot",
         functions=(torch.nn.functional.one_hot, aten.one_hot.default), operands=("input", "num_classes"),
         required=1),
    Rule(kind="topk_mask", sll_op="topk_mask", hard=torch.Tensor.scatter, pattern="topk",
         functions=(torch.scatter, aten.scatter.value), methods=("scatter", "scatter_"),
         operands=("input", "dim", "index", "value")),
)

COMPARISONS = ("gt", "ge", "lt", "le")

#: equality has no jump to linearize (it is a spike of measure zero): found and reported, left hard
NO_JUMP = {"eq": ((operator.eq, torch.eq, aten.eq.Scalar, aten.eq.Tensor), "eq"),
           "ne": ((operator.ne, torch.ne, aten.ne.Scalar, aten.ne.Tensor), "ne")}


@dataclass(frozen=True)
class Unlisted:
    """A discrete op with no rule (no sll op): found, reported and left hard, so that the report tells why
    no gradient crosses it, and how to write it so that it is linearized (``fix``) where there is a way.

    Reported only where it matters: a ``jumps`` operand is known to be floating (an integer division of
    integers jumps nowhere) and a gradient reaches it (``passes/_plan.py``, ``_plan_unlisted``).
    """
    kind: str                                  # a name for it: "div_floor", "bucketize", ...
    why: str                                   # what is lost: "its gradient is zero almost everywhere"
    fix: str = ""                              # the spelling that is linearized, when there is one
    functions: tuple = ()                      # call_function targets (torch, operator, aten overloads)
    methods: tuple[str, ...] = ()              # call_method names
    modules: tuple[type, ...] = ()             # torch.nn leaf modules (call_module): their input is args[0]
    jumps: tuple[tuple[int, str], ...] = ((0, "input"),)  # the operands it jumps in: (position, keyword)
    keyword: tuple[str, tuple] | None = None   # (name, values): only calls passing one of these values
    indices: bool = False                      # only calls whose indices are read: ``[1]`` or ``.indices`` of
                                               # a (values, indices) result (max/min with a literal dim, sort)

    def selects(self, node: Node) -> bool:
        """Does this call pass ``keyword`` (``rounding_mode='floor'``)?  (A plain ``torch.div`` is no jump.)
        With ``indices``: are its indices read?  (``torch.max(h, -1).values`` has a gradient; ``torch.max(a, b)``
        is elementwise.)"""
        if self.indices and not _reads_indices(node):
            return False
        if self.keyword is None:
            return True
        name, values = self.keyword
        return node.kwargs.get(name) in values

    def jump_operands(self, node: Node) -> list:
        """The values of the ``jumps`` operands this call passes (aten calls the input ``self``)."""
        return [v for i, name in self.jumps if (v := operand(node, i, name)) is not _ABSENT]

    def reason(self, spelling: str) -> str:
        shown = spelling + (f"({self.keyword[0]}={self.keyword[1][0]!r})" if self.keyword else "") + \
            ("(...).indices" if self.indices else "")
        return f"no SLL rule for {shown}: left hard ({self.why})" + (f"; {self.fix}" if self.fix else "")


def _reads_indices(node: Node) -> bool:
    """Is output 1 (the indices) of ``node``'s (values, indices) result read?  Not for a tensor ``dim`` operand
    (``torch.max(a, b)``: an elementwise maximum, a tensor, whose ``[1]`` is a row)."""
    if isinstance(operand(node, 1, "dim"), Node):
        return False
    return any(u.op == "call_function" and u.args[:1] == (node,) and u.users and
               ((u.target is operator.getitem and u.args[1:2] == (1,)) or
                (u.target is getattr and u.args[1:2] == ("indices",)))
               for u in node.users)


_F = torch.nn.functional
_STEP = "a step function: its gradient is zero almost everywhere"
_SAWTOOTH = "a sawtooth: its jumps pass no gradient"
_BOTH = ((0, "input"), (1, "other"))
_ORDER = "an integer result: no gradient crosses the indices"
_TOPK_FIX = ("for a top-k mask, write torch.zeros_like(h).scatter(dim, torch.topk(h, k, dim).indices, 1.0) "
             "to have it linearized")

#: discrete ops outside the rule table (``RULES``): found, reported, left hard.  In-place spellings too
#: (``x.remainder_(s)``): they are hard either way.
UNLISTED: tuple[Unlisted, ...] = (
    Unlisted("div_floor", _STEP, "write torch.floor(h / s) to have it linearized", jumps=_BOTH,
             functions=(torch.div, torch.divide, aten.div.Tensor_mode, aten.div.Scalar_mode, aten.div_.Tensor_mode,
                        aten.div_.Scalar_mode),
             methods=("div", "divide", "div_", "divide_"), keyword=("rounding_mode", ("floor",))),
    Unlisted("div_trunc", _STEP, "write torch.trunc(h / s) to have it linearized", jumps=_BOTH,
             functions=(torch.div, torch.divide, aten.div.Tensor_mode, aten.div.Scalar_mode, aten.div_.Tensor_mode,
                        aten.div_.Scalar_mode),
             methods=("div", "divide", "div_", "divide_"), keyword=("rounding_mode", ("trunc",))),
    Unlisted("floor_divide", _STEP, "write torch.floor(h / s) to have it linearized", jumps=_BOTH,
             functions=(operator.floordiv, operator.ifloordiv, torch.floor_divide, aten.floor_divide.default,
                        aten.floor_divide.Scalar, aten.floor_divide_.Tensor, aten.floor_divide_.Scalar),
             methods=("floor_divide", "floor_divide_", "__floordiv__", "__rfloordiv__", "__ifloordiv__")),
    Unlisted("remainder", _SAWTOOTH, "write h - s * torch.floor(h / s) to have it linearized", jumps=_BOTH,
             functions=(operator.mod, operator.imod, torch.remainder, aten.remainder.Tensor, aten.remainder.Scalar,
                        aten.remainder.Scalar_Tensor, aten.remainder_.Tensor, aten.remainder_.Scalar),
             methods=("remainder", "remainder_", "__mod__", "__rmod__", "__imod__")),
    Unlisted("fmod", _SAWTOOTH, "write h - s * torch.trunc(h / s) to have it linearized", jumps=_BOTH,
             functions=(torch.fmod, aten.fmod.Tensor, aten.fmod.Scalar, aten.fmod_.Tensor, aten.fmod_.Scalar),
             methods=("fmod", "fmod_")),
    Unlisted("frac", _SAWTOOTH, "write h - torch.trunc(h) to have it linearized",
             functions=(torch.frac, torch.frac_, aten.frac.default, aten.frac_.default), methods=("frac", "frac_")),
    Unlisted("signbit", "a bool result: no gradient reaches its input",
             "write (h < 0).float() to have it linearized (it differs at -0.0)",
             functions=(torch.signbit, aten.signbit.default), methods=("signbit",)),
    Unlisted("copysign", "its jumps where `other` changes sign pass no gradient to `other`",
             "write input.abs() * torch.sign(other) to have it linearized (it differs where other == 0)",
             functions=(torch.copysign, aten.copysign.Tensor, aten.copysign.Scalar, aten.copysign_.Tensor,
                        aten.copysign_.Scalar),
             methods=("copysign", "copysign_"), jumps=((1, "other"),)),
    Unlisted("bucketize", "an integer result: its gradient is zero almost everywhere",
             "write (h.unsqueeze(-1) > boundaries).float().sum(-1) (>= for right=True) to have it linearized",
             functions=(torch.bucketize, aten.bucketize.Tensor, aten.bucketize.Scalar),
             jumps=((0, "input"), (1, "boundaries"))),
    Unlisted("searchsorted", "an integer result: its gradient is zero almost everywhere",
             "for a 1-D sorted_sequence, write (values.unsqueeze(-1) > sorted_sequence).float().sum(-1) "
             "(>= for right=True) to have it linearized",
             functions=(torch.searchsorted, aten.searchsorted.Tensor, aten.searchsorted.Scalar),
             jumps=((0, "sorted_sequence"), (1, "input"))),
    Unlisted("threshold", "its jump at the threshold passes no gradient",
             "write torch.where(h > threshold, h, value) to have it linearized",
             functions=(_F.threshold, _F.threshold_, torch.threshold, torch.threshold_, aten.threshold.default,
                        aten.threshold_.default),
             modules=(torch.nn.Threshold,)),
    Unlisted("hardshrink", "its jumps at -lambd and lambd pass no gradient",
             "write torch.where(h.abs() > lambd, h, 0.0) to have it linearized",
             functions=(_F.hardshrink, torch.hardshrink, aten.hardshrink.default), methods=("hardshrink",),
             modules=(torch.nn.Hardshrink,)),
    # selections spelled without argmax/topk (the rules match one_hot(argmax) and scatter(topk(...).indices) only)
    Unlisted("max_indices", _ORDER, "for a one-hot, write F.one_hot(h.argmax(dim), n) to have it linearized",
             functions=(torch.max, aten.max.dim), methods=("max",), indices=True),
    Unlisted("min_indices", _ORDER, "for a one-hot, write F.one_hot(h.argmin(dim), n) to have it linearized",
             functions=(torch.min, aten.min.dim), methods=("min",), indices=True),
    Unlisted("sort_indices", _ORDER, _TOPK_FIX, functions=(torch.sort, aten.sort.default, aten.sort.stable),
             methods=("sort",), indices=True),
    Unlisted("argsort", _ORDER, _TOPK_FIX, functions=(torch.argsort, aten.argsort.default, aten.argsort.stable),
             methods=("argsort",)),
)


def _unlisted_tables() -> tuple[dict, dict, dict]:
    """``UNLISTED`` by spelling: function ids, method names, module types -> the entries spelled so."""
    functions: dict[int, tuple] = {}
    methods: dict[str, tuple] = {}
    modules: dict[type, tuple] = {}
    for u in UNLISTED:
        for f in dict.fromkeys(u.functions):  # (F.hardshrink is torch.hardshrink)
            functions[id(f)] = functions.get(id(f), ()) + (u,)
        for m in u.methods:
            methods[m] = methods.get(m, ()) + (u,)
        for t in u.modules:
            modules[t] = modules.get(t, ()) + (u,)
    return functions, methods, modules


#: keyed by ``id`` for functions, as ``Rule.matches`` compares them by identity (the table keeps them alive)
UNLISTED_FUNCTIONS, UNLISTED_METHODS, UNLISTED_MODULES = _unlisted_tables()


def match_unlisted(node: Node, module: torch.nn.Module | None = None) -> Unlisted | None:
    """The ``UNLISTED`` entry spelled by this node (``module``: a ``call_module`` node's module), or None."""
    if node.op == "call_function":
        found = UNLISTED_FUNCTIONS.get(id(node.target), ())
    elif node.op == "call_method":
        found = UNLISTED_METHODS.get(node.target, ())
    elif node.op == "call_module" and module is not None:
        return next(iter(UNLISTED_MODULES.get(type(module), ())), None)
    else:
        return None
    return next((u for u in found if u.selects(node)), None)


# Casts that turn a comparison's bool into floats: method name -> dtype (None: given by an argument)
FLOAT_CASTS: dict[str, torch.dtype | None] = {
    "float": torch.float32, "double": torch.float64, "half": torch.float16, "bfloat16": torch.bfloat16,
    "to": None, "type": None, "type_as": None,
}


# --- aten-level spellings of the pieces around a match (torch.export's graphs) ------------------
# sll_fx.exported.canonicalize rewrites them into the torch-level spellings above before the
# linearize pass; each rewrite computes exactly what the aten call did.

#: casts of a comparison's bool: aten op -> the Tensor method it is (``.float()`` exports as
#: ``aten.to.dtype(b, torch.float32)``, ``.to(x)`` / ``.to(x.device, torch.float32)`` as
#: ``aten.to.device(b, device, torch.float32)``, both as ``aten._to_copy.default(b, dtype=..., device=...)``
#: after decompositions; ``.type_as(x)`` as ``aten.type_as.default``).  Which of them cast to a floating
#: dtype (and not only move the bool, ``.to(x.device)``) is read from their arguments: ``exported._cast_call``
ATEN_CASTS = {aten.to.dtype: "to", aten.to.device: "to", aten.to.dtype_layout: "to", aten.to.other: "to",
              aten._to_copy.default: "to", aten.type_as.default: "type_as"}

#: the other pieces: aten op -> its torch-level spelling (a function, or a Tensor method name)
ATEN_PIECES = {aten.argmax.default: torch.argmax, aten.argmin.default: torch.argmin, aten.topk.default: torch.topk,
               aten.zeros_like.default: torch.zeros_like, aten.scatter_.value: "scatter_", aten.mul.Tensor: torch.mul}

#: what export inserts before a cast to pin its input's dtype; linearizing and stripping change such
#: dtypes on purpose (a comparison's bool becomes the float surrogate and back), so both passes drop them
ATEN_METADATA_ASSERTS = (aten._assert_tensor_metadata.default,)


def match(node: Node) -> Rule | None:
    """The rule whose spellings include this node (out-of-place spellings only)."""
    op = node.op
    if op == "call_function":
        candidates = _BY_FUNCTION.get(id(node.target), ())
    elif op == "call_method":
        try:
            candidates = _BY_METHOD.get(node.target, ())
        except TypeError:  # (an unhashable target: every rule, as Rule.matches reads it)
            candidates = RULES
    else:
        return None
    return next((r for r in candidates if r.matches(node)), None)


def _spelled(key) -> dict:
    """The rules (in :data:`RULES`' order) by each of their spellings: ``key(rule)`` -> (rule's keys); a rule that
    spells a node otherwise never matches it, so :func:`match` tries only these."""
    found: dict = {}
    for r in RULES:
        for k in key(r):
            if r not in found.setdefault(k, []):
                found[k].append(r)
    return {k: tuple(v) for k, v in found.items()}


#: the rules whose ``functions`` hold a target, by the target's id (``Rule.matches`` compares them by identity), and
#: those whose ``methods`` hold a method name
_BY_FUNCTION = _spelled(lambda r: [id(f) for f in r.functions])
_BY_METHOD = _spelled(lambda r: r.methods)


def match_inplace(node: Node) -> Rule | None:
    return next((r for r in RULES if r.matches_inplace(node)), None)


def match_no_jump(node: Node) -> str | None:
    for name, (functions, method) in NO_JUMP.items():
        if (node.op == "call_function" and any(node.target is f for f in functions)) or \
           (node.op == "call_method" and node.target == method):
            return name
    return None


#: the kinds a config may name, and the groups that stand for several
KINDS = tuple(dict.fromkeys(r.kind for r in RULES))
KIND_GROUPS = {"compare": ("gt", "ge", "lt", "le"), "select": ("where", "masked_fill")}

#: argmax/argmin spellings feeding one_hot: target or method name -> largest
ARGMAX = {torch.argmax: True, "argmax": True, torch.argmin: False, "argmin": False}
TOPK = (torch.topk, "topk")


def sll_op_name(target) -> str:
    """``"round"`` for torch.ops.sll.round and torch.ops.sll.round.default."""
    name = getattr(target, "_qualified_op_name", None) or getattr(target, "_name", str(target))
    return name.split("::")[-1].split(".")[0]


def for_sll_node(node: Node) -> Rule:
    """The rule that produced an sll node (its inverse): by op name and discriminator (cmp, select op)."""
    op = sll_op_name(node.target)
    if op == "compare":
        key = node.args[2] if len(node.args) > 2 else node.kwargs.get("cmp")
    elif op == "select":
        key = node.kwargs.get("op", "where")
    else:
        key = None
    for r in RULES:
        if r.sll_op == op and r.discriminator == key:
            return r
    raise LookupError(f"no rule strips sll.{op} ({key!r})")


def describe_target(node: Node) -> str:
    """How the hard op is spelled in the source: ``torch.sign``, ``Tensor.round``, ``x > t``."""
    t = node.target
    if node.op == "call_method":
        return f"Tensor.{t}"
    if getattr(t, "__module__", None) == "_operator":
        symbol = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "eq": "==", "ne": "!="}.get(t.__name__)
        if symbol:
            return f"x {symbol} t"
        symbol = {"floordiv": "//", "mod": "%", "ifloordiv": "//=", "imod": "%="}.get(t.__name__)
        return f"x {symbol} y" if symbol else f"operator.{t.__name__}"
    if isinstance(t, torch._ops.OpOverload):
        return f"{t.namespace}.{t._opname}.{t._overloadname}"
    mod = getattr(t, "__module__", "") or ""
    if mod == "torch.nn.functional" and t.__name__.startswith("_") and getattr(_F, t.__name__[1:], None) is t:
        return f"F.{t.__name__[1:]}"  # F.threshold is torch.nn.functional._threshold
    return f"torch.{t.__name__}" if mod.startswith("torch") else f"{mod}.{getattr(t, '__name__', t)}"
