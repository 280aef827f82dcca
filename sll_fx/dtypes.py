"""What a node's dtype is, as far as the graph tells: ``"float"``, ``"int"``, ``"bool"`` or unknown.

The linearize pass needs this to know what has no gradient to give: an op whose input is known
to be an integer or a bool is left hard and reported, and so is a ``where``/``masked_fill`` whose
result is an integer (it cannot hold a blend); an integer or bool result carries no gradient on
(``_gradient_sources`` in passes/_gradients.py).  Without ``example_inputs`` the answer comes from
the graph alone (parameters and buffers, casts, comparisons, argmax, promotion of arithmetic,
factories with their ``dtype=``: ``torch.ones_like(x, dtype=torch.long)``, ``x.new_zeros(n)``,
``torch.full(s, 3)``, ``torch.arange(n)``; an exported graph's fake values); with them, from a run on fake
tensors (``ShapeProp``'s fake copy of the module), up to the first node that cannot run
there (a data-dependent shape such as ``x[x > 0]``, control flow on values in an opaque
submodule), and from the graph after it; inputs that a torch op of the graph refuses (a shape its
kernel does not take) are a ValueError naming the node (:func:`infer_kinds`).  Unknown stays unknown: such nodes
are rewritten, and the sll ops themselves return the exact hard result for non-floating inputs.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading

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
                     torch.where, torch.sign, torch.round, torch.floor, torch.ceil, torch.trunc, torch.sum,
                     torch.prod, torch.cumsum, torch.cumprod), PROMOTE),
}
_METHODS: dict = {
    **dict.fromkeys(("float", "double", "half", "bfloat16"), FLOAT),
    **dict.fromkeys(("long", "int", "short", "char", "byte"), INT),
    **dict.fromkeys(("bool", "gt", "ge", "lt", "le", "eq", "ne", "greater", "less", "greater_equal", "less_equal",
                     "logical_and", "logical_or", "logical_not", "isnan", "isinf", "isfinite"), BOOL),
    **dict.fromkeys(("argmax", "argmin", "argsort", "size", "numel", "dim"), INT),
    **dict.fromkeys(("sigmoid", "tanh", "exp", "log", "sqrt", "softmax", "div", "mean"), FLOAT),
    **dict.fromkeys(("add", "sub", "mul", "abs", "neg", "relu", "clamp", "clip", "sum", "view", "reshape", "flatten",
                     "squeeze", "unsqueeze", "permute", "transpose", "contiguous", "expand", "detach", "clone",
                     "round", "floor", "ceil", "trunc", "sign", "prod", "cumsum", "cumprod"), PROMOTE),
}
_PASS_THROUGH_MODULES = (torch.nn.Identity, torch.nn.Flatten, torch.nn.Dropout, torch.nn.ReLU)

# tensors made from a shape, a fill value or another tensor: their ``dtype=`` argument when the call gives one,
# else (the value) their default: the kind of the tensor they are made like (``zeros_like(x)``, ``x.new_ones(n)``,
# ``x.new_tensor(data)``: ``x``'s dtype), the default float dtype, int64, the fill value's kind (``torch.full(s, 3)``
# is int64), the promotion of the numbers (``torch.arange(5)``: int64; ``arange(0, 1, 0.5)``: float), the data's
# (``torch.tensor([1, 2])``).  Keyed by name: a torch function, a Tensor method, an aten op (export's spellings)
LIKE, DATA, FILL, NUMBERS = "like", "data", "fill", "numbers"
_FACTORIES: dict = {
    **dict.fromkeys(("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like",
                     "new_zeros", "new_ones", "new_empty", "new_full", "new_tensor"), LIKE),
    **dict.fromkeys(("zeros", "ones", "empty", "rand", "randn", "eye", "linspace", "logspace"), FLOAT),
    **dict.fromkeys(("randint", "randperm"), INT),
    "full": FILL, "arange": NUMBERS, "range": NUMBERS, "tensor": DATA, "as_tensor": DATA, "scalar_tensor": FLOAT,
}
_FACTORY_FUNCTIONS = {id(f): name for name in _FACTORIES if (f := getattr(torch, name, None)) is not None}


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


def _promote(args, kinds: dict) -> str | None:
    found = set()
    for a in args:
        if isinstance(a, Node):
            kind = kinds.get(a)
        elif isinstance(a, float):
            return FLOAT
        elif isinstance(a, (tuple, list, str)):
            continue
        else:
            kind = _value_kind(a, kinds)
        if kind == FLOAT:  # (one float settles it)
            return FLOAT
        found.add(kind)
    if None in found or not found:
        return None
    return INT if INT in found else BOOL


def is_device(value) -> bool:
    """A device argument of ``Tensor.to``: ``"cuda"``, ``torch.device(...)`` or a graph's ``x.device``."""
    return isinstance(value, (str, torch.device)) or (
        isinstance(value, Node) and value.op == "call_function" and value.target is getattr
        and value.args[1:] == ("device",))


