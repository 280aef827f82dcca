"""How a node reads a value: the linearize pass's use analysis.

A rewritten result is fractional inside its band.  Float arithmetic on it is what the surrogate
is for; any other use (an index, a bool op, an integer cast, an op left hard) keeps reading the
hard result.  ``_use_kind`` answers for one (user, value) pair: float, pass (views and copies,
followed to their users), meta (shape, dtype) or other.  ``_cast_to`` tells a cast's kind,
``_carries`` arithmetic that carries a 0/1 value on (``1 - m``), and ``_is_float_cast``,
``_moved_to_float`` and ``_mask_factor`` the float uses of a comparison.  ``_is_detach``,
``_mutated`` and ``_writes_first`` find detaches and in-place writes.  The planner
(``_plan.py``) puts these answers together per node.
"""

from __future__ import annotations

import functools
import operator

import torch
from torch._ops import OpOverload, OpOverloadPacket
from torch.fx import Node

from sll_fx import dtypes, grad_regions, rules
from sll_fx.ops import is_sll_target

from ._patterns import _arg, _pattern_inputs
from ._spellings import _match, _nodes_in, _op_name, _target_name

_INT_KINDS = (dtypes.INT, dtypes.BOOL)


def _is_float_cast(user: Node, node: Node, kinds: dict, comparison: Node | None = None) -> bool:
    """Does ``user`` turn the boolean ``node`` into floats? (``.float()``, ``.to(torch.float32)``, ``.type_as(x)``;
    not a device move, ``.to(x.device)``, which keeps the bool).  ``comparison``: the comparison ``node`` moved
    (default ``node`` itself), whose operands tell ``.to(x.dtype)`` when x's kind is not known."""
    if user.op != "call_method" or user.target not in rules.FLOAT_CASTS or not user.args or user.args[0] is not node:
        return False
    if rules.FLOAT_CASTS[user.target] is not None:
        return True
    rest = list(user.args[1:]) + [v for k, v in user.kwargs.items() if k != "device"]
    for a in rest:
        if isinstance(a, torch.dtype):
            return a.is_floating_point
        if isinstance(a, str) and user.target == "type":
            return any(w in a for w in ("Float", "Double", "Half", "BFloat16"))
        if isinstance(a, Node) and not dtypes.is_device(a):
            kind = kinds.get(a)
            if kind is not None:
                return kind == dtypes.FLOAT
            source = a.args[0] if (a.op == "call_function" and a.target is getattr) else a
            return source in (comparison or node).args  # .to(x.dtype) / .type_as(x), x an operand of the comparison
    return False


def _moved_to_float(user: Node, node: Node, kinds: dict) -> bool:
    """``(x > t).to(x.device).float()``: is ``user`` a device move of the boolean ``node`` (``.to(device)``,
    ``.cpu()``, ``.cuda()``) whose every use is a float cast of it?  Then it moves the surrogate's floats
    as it moved the bool, and counts as the cast (a move with another use keeps the bool: left hard)."""
    if user.op != "call_method" or not user.args or user.args[0] is not node or not user.users:
        return False
    if user.target == "to":
        rest = [*user.args[1:], *(v for k, v in user.kwargs.items() if k not in ("non_blocking", "copy"))]
        if not rest or not all(dtypes.is_device(a) for a in rest):
            return False
    elif user.target not in ("cpu", "cuda"):
        return False
    return all(_is_float_cast(w, user, kinds, comparison=node) for w in user.users)


def _mask_factor(user: Node, node: Node, kinds: dict):
    """For ``x * (x > t)`` (either order): the float factor ``x``, else None.

    Only when ``x`` is known to be floating, or is an operand of the comparison (an integer
    ``x`` then makes sll.compare return the hard result): the product keeps ``x``'s dtype.
    """
    is_mul = (user.op == "call_function" and user.target in (operator.mul, torch.mul)) or \
             (user.op == "call_method" and user.target == "mul")
    if not is_mul or len(user.args) != 2 or user.kwargs:
        return None
    a, b = user.args
    other = b if a is node else a if b is node else None
    if isinstance(other, float):
        return torch.get_default_dtype()  # (x > t) * 1.0 is a float of the default dtype
    if not isinstance(other, Node) or other is node:
        return None
    if kinds.get(other) == dtypes.FLOAT or (other in node.args and kinds.get(other) not in _INT_KINDS):
        return other
    return None


