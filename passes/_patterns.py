"""The patterns whose sll op reads other nodes than the one it replaces.

A selection's branches (``where``/``masked_fill`` on a comparison: ``_select_operands``),
``one_hot(argmax(x), n)`` and ``x == x.max(dim, keepdim=True)`` (``_argmax_spelling``,
``_max_one_hot``), and a top-k mask written with ``scatter`` (``_topk_pattern``).
``_pattern_inputs`` gives what such a pattern reads: its ``x``, not the argmax or topk between.
"""

from __future__ import annotations

import operator

import torch
from torch.fx import Node

from sll_fx import rules
from sll_fx.grad_regions import detached

from ._spellings import _match, _op_name


def _select_operands(rule: rules.Rule, node: Node) -> tuple:
    values = dict(zip(rule.operands, rule.operand_values(node)))
    if rule.select_op == "masked_fill":
        return values["value"], values["input"]
    return values["input"], values["other"]


# --- reading patterns --------------------------------------------------------------------------

def _arg(node: Node, i: int, name: str, default=None):
    return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)


def _argmax_spelling(node) -> bool | None:
    """largest (True: argmax, False: argmin) when ``node`` is an argmax/argmin call, else None."""
    if not isinstance(node, Node):
        return None
    if node.op == "call_function" and node.target in (torch.argmax, torch.argmin):
        return rules.ARGMAX[node.target]
    if node.op == "call_method" and node.target in ("argmax", "argmin"):
        return rules.ARGMAX[node.target]
    return None


def _max_one_hot(node: Node) -> tuple[bool, int] | None:
    """For ``x == x.max(dim, keepdim=True).values`` (either order; ``[0]``, ``amax``, min, amin too): (largest,
    dim), an argmax one-hot spelled with ``==``; else None."""
    if len(node.args) != 2 or node.kwargs:
        return None
    for x, other in (node.args, node.args[::-1]):
        if not isinstance(other, Node) or other.op not in ("call_function", "call_method") or not other.args:
            continue
        reduced = other
        if other.op == "call_function" and ((other.target is getattr and other.args[1:] == ("values",)) or
                                            (other.target is operator.getitem and other.args[1:] == (0,))):
            reduced = other.args[0]
        if not isinstance(reduced, Node) or reduced.op not in ("call_function", "call_method"):
            continue
        name = _op_name(reduced)
        if name not in ("max", "min", "amax", "amin") or _arg(reduced, 0, "input") is not x:
            continue
        dim, keepdim = _arg(reduced, 1, "dim"), _arg(reduced, 2, "keepdim", False)
        if (reduced is other) == (name in ("max", "min")):  # max(dim) gives (values, indices); amax a tensor
            continue
        if isinstance(dim, int) and not isinstance(dim, bool) and keepdim is True:
            return name in ("max", "amax"), dim
    return None


#: reductions whose result is one of their input's elements (an order statistic)
_ORDER_STATISTICS = frozenset(("max", "min", "amax", "amin", "topk", "kthvalue", "sort", "msort", "median",
                               "nanmedian", "cummax", "cummin"))
_THROUGH = frozenset(("view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as", "flatten", "detach",
                      "contiguous", "t", "transpose", "permute"))


def _order_statistic_of(threshold, x: Node) -> Node | None:
    """The reduction of ``x`` that ``threshold`` is an element of (``x.max(-1, keepdim=True).values``,
    ``x.topk(k).values[..., -1:]``, ``x.amax()``, ``x.kthvalue(k).values``), through views and indexing; else None.
    ``x >= that`` has an element of ``x`` exactly on its boundary, always."""
    node = threshold
    for _ in range(6):
        if not isinstance(node, Node) or node.op not in ("call_function", "call_method") or not node.args:
            return None
        if node.op == "call_function" and node.target in (getattr, operator.getitem):
            node = node.args[0]
            continue
        name = _op_name(node)
        if name in _ORDER_STATISTICS:
            return node if _same_value(_base(_arg(node, 0, "input")), _base(x)) else None
        if name not in _THROUGH and name not in ("narrow", "select"):  # (an element of the values: still one)
            return None
        node = node.args[0]
    return None


#: what keeps each element where it was (``_base`` looks through it; a transpose moves them)
_IN_PLACE_OF = frozenset(("view", "reshape", "unsqueeze", "squeeze", "expand", "expand_as", "flatten", "detach",
                          "contiguous", "clone"))