def _cast_kind(node: Node, args: list, kinds: dict) -> str | None:
    """``.to(dtype)`` / ``.to(device)`` / ``.to(other)`` / ``.to(x.dtype)`` / ``.type_as(other)``."""
    rest = [a for a in args[1:] if not isinstance(a, bool) and not is_device(a)]  # (non_blocking, copy)
    dtypes = [a for a in rest if isinstance(a, torch.dtype)]
    if dtypes:
        return dtype_kind(dtypes[0])
    if node.target == "to" and not rest:  # a device move keeps the kind
        return _value_kind(args[0], kinds)
    return kinds.get(rest[0]) if rest and isinstance(rest[0], Node) else None


def _factory_name(op: str, t) -> str | None:
    """The ``_FACTORIES`` name a call node of ``op`` and target ``t`` calls (``torch.zeros_like``, ``x.new_ones``,
    ``aten.full.default``), or None."""
    if op == "call_method":
        return t if t in _FACTORIES else None
    if isinstance(t, torch._ops.OpOverload):
        name = t._opname if t.namespace == "aten" else None
        return name if name in _FACTORIES else None
    name = _FACTORY_FUNCTIONS.get(id(t))
    return name if name is not None and getattr(torch, name) is t else None


def _data_kind(data) -> str | None:
    """The kind of a tensor made from Python data (``torch.tensor([[1, 2], [3, 4]])``), as torch infers it."""
    found = set()
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack += v
        elif isinstance(v, (bool, int, float)):
            found.add(_value_kind(v, {}))
        else:
            return None  # (a tensor, a node: not followed)
    return FLOAT if FLOAT in found else INT if INT in found else BOOL if found else FLOAT


def _factory_kind(node: Node, name: str, kinds: dict) -> str | None:
    """The kind of the tensor a factory call (``_FACTORIES``) makes: its ``dtype=``, else its default."""
    args = [*node.args, *(v for k, v in node.kwargs.items() if k != "dtype")]
    dtype = node.kwargs.get("dtype")
    if isinstance(dtype, torch.dtype):
        return dtype_kind(dtype)
    if dtype is not None:  # dtype=x.dtype (a node of x's kind) or unknown
        return _value_kind(dtype, kinds)
    default = _FACTORIES[name]
    if default == LIKE:
        return _value_kind(args[0], kinds) if args else None
    if default == FILL:  # full(size, fill_value)
        fill = node.args[1] if len(node.args) > 1 else node.kwargs.get("fill_value")
        return _value_kind(fill, kinds)
    if default == NUMBERS:  # arange(end), arange(start, end, step): int64 unless a number is a float
        numbers = [*node.args, *(v for k, v in node.kwargs.items() if k in ("start", "end", "step"))]
        return _promote(numbers, kinds) if numbers else None
    if default == DATA:  # torch.tensor(data), torch.as_tensor(t): the data's kind, a tensor's own
        data = node.args[0] if node.args else node.kwargs.get("data")
        return kinds.get(data) if isinstance(data, Node) else _data_kind(data)
    return default


_CAST, _GETATTR, _GETITEM = "cast", "getattr", "getitem"  # (_call_facts' markers: decided by the node's arguments)


def _call_facts(op: str, target, memo: dict | None) -> tuple:
    """What a call's ``(op, target)`` alone settles: ``(factory name or None, kind)``, the kind from ``_METHODS`` /
    ``_FUNCTIONS`` (or a marker for what the node's arguments decide: a cast, ``getattr``, ``getitem``).  Put in
    ``memo`` (one graph's inference, read by :func:`_kind_of`) per ``(op, target)``; an unhashable target is not."""
    if op == "call_method":
        kind = _CAST if target in ("to", "type_as") else _METHODS.get(target)
        facts = (target if target in _FACTORIES else None, kind)
    else:
        if target is getattr or target is operator.getitem:
            kind = _GETATTR if target is getattr else _GETITEM
        else:
            try:
                kind = _FUNCTIONS.get(target)
            except TypeError:  # (an unhashable callable)
                return _factory_name(op, target), None
        facts = (_factory_name(op, target), kind)
    if memo is not None:
        memo[(op, target)] = facts
    return facts


