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

_CAST_METHODS = {"float": FLOAT, "double": FLOAT, "half": FLOAT, "bfloat16": FLOAT,
                 "long": INT, "int": INT, "short": INT, "char": INT, "byte": INT, "bool": BOOL}
_BOOL_OPS = {operator.gt, operator.ge, operator.lt, operator.le, operator.eq, operator.ne,
             operator.invert, torch.gt, torch.ge, torch.lt, torch.le, torch.eq, torch.ne, torch.isnan,
             torch.isinf, torch.isfinite, torch.logical_and, torch.logical_or, torch.logical_not}
_BOOL_METHODS = {"gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal",
                 "logical_and", "logical_or", "logical_not", "isnan", "isinf", "isfinite"}
_INT_OPS = {torch.argmax, torch.argmin, torch.bucketize, torch.searchsorted}
_INT_METHODS = {"argmax", "argmin", "argsort"}
_FLOAT_OPS = {operator.truediv, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.sqrt, torch.softmax,
              torch.nn.functional.softmax, torch.nn.functional.sigmoid, torch.div, torch.rand_like, torch.randn_like}
_FLOAT_METHODS = {"sigmoid", "tanh", "exp", "log", "sqrt", "softmax", "div", "mean"}
_ARITH = {operator.add, operator.sub, operator.mul, operator.neg, operator.abs, torch.add, torch.sub, torch.mul,
          torch.abs, torch.neg, torch.relu, torch.clamp, torch.maximum, torch.minimum, torch.where}
_ARITH_METHODS = {"add", "sub", "mul", "abs", "neg", "relu", "clamp", "clip", "sum", "view", "reshape",
                  "flatten", "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "expand", "detach",
                  "clone", "round", "floor", "ceil", "trunc", "sign"}


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


def _promote(kinds_in: list) -> str | None:
    if FLOAT in kinds_in:
        return FLOAT
    if None in kinds_in or not kinds_in:
        return None
    return INT if INT in kinds_in else BOOL


def _from_graph(gm: GraphModule) -> dict[Node, str | None]:
    kinds: dict[Node, str | None] = {}
    for node in gm.graph.nodes:
        args = list(node.args) + list(node.kwargs.values())
        k = None
        if node.op == "get_attr":
            v = _fetch(gm, node.target)
            k = dtype_kind(v.dtype) if isinstance(v, torch.Tensor) else None
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            params = [p for p in mod.parameters(recurse=True)]
            if params and all(p.is_floating_point() for p in params):
                k = FLOAT
            elif isinstance(mod, (torch.nn.Identity, torch.nn.Flatten, torch.nn.Dropout, torch.nn.ReLU)) and args:
                k = _value_kind(args[0], kinds)
        elif node.op == "call_method":
            name = node.target
            if name in _CAST_METHODS:
                k = _CAST_METHODS[name]
            elif name == "to":  # .to(dtype) / .to(device) / .to(other) / .to(x.dtype)
                rest = args[1:]
                dts = [a for a in rest if isinstance(a, torch.dtype)]
                if dts:
                    k = dtype_kind(dts[0])
                elif rest and all(isinstance(a, (str, torch.device)) for a in rest):
                    k = _value_kind(args[0], kinds)
                elif rest and isinstance(rest[0], Node):
                    k = kinds.get(rest[0])
            elif name == "type_as":
                k = _value_kind(args[1], kinds) if len(args) > 1 else None
            elif name in _BOOL_METHODS:
                k = BOOL
            elif name in _INT_METHODS:
                k = INT
            elif name in _FLOAT_METHODS:
                k = FLOAT
            elif name in _ARITH_METHODS:
                k = _promote([_value_kind(a, kinds) for a in args if not isinstance(a, (tuple, list, str))])
        elif node.op == "call_function":
            t = node.target
            if t is getattr and len(args) == 2 and args[1] == "dtype":
                k = _value_kind(args[0], kinds)  # x.dtype "has the kind" of x, so .to(x.dtype) resolves
            elif t in _BOOL_OPS:
                k = BOOL
            elif t in _INT_OPS:
                k = INT
            elif t in _FLOAT_OPS:
                k = FLOAT
            elif t in _ARITH or getattr(t, "__name__", "") in ("sign", "round", "floor", "ceil", "trunc"):
                k = _promote([_value_kind(a, kinds) for a in args if not isinstance(a, (tuple, list, str))])
            elif t is torch.nn.functional.one_hot:
                k = INT
        kinds[node] = k
    return kinds


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
    from torch.fx.passes.shape_prop import ShapeProp

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    fake = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in example_inputs]
    ShapeProp(gm, fake_mode=mode).propagate(*fake)
    kinds = {}
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        kinds[node] = dtype_kind(meta.dtype) if hasattr(meta, "dtype") else None
    return kinds