# --- how a value is used ------------------------------------------------------------------------
# A rewritten result is fractional inside the band (in linear mode).  Float arithmetic on it is what the
# surrogate is for: the gradient passes.  Any other use (indexing, ~, logical ops, ==, an integer cast,
# nonzero, ...) passes no gradient and would only see the fractional values: it keeps reading the hard
# result, or, when every use is such, the node stays hard.  Rather than list the bool/integer uses, the
# pass lists the float ones; a use it does not know counts as not float (the forward stays exact).
_FLOAT_USE, _PASS_USE, _META_USE, _OTHER_USE = "float", "pass", "meta", "other"

#: names (Tensor methods, torch / torch.nn.functional / operator functions, aten ops) that read a value as a
#: bool or an integer (the other reads are float arithmetic)
_BOOL_NAMES = frozenset((
    "invert", "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "logical_not", "logical_and",
    "logical_or", "logical_xor", "and_", "or_", "xor", "__and__", "__or__", "__xor__", "__invert__",
    "eq", "ne", "__eq__", "__ne__", "equal", "isin", "any", "all", "count_nonzero", "nonzero", "argwhere",
    "argmax", "argmin", "argsort", "searchsorted", "bucketize", "histc", "bincount", "unique",
    "unique_consecutive",
))
#: the value moves on unchanged (a view, a copy, a move, a concatenation): its own users tell
_PASS_NAMES = frozenset((
    "view", "view_as", "reshape", "reshape_as", "_unsafe_view", "_reshape_alias", "flatten", "unflatten", "ravel",
    "squeeze", "unsqueeze", "permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "expand",
    "expand_as", "broadcast_to", "repeat", "tile", "repeat_interleave", "contiguous", "clone", "detach", "alias",
    "lift_fresh_copy", "narrow", "select", "slice", "diagonal", "tril", "triu", "flip", "fliplr", "flipud", "roll",
    "rot90", "chunk", "split", "split_with_sizes", "tensor_split", "unbind", "cat", "concat", "concatenate", "stack",
    "hstack", "vstack", "dstack", "cpu", "cuda", "pad", "constant_pad_nd", "diag", "diag_embed", "pixel_shuffle",
    "pixel_unshuffle",
    "gather", "index_select", "take_along_dim",   # as the tensor read (as the index: an integer use)
))
#: only the value's shape, dtype or device is read
_META_NAMES = frozenset((
    "size", "dim", "ndimension", "numel", "nelement", "stride", "is_contiguous", "element_size", "get_device",
    "is_floating_point", "sym_size", "sym_numel", "sym_stride", "sym_storage_offset", "_assert_tensor_metadata",
    "zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "new_zeros", "new_ones",
    "new_empty", "new_full",
))
_PASS_ATTRS = ("T", "mT", "H", "mH", "data", "real")
_META_ATTRS = ("shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout", "names")
_CAST_METHODS = {"float": dtypes.FLOAT, "double": dtypes.FLOAT, "half": dtypes.FLOAT, "bfloat16": dtypes.FLOAT,
                 "bool": dtypes.BOOL, "long": dtypes.INT, "int": dtypes.INT, "short": dtypes.INT,
                 "char": dtypes.INT, "byte": dtypes.INT}