#: calls whose result is drawn at random: two of them are two draws, not one value
_RANDOM = frozenset(("dropout", "alpha_dropout", "feature_alpha_dropout", "dropout1d", "dropout2d", "dropout3d",
                     "rrelu", "gumbel_softmax", "bernoulli", "uniform", "normal", "exponential", "geometric",
                     "cauchy", "log_normal", "random", "multinomial", "poisson", "rand", "randn", "randint",
                     "rand_like", "randn_like", "randint_like", "randperm", "native_dropout"))


def _base(node):
    """``node`` without the views, detaches and copies around it that keep its elements in place (``g.detach()``,
    ``g.unsqueeze(1)``: ``g``), and without arithmetic that keeps their values (``g * 1``, ``g + 0``, ``1.0 * g``)."""
    for _ in range(6):
        if not (isinstance(node, Node) and node.op in ("call_function", "call_method") and node.args):
            return node
        name = _op_name(node)
        if name in _IN_PLACE_OF and isinstance(node.args[0], Node):
            node = node.args[0]
            continue
        same = _NEUTRAL.get(name)
        operands = node.args[:2] if len(node.args) >= 2 and not node.kwargs else ()
        kept = [a for a, b in (operands, operands[::-1]) if isinstance(a, Node) and not isinstance(b, Node)
                and not isinstance(b, bool) and b == same and (name in ("mul", "add") or a is operands[0])] \
            if same is not None and len(operands) == 2 else []
        if not kept:
            return node
        node = kept[0]
    return node


#: arithmetic that keeps a tensor's values with this operand (``x * 1``, ``x + 0``, ``x / 1``, ``x - 0``)
_NEUTRAL = {"mul": 1, "div": 1, "true_divide": 1, "add": 0, "sub": 0}


#: calls whose result holds their operand's values, element for element (a copy; a detached alias)
_COPIES = frozenset(("clone", "contiguous", "detach"))


def _uncopied(node):
    """``node`` without the copies around it (``h.clone()``, ``h.detach().contiguous()``, ``h.data``, a no-grad
    region's detach: ``h``): the same values, where the graph writes nothing in place (a copy keeps what it copied; a
    later write moves the other)."""
    for _ in range(8):
        if not (isinstance(node, Node) and node.op in ("call_function", "call_method") and node.args and
                isinstance(node.args[0], Node)):
            return node
        if not (node.target is getattr and node.args[1:] == ("data",) or node.target is detached or
                _op_name(node) in _COPIES):
            return node
        node = node.args[0]
    return node


def _same_value(a, b, depth: int = 4) -> bool:
    """Do ``a`` and ``b`` compute the same value: the same node, or the same call of the same values
    (``g.softmax(-1)`` written twice), ``depth`` calls deep, a copy counting as what it copies (``relu(h)`` and
    ``relu(h.clone())``: :func:`_uncopied`; its callers read graphs that write nothing in place)?"""
    if a is b:
        return True
    if isinstance(a, Node) and isinstance(b, Node) and (a.op != b.op or a.target != b.target):
        a, b = _uncopied(a), _uncopied(b)  # (h and h.clone())
        if a is b:
            return True
    if not (isinstance(a, Node) and isinstance(b, Node)) or depth == 0 or a.op != b.op or \
            a.op not in ("call_function", "call_method") or a.target != b.target or a.kwargs != b.kwargs \
            or len(a.args) != len(b.args) or a.is_impure() or _op_name(a) in _RANDOM:
        return False
    return all(_same_value(u, v, depth - 1) if isinstance(u, Node) else u == v for u, v in zip(a.args, b.args))


def _argmax_args(node: Node) -> tuple:
    return _arg(node, 0, "input"), _arg(node, 1, "dim"), _arg(node, 2, "keepdim", False)


def _is_topk(node) -> bool:
    return isinstance(node, Node) and ((node.op == "call_function" and node.target is torch.topk) or
                                       (node.op == "call_method" and node.target == "topk"))


def _is_indices(node: Node, topk: Node) -> bool:
    return (node.op == "call_function" and node.args[:1] == (topk,) and
            ((node.target is operator.getitem and node.args[1] == 1) or
             (node.target is getattr and node.args[1] == "indices")))


def _topk_index_users(topk: Node) -> list[Node]:
    return [u for i in topk.users if _is_indices(i, topk) for u in i.users] + \
           [i for i in topk.users if i.op != "call_function" or i.target not in (operator.getitem, getattr)]