def _kind_of(gm: GraphModule, node: Node, kinds: dict, memo: dict | None = None) -> str | None:
    """``node``'s kind from the graph (the kinds of the nodes before it in ``kinds``).  ``memo``: for
    :func:`_call_facts`."""
    op = node.op
    val = node.meta.get("val")  # a fake-tensor tracer's value (torch.export, make_fx): its dtype is known
    if val is not None and isinstance(val, torch.Tensor) and op != "output":
        return dtype_kind(val.dtype)
    if op == "call_function" or op == "call_method":
        try:
            factory, kind = memo[(op, node.target)]
        except (KeyError, TypeError):  # (not seen yet; no memo; an unhashable callable)
            factory, kind = _call_facts(op, node.target, memo)
        if factory is not None:
            return _factory_kind(node, factory, kinds)
        kwargs = node.kwargs  # (read once: a property of fx's, asked per node)
        if kwargs:
            dtype = kwargs.get("dtype")  # h.sum(dtype=torch.long), torch.softmax(x, 0, dtype=...): that dtype
            if isinstance(dtype, torch.dtype):
                return dtype_kind(dtype)
            if kwargs.get("rounding_mode") is not None:  # div(a, b, rounding_mode="floor"): integer on integers
                return _promote(_arguments(node), kinds)
        if kind == PROMOTE:
            args = node.args if not kwargs else _arguments(node)
            if args and isinstance(first := args[0], Node) and kinds.get(first) == FLOAT:  # (_promote's first step,
                return FLOAT                                                             # most nodes: no call)
            return _promote(args, kinds)
        if kind is None or kind in (FLOAT, INT, BOOL):
            return kind
        if kind == _CAST:
            return _cast_kind(node, _arguments(node), kinds)
        if kind == _GETATTR:
            if node.args[1:] == ("dtype",):
                return _value_kind(node.args[0], kinds)  # x.dtype "has the kind" of x, so .to(x.dtype) resolves
            if node.args[1:] == ("shape",):
                return INT  # sizes are ints (as a literal int is): torch.arange(x.shape[0]) is int64
            return None
        return _value_kind(node.args[0], kinds) if node.args else None  # an element or slice of x (of x.shape)
    if op == "get_attr":
        value = fetch_attr(gm, node.target)
        return dtype_kind(value.dtype) if isinstance(value, torch.Tensor) else None
    if op == "call_module":
        mod = submodule(gm, node.target)
        if _float_parameters(mod):
            return FLOAT
        args = _arguments(node)
        return _value_kind(args[0], kinds) if isinstance(mod, _PASS_THROUGH_MODULES) and args else None
    return None


def _arguments(node: Node) -> list:
    """``node``'s positional arguments, then its keyword arguments' values."""
    return [*node.args, *node.kwargs.values()]


def _from_graph(gm: GraphModule) -> dict[Node, str | None]:
    kinds: dict[Node, str | None] = {}
    memo: dict = {}
    for node in gm.graph.nodes:
        kinds[node] = _kind_of(gm, node, kinds, memo)
    return kinds


def hashable(target) -> bool:
    try:
        hash(target)
    except TypeError:
        return False
    return True


def submodule(gm: torch.nn.Module, target: str) -> torch.nn.Module:
    """``gm.get_submodule(target)`` (a ``call_module`` node's module), read off the ``_modules`` dicts part by part:
    one dict lookup each, where ``get_submodule`` makes two attribute reads through ``nn.Module.__getattr__``; where a
    part is not there, ``get_submodule`` itself answers (its ``AttributeError``)."""
    module = gm
    for name in target.split("."):
        module = module._modules.get(name)
        if module is None:
            return gm.get_submodule(target)
    return module


def module_attr(module, name: str, default=None):
    """``getattr(module, name, default)``, read off an ``nn.Module``'s own dicts (``__dict__``, then its parameters,
    buffers and submodules, as ``nn.Module.__getattr__`` does) without the ``AttributeError`` that ``__getattr__``
    raises, and ``getattr`` catches, for a name it does not have (``activation_post_process`` of a Linear);
    ``getattr`` itself for a name of its class and for a class with its own ``__getattr__`` (or no module)."""
    cls = type(module)
    d = getattr(module, "__dict__", None)
    if d is None or name in d or getattr(cls, "__getattr__", None) is not _MODULE_GETATTR or hasattr(cls, name):
        return getattr(module, name, default)
    found = d.get("_parameters")  # (the three stores in nn.Module.__getattr__'s order, unrolled: asked per call_module
    if found is not None and name in found:  # node of a graph)
        return found[name]
    found = d.get("_buffers")
    if found is not None and name in found:
        return found[name]
    found = d.get("_modules")
    if found is not None and name in found:
        return found[name]
    return default