def _cast_to(user: Node, value: Node, kinds: dict) -> str | None:
    """For a dtype cast of ``value``: the kind it casts to (dtypes.FLOAT / INT / BOOL), or ``"move"`` for a
    device move or a dtype the graph does not tell but ``value``'s own (``.to(x.dtype)``, ``value`` computed
    from ``x``), ``UNKNOWN_CAST`` for the dtype of another tensor of unknown kind (``.to(idx.dtype)``: maybe an
    integer one); None when ``user`` is no cast."""
    if user.op == "call_method":
        if user.target in _CAST_METHODS:
            return _CAST_METHODS[user.target]
        if user.target not in ("to", "type", "type_as"):
            return None
        name = user.target
    elif user.op == "call_function" and isinstance(user.target, OpOverload) and user.target in rules.ATEN_CASTS:
        name = rules.ATEN_CASTS[user.target]
        val, before = user.meta.get("val"), value.meta.get("val")
        if isinstance(val, torch.Tensor):
            same = isinstance(before, torch.Tensor) and before.dtype == val.dtype
            return "move" if same else dtypes.dtype_kind(val.dtype)
    else:
        return None
    rest = list(user.args[1:]) + [v for k, v in user.kwargs.items() if k in ("dtype", "other")]
    for a in rest:
        if isinstance(a, torch.dtype):
            return dtypes.dtype_kind(a)
        if isinstance(a, str) and name == "type":
            return dtypes.FLOAT if any(w in a for w in ("Float", "Double", "Half", "BFloat16")) else \
                dtypes.BOOL if "Bool" in a else dtypes.INT
        if isinstance(a, Node) and not dtypes.is_device(a):  # .to(x.dtype), .type_as(x), .to(x): x's kind
            kind = kinds.get(a)
            if kind is not None:
                return kind
            source = a.args[0] if (a.op == "call_function" and a.target is getattr and a.args) else a
            # x unknown: value's own dtype when value is computed from x (round(x * 4).to(x.dtype)); else
            # (idx.dtype, another input's) it may be an integer one: not a float use
            return "move" if _computed_from(value, source, kinds) else UNKNOWN_CAST
    return "move"


UNKNOWN_CAST = "unknown"  # _cast_to: a cast to the dtype of a tensor whose kind the graph does not tell


def _computed_from(value: Node, source: Node, kinds: dict) -> bool:
    """Is ``value`` ``source`` itself, or computed from it: ``source`` is one of its operands (a pattern's
    ``x`` too: ``one_hot(argmax(x), n)``) or reached back from them through nodes of unknown kind (which
    keep its dtype, as far as the graph tells: ``x`` in ``round(x * 4)``) or discrete ops (whose surrogate
    is of their operand's dtype: ``x`` in ``(x > t).cpu()``), within ``_MASK_DEPTH`` steps?"""
    if value is source:
        return True
    seen, frontier = set(), list(_pattern_inputs(value))
    for _ in range(_MASK_DEPTH):
        following = []
        for n in frontier:
            if n is source:
                return True
            if n not in seen and (kinds.get(n) is None or _match(n) is not None):
                seen.add(n)
                following += n.all_input_nodes
        frontier = following
    return False


def _use_kind(user: Node, value: Node, kinds: dict) -> str:
    """How ``user`` reads ``value``: _FLOAT_USE (float arithmetic: a gradient passes), _PASS_USE (the value
    moves on unchanged: a view, a copy, a float cast, a device move; its users tell), _META_USE (its shape,
    dtype or device), or _OTHER_USE (a bool or integer use: indexing with it, ~, logical ops, comparisons,
    an integer cast, nonzero, argmax, ...: ``_BOOL_NAMES``; whatever else reads it is float arithmetic).
    What the call's target settles is ``_target_use`` (once per target); the rest depends on which argument
    ``value`` is."""
    op = user.op
    if op in ("output", "call_module"):  # returned, or given to a submodule: a float use
        return _FLOAT_USE
    if op not in ("call_function", "call_method"):
        return _OTHER_USE
    t = user.target
    try:
        static = _target_use(op, t)
    except TypeError:  # (an unhashable callable)
        static = _static_use(op, t, _op_name(user))
    if static is not None:
        return _arith(user, value, kinds) if static is _ARITH else static
    if t is getattr:
        attr = user.args[1] if len(user.args) > 1 else None
        return _PASS_USE if attr in _PASS_ATTRS else _META_USE if attr in _META_ATTRS else _OTHER_USE
    if t is operator.getitem:  # x[...]: as the indexed tensor it moves on; as an index it is a bool use
        return _PASS_USE if user.args[0] is value and value not in _nodes_in(user.args[1:]) else _OTHER_USE
    if t is operator.setitem:  # x[i] = value: a copy of the value (as the index: a bool use)
        return _OTHER_USE if value in _nodes_in(user.args[1:2]) else _FLOAT_USE
    cast = _cast_to(user, value, kinds)
    if cast is not None:
        return _PASS_USE if cast in (dtypes.FLOAT, "move") else _OTHER_USE
    name = _op_name(user)
    if name not in _INDEXING_NAMES:  # a call that is no cast after all (.to(memory_format=...)): by its name
        static = _static_use("call_method", None, name)
        return _arith(user, value, kinds) if static is _ARITH else static
    if name in ("gather", "index_select", "take_along_dim"):
        return _PASS_USE if _arg(user, 0, "input") is value and value not in _nodes_in(user.args[1:]) else _OTHER_USE
    if name in ("where", "masked_fill", "masked_select", "masked_scatter"):  # the condition / mask: a bool
        if name == "where":                                                  # use; the data: a float one
            condition = _arg(user, 1 if user.op == "call_method" else 0, "condition")
        else:
            condition = _arg(user, 1, "mask")
        return _OTHER_USE if value in _nodes_in((condition,)) else _FLOAT_USE
    # scatter, index_put, ...: as the index an integer use; as the data a float one
    index = _arg(user, 1 if name in ("index_put", "take", "put") else 2, "index" if name != "index_put" else "indices")
    return _OTHER_USE if value in _nodes_in((index,)) else _FLOAT_USE