def _topk_pattern(node: Node):
    """The pieces of ``zeros_like(x).scatter(dim, topk(x, k, dim).indices, 1.0)`` at ``node``, a reason
    it is not quite that pattern, or None for an unrelated scatter."""
    zeros, dim, index = _arg(node, 0, "input"), _arg(node, 1, "dim"), _arg(node, 2, "index")
    value = _arg(node, 3, "value")
    if not (isinstance(index, Node) and index.op == "call_function" and index.args and _is_topk(index.args[0])
            and _is_indices(index, index.args[0])):
        return None
    topk = index.args[0]
    x, k = _arg(topk, 0, "input"), _arg(topk, 1, "k")
    tdim, largest = _arg(topk, 2, "dim", -1), _arg(topk, 3, "largest", True)
    if not (isinstance(zeros, Node) and zeros.op == "call_function" and zeros.target is torch.zeros_like
            and zeros.args[:1] == (x,) and len(zeros.args) == 1 and not zeros.kwargs):
        return ("the scattered tensor is not zeros_like(x) of the x topk ranks (write "
                "torch.zeros_like(x).scatter(dim, torch.topk(x, k, dim).indices, 1.0) with topk's own input x, "
                "the perturbed scores where topk ranks logits + noise, to linearize)")
    if value not in (1, 1.0) or isinstance(value, bool):
        return f"scattered value {value!r} is not 1"
    if node.kwargs.get("reduce") is not None:
        return f"scatter with reduce={node.kwargs['reduce']!r} is not a mask"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (k, dim, tdim)):
        for what, v in (("k", k), ("dim", tdim), ("scatter's dim", dim)):
            if isinstance(v, Node) and v.op == "placeholder":  # forward(self, x, top_k=3)
                given = v.args[0] if v.args and isinstance(v.args[0], int) else 3
                return (f"{what} comes from the input '{v.target}', known only at run time: fix it when "
                        f"linearizing, linearize_module(model, concrete_args={{'{v.target}': {given}}})")
        return "k and dim must be literal and the same for topk and scatter"
    if dim != tdim and (why := _other_dim(tdim, dim, x)):
        return why
    if not isinstance(largest, bool):
        return "largest must be a literal"
    inplace = node.op == "call_method" and node.target == "scatter_"
    return {"x": x, "k": k, "dim": tdim, "largest": largest, "zeros": zeros, "topk": topk, "index": index,
            "inplace": inplace}


def _rank(node) -> int | None:
    """``node``'s number of dims where a fake-tensor tracer fixed it (``meta["val"]``, ``meta["tensor_meta"]``:
    torch.export, make_fx; their graphs run at that rank only), else None (a symbolic trace runs at any rank)."""
    if not isinstance(node, Node):
        return None
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.dim()
    shape = getattr(node.meta.get("tensor_meta"), "shape", None)
    return len(shape) if isinstance(shape, torch.Size) else None


def _other_dim(tdim: int, dim: int, x) -> str:
    """Why topk's ``tdim`` and scatter's ``dim`` (unequal as written) are not the same dim of ``x``; "" when they are:
    one counted from the end, the other from the front, on an ``x`` whose rank the graph fixes (``dim=-1`` and
    ``dim=1`` on a 2-D ``x``)."""
    rank = _rank(x)
    if rank is not None:
        if -rank <= tdim < rank and -rank <= dim < rank and tdim % rank == dim % rank:
            return ""
        return f"topk's dim={tdim} and scatter's dim={dim} are different dims of x ({rank}-D): not a top-k mask"
    if (tdim < 0) == (dim < 0):
        return f"topk's dim={tdim} and scatter's dim={dim} are different dims: not a top-k mask"
    return (f"topk's dim={tdim} and scatter's dim={dim} are the same dim only where x has {max(tdim, dim) - min(tdim, dim)} "
            f"dims, which this graph does not fix (a traced graph runs at any rank): write the same dim in both "
            f"(dim={tdim} in the scatter)")


#: what the spellings of the patterns whose sll op reads another node than their inputs call (``_pattern_inputs``)
_PATTERN_NAMES = frozenset(("one_hot", "scatter", "scatter_"))


def _pattern_inputs(node: Node) -> list[Node]:
    """The nodes ``node``'s value is computed from, for a gradient: its inputs, or a pattern's ``x`` (the
    sll op of ``one_hot(argmax(x), n)`` or a top-k mask reads ``x``, not the indices)."""
    if _op_name(node) not in _PATTERN_NAMES:  # (a cheap lookup first: this runs on every node)
        return node.all_input_nodes
    rule = _match(node)
    if rule is not None and rule.pattern == "onehot":
        index = _arg(node, 0, "input")
        if _argmax_spelling(index) is not None:
            return [*node.all_input_nodes, *index.all_input_nodes]
    elif rule is not None and rule.pattern == "topk":
        pieces = _topk_pattern(node)
        if isinstance(pieces, dict) and isinstance(pieces["x"], Node):
            return [*node.all_input_nodes, pieces["x"]]
    return node.all_input_nodes