#: ``nn.Module.__getattr__`` (a class keeping it reads its parameters, buffers and submodules by name)
_MODULE_GETATTR = torch.nn.Module.__getattr__


def module_parameters(module: torch.nn.Module) -> list:
    """``list(module.parameters())``, read off ``module._parameters`` (once each, in order) for a module without
    submodules whose class keeps ``nn.Module``'s ``parameters``/``named_parameters`` (a Linear: no generators)."""
    if not _own_parameters_only(module):
        return list(module.parameters())
    return list({id(p): p for p in module._parameters.values() if p is not None}.values())


def _own_parameters_only(module: torch.nn.Module) -> bool:
    """Are ``module``'s parameters those in ``module._parameters``: no submodules, and its class keeps
    ``nn.Module``'s ``parameters``/``named_parameters``?"""
    cls = type(module)
    return not module._modules and cls.parameters is torch.nn.Module.parameters and \
        cls.named_parameters is torch.nn.Module.named_parameters


def _float_parameters(module: torch.nn.Module) -> bool:
    """Has ``module`` parameters (:func:`module_parameters`), all of them floating?  Read off ``module._parameters``
    without a list where :func:`module_parameters` would (a Linear: once per ``call_module`` node of the graph)."""
    if not _own_parameters_only(module):
        params = list(module.parameters())
        return bool(params) and all(p.is_floating_point() for p in params)
    found = False
    for p in module._parameters.values():
        if p is not None:
            if not p.is_floating_point():
                return False
            found = True
    return found


def module_tree(module: torch.nn.Module) -> list:
    """``list(module.modules())``: ``[module]`` for a module without submodules whose class keeps ``nn.Module``'s
    ``modules``/``named_modules``."""
    cls = type(module)
    if module._modules or cls.modules is not torch.nn.Module.modules or \
            cls.named_modules is not torch.nn.Module.named_modules:
        return list(module.modules())
    return [module]


def module_list(module: torch.nn.Module) -> list:
    """``list(module.modules())``, in its order, walked off the ``_modules`` dicts with one stack (no generator per
    module) where every class in the tree keeps ``nn.Module``'s ``modules``/``named_modules``; ``module.modules()``
    itself where one does not."""
    base_modules, base_named = torch.nn.Module.modules, torch.nn.Module.named_modules
    out, seen, stack = [], set(), [module]
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        cls = type(m)
        if cls.modules is not base_modules or cls.named_modules is not base_named:
            return list(module.modules())
        seen.add(m)
        out.append(m)
        children = m._modules
        if children:
            stack += [c for c in reversed(children.values()) if c is not None]
    return out


def fetch_attr(gm: GraphModule, target: str):
    """The attribute ``target`` (a qualified name) of ``gm``, or None."""
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part, None)
    return obj


def infer_kinds(gm: GraphModule, example_inputs: tuple | None = None,
                ranks: dict | None = None, refuse: bool = False) -> dict[Node, str | None]:
    """Map every node to ``"float"``, ``"int"``, ``"bool"`` or ``None`` (unknown).  ``ranks``: a dict that gets the
    number of dims of each tensor node of the fake run with ``example_inputs`` (none without them).

    Never raises for a graph that cannot run on fake tensors: the kinds the run found up to the
    failing node, the graph's own inference after it (and nothing is printed or logged).  ``refuse``:
    ``example_inputs`` are the user's (``linearize_module``'s), and a torch op that fails on them other than for
    the fake run's own limits (:func:`_refuses`: its meta kernel checks shapes as its real kernel does) is a
    ValueError naming the node, the op and torch's message: the inputs do not run the model.
    """
    if example_inputs is None:
        return _from_graph(gm)
    from torch._dispatch.python import enable_python_dispatcher
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx import Interpreter
    from torch.fx.passes.shape_prop import ShapeProp

    found: dict[Node, str] = {}
    failed: list = []  # (node, error) of the node the run stopped at

    class _Run(ShapeProp):  # ShapeProp's fake copy of the module; its run_node prints the traceback of a failure
        def run_node(self, n):
            self.module = self.fake_module
            try:
                with self.fake_mode, enable_python_dispatcher():
                    result = Interpreter.run_node(self, n)
            except Exception as e:
                failed.append((n, e))
                raise
            finally:
                self.module = self.real_module
            if isinstance(result, torch.Tensor):
                found[n] = dtype_kind(result.dtype)
                if ranks is not None:
                    ranks[n] = result.dim()
            elif isinstance(result, torch.dtype):  # x.dtype: its kind, so that .to(x.dtype) resolves
                found[n] = dtype_kind(result)
            return result

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    checked: list = []  # the errors of meta kernels (their shape checks), held back from the log
    try:
        with _held_back_log(checked):
            _Run(gm, fake_mode=mode).propagate(*example_inputs)
        stopped = False
    except Exception:  # x[x > 0] (no ShapeEnv: DynamicOutputShapeException), `if x.sum() > 0:` in an opaque module
        stopped = True
    if refuse and failed and _refuses(gm, *failed[-1], found, checked):
        raise _inputs_refused(gm, *failed[-1])
    kinds: dict[Node, str | None] = {}
    memo: dict = {}
    for node in gm.graph.nodes:
        kinds[node] = found[node] if node in found else _kind_of(gm, node, kinds, memo) if stopped else None
    return kinds