_ARITH = "arith"  # _target_use: float arithmetic, or integer arithmetic on an integer result (the kinds tell)


def _arith(user: Node, value: Node, kinds: dict) -> str:
    """An _ARITH use: integer arithmetic on an integer result (an uncast one_hot: cumsum, * a bool mask, .sum(0))
    moves on, and its own users tell (a count compared with a capacity: hard; divided into a fraction: float); the
    integer op itself then reads the hard result, or the surrogate where that is float.  Else float arithmetic."""
    return _PASS_USE if kinds.get(value) in _INT_KINDS and kinds.get(user) in _INT_KINDS else _FLOAT_USE
#: calls whose use kind depends on which argument is read (_use_kind reads it)
_INDEXING_NAMES = frozenset(("gather", "index_select", "take_along_dim", "where", "masked_fill", "masked_select",
                             "masked_scatter", "scatter", "scatter_add", "scatter_reduce", "index_put", "index_copy",
                             "index_add", "index_fill", "put", "take"))


@functools.lru_cache(maxsize=1024)  # (a graph calls few targets, many times)
def _target_use(op: str, t) -> str | None:
    """``_static_use`` of a call of ``t`` (``op``: call_function or call_method), made once per target."""
    return _static_use(op, t, _target_name(op == "call_method", t))


def _static_use(op: str, t, name: str | None) -> str | None:
    """What ``_use_kind`` answers for any call of ``t`` (``name``: its ``_op_name``), whichever of its arguments is
    read: a use kind, or _ARITH; None where it depends on the arguments (a cast, an index, a condition, an
    attribute)."""
    if op == "call_function":
        if is_sll_target(t):  # an explicit sll op (sll.select's mask is a float)
            return _FLOAT_USE
        if t is getattr or t is operator.getitem or t is operator.setitem or (
                isinstance(t, OpOverload) and t in rules.ATEN_CASTS):
            return None
    elif t in _CAST_METHODS:
        return _PASS_USE if _CAST_METHODS[t] in (dtypes.FLOAT, "move") else _OTHER_USE
    elif t in ("to", "type", "type_as"):
        return None
    if name in _META_NAMES:
        return _META_USE
    if name in _INDEXING_NAMES:
        return None
    if name in _PASS_NAMES:
        return _PASS_USE
    # a bool/integer reading (logical ops, ==, indices of it, counts of nonzeros), else float arithmetic:
    # PyTorch ops and anything else (a wrapped function of yours, another library's op) get a float
    return _OTHER_USE if name in _BOOL_NAMES else _ARITH


#: arithmetic that carries its operand's values on (scaled, shifted, clamped, summed, blended): a bool or
#: integer use of its result reads them as it would read the operand (``(1 - m).bool()``, ``(2 * m).long()``,
#: ``round(h).clamp(0, 3).long()``, ``(1 - m) * a + m * b`` then ``.long()``): see _Planner._read_as_mask
_CARRY_NAMES = frozenset(("add", "sub", "rsub", "mul", "truediv", "div", "neg", "negative", "pos", "clamp",
                          "clip", "clamp_min", "clamp_max", "abs", "absolute", "relu", "sum", "nansum", "cumsum",
                          "prod", "cumprod", "amax", "amin", "max", "min", "maximum", "minimum", "fmax", "fmin",
                          "where", "masked_fill"))
