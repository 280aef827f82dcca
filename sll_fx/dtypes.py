"""What a node's dtype is, as far as the graph tells: ``"float"``, ``"int"``, ``"bool"`` or unknown.

The linearize pass needs this for one decision: an op whose input is known to be an
integer or a bool has no gradient to give, so it is left hard and reported.  Without
``example_inputs`` the answer comes from the graph alone (parameters and buffers,
casts, comparisons, argmax, promotion of arithmetic); with them, from a run of
``ShapeProp`` on fake tensors.  Unknown stays unknown: such nodes are rewritten, and
the sll ops themselves return the exact hard result for non-floating inputs.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import GraphModule, Node

FLOAT, INT, BOOL = "float", "int", "bool"

PROMOTE = "promote"  # the kind of a call is the promotion of its arguments' kinds

# call_function targets and call_method names -> the kind they produce
_FUNCTIONS: dict = {
    **dict.fromkeys((operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne, operator.invert,
                     torch.gt, torch.ge, torch.lt, torch.le, torch.eq, torch.ne, torch.isnan, torch.isinf,
                     torch.isfinite, torch.logical_and, torch.logical_or, torch.logical_not), BOOL),
    **dict.fromkeys((torch.argmax, torch.argmin, torch.bucketize, torch.searchsorted,
                     torch.nn.functional.one_hot), INT),
    **dict.fromkeys((operator.truediv, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.sqrt, torch.softmax,
                     torch.div, torch.nn.functional.softmax, torch.nn.functional.sigmoid), FLOAT),
    **dict.fromkeys((operator.add, operator.sub, operator.mul, operator.neg, operator.abs, torch.add, torch.sub,
                     torch.mul, torch.abs, torch.neg, torch.relu, torch.clamp, torch.maximum, torch.minimum,
                     torch.where, torch.sign, torch.round, torch.floor, torch.ceil, torch.trunc), PROMOTE),
}
_METHODS: dict = {
    **dict.fromkeys(("float", "double", "half", "bfloat16"), FLOAT),
    **dict.fromkeys(("long", "int", "short", "char", "byte"), INT),
    **dict.fromkeys(("bool", "gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal",
                     "logical_and", "logical_or", "logical_not", "isnan", "isinf", "isfinite"), BOOL),
    **dict.fromkeys(("argmax", "argmin", "argsort"), INT),
    **dict.fromkeys(("sigmoid", "tanh", "exp", "log", "sqrt", "softmax", "div", "mean"), FLOAT),
    **dict.fromkeys(("add", "sub", "mul", "abs", "neg", "relu", "clamp", "clip", "sum", "view", "reshape", "flatten",
                     "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "expand", "detach", "clone",
                     "round", "floor", "ceil", "trunc", "sign"), PROMOTE),
}
_PASS_THROUGH_MODULES = (torch.nn.Identity, torch.nn.Flatten, torch.nn.Dropout, torch.nn.ReLU)


def dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return BOOL
    return FLOAT if (dtype.is_floating_point or dtype.is_complex) else INT


def _value_kind(v, kinds: dict) -> str | None:
    if isinstance(v, Node):
        return kinds.get(v)
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, float):
        return FLOAT
    if isinstance(v, int):
        return INT
    if isinstance(v, torch.dtype):
        return dtype_kind(v)
    return None


def _promote(args: list, kinds: dict) -> str | None:
    found = [_value_kind(a, kinds) for a in args if not isinstance(a, (tuple, list, str))]
    if FLOAT in found:
        return FLOAT
    if None in found or not found:
        return None
    return INT if INT in found else BOOL


def _cast_kind(node: Node, args: list, kinds: dict) -> str | None:
    """``.to(dtype)`` / ``.to(device)`` / ``.to(other)`` / ``.to(x.dtype)`` / ``.type_as(other)``."""
    rest = args[1:]
    dtypes = [a for a in rest if isinstance(a, torch.dtype)]
    if dtypes:
        return dtype_kind(dtypes[0])
    if node.target == "to" and rest and all(isinstance(a, (str, torch.device)) for a in rest):
        return _value_kind(args[0], kinds)
    return kinds.get(rest[0]) if rest and isinstance(rest[0], Node) else None


def _kind_of(gm: GraphModule, node: Node, kinds: dict) -> str | None:
    args = list(node.args) + list(node.kwargs.values())
    if node.op == "get_attr":
        value = _fetch(gm, node.target)
        return dtype_kind(value.dtype) if isinstance(value, torch.Tensor) else None
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        params = list(mod.parameters())
        if params and all(p.is_floating_point() for p in params):
            return FLOAT
        return _value_kind(args[0], kinds) if isinstance(mod, _PASS_THROUGH_MODULES) and args else None
    if node.op == "call_method":
        if node.target in ("to", "type_as"):
            return _cast_kind(node, args, kinds)
        kind = _METHODS.get(node.target)
    elif node.op == "call_function":
        if node.target is getattr and args[1:] == ["dtype"]:
            return _value_kind(args[0], kinds)  # x.dtype "has the kind" of x, so .to(x.dtype) resolves
        kind = _FUNCTIONS.get(node.target) if _hashable(node.target) else None
    else:
        return None
    return _promote(args, kinds) if kind == PROMOTE else kind


def _from_graph(gm: GraphModule) -> dict[Node, str | None]:
    kinds: dict[Node, str | None] = {}
    for node in gm.graph.nodes:
        kinds[node] = _kind_of(gm, node, kinds)
    return kinds


def _hashable(target) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def _fetch(gm: GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def infer_kinds(gm: GraphModule, example_inputs: tuple | None = None) -> dict[Node, str | None]:
    """Map every node to ``"float"``, ``"int"``, ``"bool"`` or ``None`` (unknown)."""
    if example_inputs is None:
        return _from_graph(gm)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._dispatch.python import enable_python_dispatcher
    from torch.fx import Interpreter
    from torch.fx.passes.shape_prop import ShapeProp

    from .opaque import is_opaque

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in example_inputs]
    class _Stop(Exception):
        pass

    class _Prop(ShapeProp):
        def run_node(self, n):
            if n.op == "call_module" and is_opaque(self.fetch_attr(n.target)):
                try:  # a trial run first: ShapeProp prints the traceback of any failure
                    with self.fake_mode, enable_python_dispatcher():
                        Interpreter.run_node(self, n)
                except Exception as e:
                    raise _Stop() from e
            return super().run_node(n)

    for node in gm.graph.nodes:
        node.meta.pop("tensor_meta", None)
    try:
        _Prop(gm, fake_mode=mode).propagate(*fake)
        stopped = False
    except _Stop:
        # an opaque submodule (sll_fx.opaque) may not run on fake tensors (`if x.sum() > 0:`):
        # the kinds the run found up to it, the graph's own inference after that
        stopped = True
    kinds = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if hasattr(meta, "dtype"):
            kinds[node] = dtype_kind(meta.dtype)
        else:
            kinds[node] = _kind_of(gm, node, kinds) if stopped else None
    return kinds