@contextlib.contextmanager
def _held_back_log(errors: list):
    """Hold back fake_tensor's ERROR records (a meta kernel that raised, with its traceback: 19 lines on stderr) made
    by this thread while the fake run runs, their errors put in ``errors``: :func:`infer_kinds` handles the failure
    (the graph's kinds, or the inputs refused with torch's message).  Other threads' records, and lower levels,
    pass."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    thread = threading.get_ident()

    def passes(record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or record.thread != thread:
            return True
        errors.append(record.exc_info[1] if record.exc_info else None)
        return False

    logger.addFilter(passes)
    try:
        yield
    finally:
        logger.removeFilter(passes)


_DATA_METHODS = frozenset(("numpy", "tolist", "item", "data_ptr", "__array__", "storage", "untyped_storage"))
_TORCH_MODULES = ("torch", "torch._C._nn", "torch._C._linalg", "torch._C._special", "torch._C._fft",
                  "torch.nn.functional", "torch.functional", "_operator", "builtins")


def _fake_limits() -> tuple:
    """The errors of a fake run's own limits: an op without a fake kernel, a data-dependent shape or value."""
    from torch._subclasses import fake_tensor as ft
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode
    return (NotImplementedError, GuardOnDataDependentSymNode, ft.UnsupportedOperatorException,
            ft.DynamicOutputShapeException, ft.DataDependentOutputException, ft.UnsupportedFakeTensorException,
            ft.UnsupportedMutationAliasingException, ft.MetadataMismatchError)


def _refuses(gm: GraphModule, node: Node, error: Exception, found: dict, checked: list) -> bool:
    """Did ``node`` fail in the fake run on the inputs themselves: a meta kernel's check raised ``error`` (one of
    ``checked``: also inside an opaque module), or a torch op (a torch function, an aten or sll op, a method of a
    tensor, a torch.nn leaf) raised other than for :func:`_fake_limits`?  A meta kernel checks shapes and dtypes as
    its real kernel does.  Other code of an opaque module or a custom op may fail on fake tensors alone
    (``.numpy()``, no fake kernel): not refused."""
    if isinstance(error, _fake_limits()) or not isinstance(error, (RuntimeError, ValueError, IndexError, TypeError)):
        return False
    seen, chain = set(), [error]
    while chain:  # (the error, or what it became: an opaque module's code may raise from it)
        e = chain.pop()
        if e is None or id(e) in seen:
            continue
        if any(e is c for c in checked):
            return True
        seen.add(id(e))
        chain += [e.__cause__, e.__context__]
    t = node.target
    if node.op == "call_method":  # (a method of a tensor of the run, not a data access)
        return t not in _DATA_METHODS and bool(node.args) and node.args[0] in found
    if node.op == "call_module":
        from .tracer import torch_leaf
        return torch_leaf(gm.get_submodule(t))
    if node.op != "call_function":
        return False
    if isinstance(t, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(t).split(".")[0] in ("aten", "prims", "sll")
    return getattr(t, "__module__", None) in _TORCH_MODULES


def _inputs_refused(gm: GraphModule, node: Node, error: Exception) -> ValueError:
    """The ValueError of ``example_inputs`` that ``node``'s op refused (:func:`_refuses`)."""
    from .tracer import source_of
    t = node.target
    op = (f"{type(gm.get_submodule(t)).__name__} '{t}'" if node.op == "call_module" else
          f".{t}()" if node.op == "call_method" else getattr(t, "__name__", None) or str(t))
    where = ", ".join(filter(None, (op, source_of(node))))
    line = next((s for s in str(error).splitlines() if s.strip()), "")
    return ValueError(f"linearize_module: example_inputs do not run the model: node '{node.name}' ({where}) raised "
                      f"{type(error).__name__}: {line}\nFix: pass example_inputs the model runs on (the inputs of a "
                      "real call: their shapes and dtypes), or none (node dtypes then come from the graph)")