#: bool/integer uses that read only the order of the values (not as a mask): see _Planner._read_as_mask
_ORDER_NAMES = frozenset(("argmax", "argmin", "argsort", "sort", "topk", "kthvalue", "searchsorted", "bucketize",
                          "histc"))
_MASK_DEPTH = 8  # how many views and such functions _read_as_mask follows


def _carries(user: Node, value: Node) -> bool:
    """Does ``user`` carry ``value``'s values on (``_CARRY_NAMES``: ``1 - m``, ``r.clamp(0, 3)``, ``r.sum(-1)``,
    ``a * m``; ``where``/``masked_fill``'s data, not its condition)?"""
    return user.op in ("call_function", "call_method") and _op_name(user) in _CARRY_NAMES and \
        user in value.users  # (value is one of user's inputs: a dict lookup)
_DETACH_FUNCTIONS = (torch.detach, torch.Tensor.detach, torch.ops.aten.detach.default, torch.detach_,
                     torch.Tensor.detach_, torch.ops.aten.detach_.default, grad_regions.detached)
_INPLACE_OPERATORS = (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.imatmul, operator.ipow, operator.ifloordiv, operator.imod, operator.iand,
                      operator.ior, operator.ixor)


_DETACH_SET = frozenset(_DETACH_FUNCTIONS)
_INPLACE_SET = frozenset(_INPLACE_OPERATORS)
#: the same, called as methods (``h.__setitem__(m, 0.0)``, ``h.__iadd__(1)``)
_INPLACE_DUNDERS = frozenset(f"__{f.__name__}__" for f in _INPLACE_OPERATORS)
_PURE_OPERATORS = frozenset((operator.add, operator.sub, operator.mul, operator.truediv, operator.neg,
                             operator.getitem, getattr, operator.gt, operator.lt, operator.ge, operator.le))


def _is_detach(node: Node) -> bool:
    if node.op == "call_method":
        return node.target in ("detach", "detach_")
    if node.op == "call_function":
        if node.target is getattr:
            return node.args[1:2] == ("data",)
        try:
            return node.target in _DETACH_SET
        except TypeError:  # an unhashable callable
            return False
    return False


def _mutated(node: Node, memo: dict | None = None) -> list[Node]:
    """What an in-place call writes into: its first argument (``x.add_(y)``, ``x[i] = y``, ``x += y``,
    ``aten.add_.Tensor``), an ``out=`` tensor.  (Erring towards a write only adds ways to the output.)
    ``memo``: (op, target) -> whether it writes its first argument, for a sweep over a whole graph."""
    if node.op not in ("call_function", "call_method"):
        return []
    t = node.target
    try:
        if t in _PURE_OPERATORS:  # (most nodes of a traced graph: a quick answer)
            return []
        inplace = memo.get((node.op, t)) if memo is not None else None
    except TypeError:  # an unhashable callable
        inplace = None
    if inplace is None:
        inplace = _writes_first(node.op, t)
        if memo is not None and dtypes.hashable(t):
            memo[(node.op, t)] = inplace
    written = [node.args[0]] if inplace and node.args and isinstance(node.args[0], Node) else []
    out = node.kwargs.get("out")
    return written if out is None else written + [n for n in _nodes_in((out,)) if n not in written]


def _writes_first(op: str, t) -> bool:
    """Does a call of ``t`` write into its first argument (an in-place spelling)?"""
    if op == "call_method":
        name = t
    elif isinstance(t, OpOverload):
        name = t._opname
    elif isinstance(t, OpOverloadPacket):
        name = t._qualified_op_name.split("::")[-1]
    else:
        name = getattr(t, "__name__", "")
    return (isinstance(name, str) and name.endswith("_") and not name.startswith("__")) or (
        dtypes.hashable(t) and t in _INPLACE_SET) or op == "call_method" and name in _INPLACE_DUNDERS
