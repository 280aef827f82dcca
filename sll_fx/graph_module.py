"""``SLLGraphModule``: the GraphModule type sll_fx returns, whose copies keep the model's state.

``copy.deepcopy``, ``copy.copy``, ``pickle`` and ``torch.save``/``torch.load`` rebuild a plain
``fx.GraphModule`` from its graph, which keeps only the attributes the graph touches and
registers them as persistent buffers: non-persistent buffers (the model's, fx's
``_tensor_constant*``, sll_fx's 0-dim eps buffers) would come back as new ``state_dict``
keys, unused submodules would vanish and tied submodules would come apart.  This subclass
repairs every copy with :func:`~sll_fx.state.mirror_state`, and keeps ``sll_report`` in
``meta`` so that copies carry it.  Copies also keep the checks of the Python values the graph froze
(:mod:`sll_fx.frozen`: a deep copy or a pickle checks its own modules, which it no longer shares with the
model), ``calibrate``'s ``target`` and a pending ``eps="auto"`` calibration (:mod:`sll_fx.calibration`:
a copy made before the first call calibrates on its own first call).

Calling it runs the generated ``forward`` as any GraphModule does; the first call for each
new signature (input dtypes and devices, autocast state, casts and moves of the module, eps) also
checks every sll op's eps against the spacing of the dtype it runs in (:mod:`sll_fx.precision`).

``SLLGraphModule(root, graph, codegen=False)`` defers generating and compiling the Python code
of ``forward``: ``linearize_module`` and ``export_hard`` build such modules for the graphs they
edit right away (the traced graph, the private copy of a user's graph), so that the code is
generated once, for the final graph (:func:`generate_code`), instead of after every step.  Until
then ``recompile()`` only marks the code stale, and the first call, ``.code``, ``str()``, a copy or
a pickle generate it; the modules sll_fx returns always have their code.
"""

from __future__ import annotations

import operator
import re
import types
import weakref

import torch
from torch import fx
from torch.fx.graph_module import reduce_graph_module

from . import frozen, precision
from .state import STATE_MODULE, _delegated_load, constants_of, hold_hooks, mirror_state

#: per-instance bookkeeping: not state, not copied, not pickled as is (the precision checks' caches; what ties
#: the module to its model); a copy gets what :func:`_carried` keeps of the frozen values and the calibration
_TRANSIENT = ("_sll_precision_seen", "_sll_eps_targets", "_sll_buffer_sources", "_sll_buffer_dependents",
              precision.CAST_GENERATION,
              "_sll_calibration", "_sll_calibration_target", frozen.RECORDS, frozen.TENSORS, "_sll_loading",
              "_sll_load_covered")
#: body key of what a pickle carries beyond the state (:func:`_carried`)
_CARRIED = "_sll_fx_carried"
#: ``__dict__`` key of the weak references to the modules a GraphModule shares its buffer tensors with
_SOURCES = "_sll_buffer_sources"
#: ``__dict__`` key of the weak references to the GraphModules made from a GraphModule that share its tensors
#: (``export_hard``'s results, shallow copies): the other way from :data:`_SOURCES`
_DEPENDENTS = "_sll_buffer_dependents"
#: ``__dict__`` key of a module whose code is not generated yet (``codegen=False``)
_DEFERRED = "_sll_codegen_deferred"
#: name prefix of the eps buffers ``linearize_module`` creates (``_sll_eps_<node name>``, sll_fx/annealing.py)
EPS_PREFIX = "_sll_eps_"
#: the names fx gives the tensors it holds as constants (``Tracer.create_arg``: ``get_fresh_qualname``)
_FX_CONSTANT = re.compile(r"_tensor_constant\d+")


def _not_the_models(module: torch.nn.Module, name: str) -> bool:
    """Is ``module``'s buffer ``name`` one sll_fx or fx added (an eps, a ``_tensor_constant``, a plain tensor
    attribute of the model: :data:`~sll_fx.state.CONSTANTS`), not a buffer of the model?"""
    return name.startswith(EPS_PREFIX) or bool(_FX_CONSTANT.fullmatch(name)) or name in constants_of(module)


def is_deferred(module) -> bool:
    """Is ``module`` an SLLGraphModule whose code is not generated yet (``codegen=False``)?"""
    return isinstance(module, SLLGraphModule) and bool(module.__dict__.get(_DEFERRED))


def generate_code(module) -> None:
    """Generate a deferred module's code now (nothing for any other module); from then on its
    ``recompile()`` regenerates the code at once, as for any GraphModule."""
    if isinstance(module, SLLGraphModule) and module.__dict__.pop(_DEFERRED, False):
        module.recompile()


def _deferred_forward(self, *args, **kwargs):
    """``forward`` of a module whose code is not generated yet: generate it, then run it."""
    generate_code(self)
    return type(self).forward(self, *args, **kwargs)


def _call_wrapped(self, *args, **kwargs):
    """The ``__call__`` of an SLLGraphModule's class: fx's (its ``_WrappedCall`` prints the generated line an error
    came from), except under ``torch.compile``: that handler walks the traceback with a generator, which dynamo
    cannot trace, so that an error raised at run time inside ``torch.compile(gm, fullgraph=True)`` (one_hot's
    class check) would surface as dynamo's "Attempt to trace generator" instead of the error itself."""
    if torch.compiler.is_compiling():
        return SLLGraphModule.__call__(self, *args, **kwargs)
    return self._wrapped_call(self, *args, **kwargs)


def _own_call() -> types.FunctionType:
    """:func:`_call_wrapped` with a code object of its own, for one GraphModule class.  ``torch.compile(gm)`` starts
    tracing at the class's ``__call__`` (fx's own is in torch, which dynamo skips, so there it starts at the generated
    ``forward``, one per module); dynamo caches per code object, up to its recompile limit (8), so with one shared
    code object the 9th linearized model compiled in a process failed under ``fullgraph=True`` and silently ran
    eagerly without it."""
    fn = types.FunctionType(_call_wrapped.__code__.replace(), _call_wrapped.__globals__, "__call__")
    fn.__doc__, fn.__qualname__, fn._sll_call = _call_wrapped.__doc__, "SLLGraphModule.__call__", True
    return fn


def share_buffers_with(gm: fx.GraphModule, source: torch.nn.Module) -> None:
    """Record that ``gm`` shares buffer tensors with ``source`` (its model; the linearized model
    ``export_hard`` stripped): when ``gm.to(...)``/``.cuda()``/``.half()`` replaces a buffer tensor, the
    modules of ``source`` holding that tensor get the new one too, as they get the parameters (which
    ``nn.Module._apply`` changes in place), so that the model's ``state_dict()`` stays the one trained.
    A weak reference: ``source`` may be dropped.  Where ``source`` is a GraphModule too (``export_hard`` of a
    linearized model), it records ``gm`` the other way: a load with ``assign=True`` into ``source`` reaches ``gm``
    (the user's model is not written to: it is not told of ``gm``)."""
    if isinstance(gm, SLLGraphModule):
        gm.__dict__.setdefault(_SOURCES, []).append(weakref.ref(source))
        if isinstance(source, SLLGraphModule):  # (the results dropped since: not kept, export_hard may run per epoch)
            alive = [ref for ref in source.__dict__.get(_DEPENDENTS, ()) if ref() is not None]
            source.__dict__[_DEPENDENTS] = [*alive, weakref.ref(gm)]


def _carried(module) -> dict:
    """What a copy of ``module`` keeps beyond its state, picklable: the frozen values it checks (on its own
    modules: a copy shares none with the model), calibrate's ``target`` and a pending ``eps="auto"``
    calibration (a copy made before the first call calibrates on its own first call)."""
    from . import calibration  # (it imports sll_fx.annealing, which imports this module)

    return {"frozen": frozen.portable(module), "calibration": calibration.portable(module)}


def _carry(res, carried: dict | None) -> None:
    """Give the copy ``res`` what :func:`_carried` kept."""
    from . import calibration

    if carried:
        frozen.record_own(res, carried.get("frozen", ()))
        calibration.restore(res, carried.get("calibration"))


def _follow(gm: torch.nn.Module, moved: dict, seen: set, at: dict) -> None:
    """Put the new tensors of ``moved`` (id of old tensor -> (old, new)) where ``gm``'s sources and dependents (and
    theirs) hold the old: the one ``gm`` has at the same place (``at``: (module path, slot, name) -> new), else
    ``moved``'s (a buffer that two modules share becomes two tensors when moved, one per module, as
    ``nn.Module._apply`` makes them)."""
    seen.add(id(gm))
    for ref in (*gm.__dict__.get(_SOURCES, ()), *gm.__dict__.get(_DEPENDENTS, ())):
        source = ref()
        if source is None or id(source) in seen:
            continue
        seen.add(id(source))
        for path, m in source.named_modules(remove_duplicate=False):
            for slot in _SLOTS:
                tensors = getattr(m, slot)
                for name, t in list(tensors.items()):
                    pair = moved.get(id(t)) if t is not None else None
                    if pair is not None and pair[0] is t:
                        tensors[name] = at.get((path, slot, name), pair[1])
        _follow(source, moved, seen, at)


_SLOTS = ("_parameters", "_buffers")


def _held(module: torch.nn.Module, recurse: bool = True) -> list[tuple]:
    """``(path, module, slot, name, tensor)`` of every parameter and buffer ``module`` (and its submodules) holds."""
    modules = module.named_modules(remove_duplicate=False) if recurse else [("", module)]
    return [(path, m, slot, name, t) for path, m in modules for slot in _SLOTS
            for name, t in getattr(m, slot).items() if t is not None]


def _replaced(gm: torch.nn.Module, before: list[tuple]) -> None:
    """Give ``gm``'s sources (:func:`_follow`) what replaced the tensors of ``before`` (:func:`_held`) after a move, a
    cast or a load that put new tensor objects in ``gm`` (``to_empty``, ``load_state_dict(assign=True)``, a cast
    under ``torch.__future__.set_overwrite_module_params_on_conversion(True)``): the model's modules still hold the
    old ones, and would be left behind (training ``gm`` no longer trains the model).  fx's and sll_fx's own buffers
    (an eps, a constant: :func:`_not_the_models`) keep their values and dtype (see :meth:`SLLGraphModule._apply`)."""
    moved, at = {}, {}
    for path, m, slot, name, old in before:
        new = getattr(m, slot).get(name)
        if new is None or new is old:
            continue
        if slot == "_buffers" and _not_the_models(m, name):  # the values, on the new device
            new = m._buffers[name] = old.to(new.device) if old.device.type != "meta" else new.to(old.dtype)
            if new is old:
                continue
        moved.setdefault(id(old), (old, new))
        at[(path, slot, name)] = new
    if moved:
        _follow(gm, moved, set(), at)
        frozen.refresh_tensors(gm)


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _loading(gm: torch.nn.Module, state_dict, prefix: str, assign: bool) -> None:
    """A load is about to run on ``gm`` (at ``prefix`` in the module loaded).  With ``assign=True`` it puts new tensor
    objects in ``gm`` where the model's modules hold the old ones, and so may a module that loads itself otherwise
    (its ``_load_from_state_dict`` swaps in a resized buffer).  Record the tensors (and, for ``assign=True``, the ties
    among them: :func:`_ties`, which refuses to untie), and have a one-shot post-hook, run once ``gm``'s part is
    loaded (also when torch then raises for unexpected keys), retie them (:func:`_retie`) and give the model and
    ``export_hard``'s results the new ones (:func:`_replaced`), so that training ``gm`` still trains the model.  A
    load that raised before the hook ran (a load pre-hook's error) is completed by the next load and
    by the next eager call (not by a call of ``torch.compile``'s wrapper, which runs compiled code), and by
    :meth:`SLLGraphModule.load_state_dict` at once."""
    finish_load(gm)
    cover = gm.__dict__.pop(_COVERED, None)
    if cover is not None and _LOADING in getattr(cover(), "__dict__", ()):
        gm.__dict__[_COVERED] = cover  # (inside a GraphModule whose load records this one's tensors too)
        return
    nested = [m for m in gm.modules() if m is not gm and isinstance(m, SLLGraphModule)]
    before = _held(gm)
    ties = _ties(before, state_dict, prefix) if assign else []
    handle = None

    def done(module=None, incompatible_keys=None) -> None:
        if gm.__dict__.get(_LOADING, (None,))[0] is handle:
            gm.__dict__.pop(_LOADING)
            handle.remove()
            for m in nested:
                m.__dict__.pop(_COVERED, None)
            _retie(ties)
            _replaced(gm, before)

    for m in nested:  # (their own loads, next, need not walk their subtrees again: the cost grew with the depth)
        m.__dict__[_COVERED] = weakref.ref(gm)

    handle = gm.register_load_state_dict_post_hook(done)
    gm.__dict__[_LOADING] = (handle, done)


def finish_load(gm: torch.nn.Module) -> None:
    """Complete a load of ``gm`` whose post-hook did not run (the load raised first; see :func:`_loading`)."""
    pending = gm.__dict__.get(_LOADING)
    if pending is not None:
        pending[1]()


#: ``__dict__`` key of (the handle of :func:`_loading`'s post-hook, its function) while a load runs
_LOADING = "_sll_loading"
#: ``__dict__`` key of a nested GraphModule whose tensors an enclosing one's running load records (a weak reference)
_COVERED = "_sll_load_covered"


def _ties(before: list[tuple], state_dict, prefix: str = "") -> list[tuple[list[tuple], tuple]]:
    """The tensors of ``before`` (:func:`_held`) held at several names that ``state_dict`` gives (tied weights), as
    (their places, the place of the first name ``state_dict`` has).  Raises, before anything is loaded, where
    ``state_dict`` gives one of them different values under two names: the graph reads the tensor as one, it cannot
    be untied.  (Values
    it cannot compare, of another shape or without data, are left to the load: torch says what is wrong with them.)"""
    places: dict[int, list[tuple]] = {}
    for entry in before:
        places.setdefault(id(entry[4]), []).append(entry)
    out = []
    for group in places.values():
        loaded = {prefix + _key(e[0], e[3]): e for e in group if prefix + _key(e[0], e[3]) in state_dict}
        keys = list(loaded)
        if len(group) < 2 or not keys:
            continue
        first = state_dict[keys[0]]
        for key in keys[1:]:
            if not _same_values(first, state_dict[key]):
                raise ValueError(
                    f"load_state_dict(assign=True): '{keys[0]}' and '{key}' are one tensor of the model (tied), which "
                    "the linearized graph reads as one, but the state_dict gives them different values\nFix: tie "
                    "them in the state_dict (the same values), or load with assign=False (each value is copied into "
                    "the one tensor, the last one winning, as for any tied model)")
        out.append((group, loaded[keys[0]]))
    return out


def _same_values(a, b) -> bool:
    """Do ``a`` and ``b`` hold the same values (NaN where the other has NaN), or can they not be told apart here (not
    both tensors of one shape with data)?"""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape != b.shape or \
            "meta" in (a.device.type, b.device.type):
        return True
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return bool(torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(0.0), b.nan_to_num(0.0)))
    return torch.equal(a, b)


def _retie(ties: list[tuple[list[tuple], tuple]]) -> None:
    """Put the tensor now at each tie's first loaded place at all its places (``assign=True`` gave each its own)."""
    for group, (_, m, slot, name, old) in ties:
        new = getattr(m, slot).get(name)
        if new is None or new is old:  # (not assigned: the load failed first)
            continue
        for _, module, where, key, _ in group:
            getattr(module, where)[key] = new


class SLLGraphModule(fx.GraphModule):
    def __init__(self, root, graph: fx.Graph, class_name: str = "GraphModule", *, codegen: bool = True):
        if not codegen:
            self.__dict__[_DEFERRED] = True  # read by recompile(), which fx's __init__ calls
        super().__init__(root, graph, class_name=class_name)
        frozen.record_none_inputs(self)

    def recompile(self):
        if self.__dict__.get(_DEFERRED):
            type(self).forward = _deferred_forward  # (fx gives every GraphModule its own class)
            return None
        code = super().recompile()
        if not getattr(type(self).__dict__.get("__call__"), "_sll_call", False):  # (fx's recompile sets its own on
            type(self).__call__ = _own_call()                                      #  the class it gave this module)
        return code

    @property
    def code(self) -> str:
        generate_code(self)
        return super().code

    def __str__(self) -> str:
        generate_code(self)
        return super().__str__()

    def __deepcopy__(self, memo):
        generate_code(self)
        res = super().__deepcopy__(memo)
        hold_hooks(res)  # (fx sets copies of this module's state_dict hook dicts last: they must call the copy's)
        # its links to its model and its export_hard results are not copied (a copy of gm alone shares none of their
        # tensors), but a deep copy that copies them too (model, gm and hard in one) links the copies
        for key, link in ((_SOURCES, lambda other: share_buffers_with(res, other)),
                          (_DEPENDENTS, lambda other: share_buffers_with(other, res))):
            for ref in self.__dict__.get(key, ()):
                other = ref()
                if other is not None and id(other) in memo:
                    link(memo[id(other)])
        return res

    def _apply(self, fn, recurse=True):
        """``.to(device)`` moves the eps buffers like any buffer, but a dtype cast (``.half()``,
        ``.to(torch.bfloat16)``) leaves them float64: a rounded eps is not the band the user chose, and
        rounding up can cross its op's limit (bfloat16 turns round(decimals=1)'s limit 0.05 into 0.05005).
        fx's constants (``_tensor_constant*``: a tensor literal of ``forward``) and the plain tensor attributes
        the graph reads (``self.table = torch.arange(4.)``, neither a parameter nor a buffer of the model:
        :data:`~sll_fx.state.CONSTANTS`) keep their dtype too, as they do in the model, which ``model.half()``
        does not cast: a float32 literal still promotes a half input, as it does in the model.  (Unlike the
        model's, they do move to the new device, where the graph reads them.)  All keep their values, whatever
        ``fn`` makes of them: ``to_empty(device=...)`` (a model built on the meta device) would leave them
        uninitialized, and, being non-persistent, ``load_state_dict`` does not restore them (an eps buffer on the
        meta device, which holds no value, is the one exception).  Every call counts as a cast for the precision checks
        (:data:`~sll_fx.precision.CAST_GENERATION`): the next call is checked again."""
        before = _held(self, recurse)
        super()._apply(fn, recurse)
        _replaced(self, before)
        self.__dict__[precision.CAST_GENERATION] = self.__dict__.get(precision.CAST_GENERATION, 0) + 1
        return self

    #: (read by :func:`~sll_fx.state._hold_state_module`: a model's own loading is run by the method below)
    _sll_delegates_load = True

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module``'s; a load that raises part-way (a load pre-hook's error) still leaves the model holding
        what was loaded into this module (:func:`_loading`), as a load through a wrapper does by the next load or
        eager call."""
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        finally:
            for module in self.modules():
                finish_load(module)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        """As ``nn.Module``'s, or as the model's own where its class overrides it or it has load hooks
        (:func:`~sll_fx.state._delegated_load`); a load with ``assign=True`` (also through a wrapper:
        ``torch.compile``, DDP, a parent module) first records what it may replace (:func:`_loading`)."""
        _loading(self, state_dict, prefix, bool(local_metadata.get("assign_to_params_buffers")))
        if STATE_MODULE in self.__dict__:
            _delegated_load(self, state_dict, prefix, local_metadata, *args)
        else:
            super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """The model's buffers first, in the model's order, then the ones sll_fx adds (eps, fx's constants, plain
        tensor attributes: :func:`_not_the_models`), so that ``zip(model.buffers(), gm.buffers())`` pairs each
        buffer with its own (an EMA or ``AveragedModel(model)`` updated from ``gm``).  ``buffers()`` reads this."""
        ours, added = [], []
        for name, buf in super().named_buffers(prefix, recurse, remove_duplicate):
            path, _, leaf = name[len(prefix) + 1 if prefix else 0:].rpartition(".")
            (added if _not_the_models(self.get_submodule(path), leaf) else ours).append((name, buf))
        return iter(ours + added)

    @property
    def sll_report(self):
        """The report of the pass that made this module (RewriteReport or StripReport)."""
        return self.meta.get("sll_report")

    @sll_report.setter
    def sll_report(self, report) -> None:
        self.meta["sll_report"] = report

    def __call__(self, *args, **kwargs):
        # fx's per-instance class calls this through its _WrappedCall (super(cls, obj).__call__)
        if _LOADING in self.__dict__ and not torch.compiler.is_compiling():  # (a load through a wrapper that raised
            finish_load(self)                                                  #  part-way: the model follows now)
        if frozen.RECORDS in self.__dict__:
            frozen.check(self)
        if frozen.TENSORS in self.__dict__ and not torch.compiler.is_compiling():  # (guards on each weakref:
            frozen.check_tensors(self)                                          # recompilations; eager calls only)
        if frozen.NONE_TESTED in self.__dict__:
            frozen.check_none_tested(self, args, kwargs)
        try:
            return precision.call(self, super().__call__, args, kwargs)
        except (TypeError, AttributeError) as e:  # (None for an input the graph uses as a tensor: say which, and the
            # fix; an sll op given None reads its attributes: AttributeError "'NoneType' object has no attribute")
            frozen.check_inputs(self, args, kwargs, e)
            raise

    def _deepcopy_init(self):
        class_name = type(self).__name__

        def init(res, fake_mod, graph):
            carried = _carried(fake_mod)  # (fake_mod holds a deep copy of the original's __dict__)
            for key in _TRANSIENT:
                fake_mod.__dict__.pop(key, None)
            fx.GraphModule.__init__(res, fake_mod, graph, class_name=class_name)
            mirror_state(res, fake_mod)
            frozen.record_none_inputs(res)
            _carry(res, carried)
        return init

    def __copy__(self) -> "SLLGraphModule":
        """A shallow copy: the same parameters, buffers and submodules, the same graph object."""
        generate_code(self)
        res = SLLGraphModule(self, self.graph, class_name=type(self).__name__)
        mirror_state(res, self)
        res.meta = self.meta
        share_buffers_with(res, self)
        _carry(res, _carried(self))
        frozen.record_shared(res, self)  # (it shares the model's modules too: checked there as well)
        return res

    def __reduce_package__(self, exporter):
        generate_code(self)
        return super().__reduce_package__(exporter)

    def __reduce__(self):
        from .tracer import SLLTracer

        generate_code(self)
        _, (body, import_block) = super().__reduce__()
        for key in _TRANSIENT:
            body.pop(key, None)
        body["_graphmodule_cls_name"] = type(self).__name__  # fx keeps it only for torch.package
        tracer = body.get("_tracer_cls")
        if not (isinstance(tracer, type) and issubclass(tracer, SLLTracer)):
            body["_tracer_cls"] = SLLTracer  # the retrace must proxy buffers (fx's default folds buffer-only math)
        body[_NODES] = _node_records(self.graph)
        body[_CARRIED] = _carried(self)
        return (_unpickle, (body, import_block))


#: node meta key of the copies ``linearize_pass`` gives in-place writes (``export_hard`` drops them: ``_aliases``)
ISOLATED = "sll_isolated"
#: node meta key of the nodes ``linearize_pass`` keeps or copies to give a use left hard the hard values (the original
#: of a rewritten op, the copy of a chain after it): ``export_hard`` merges each with its twin on the restored op, which
#: the mark names
HARD_COPY = "sll_hard_copy"

#: body key of the pickled node names and metadata
_NODES = "_sll_fx_nodes"
#: node metadata that survives pickling (names, source lines, submodule names, report entries, the marks above)
_META = ("stack_trace", "nn_module_stack", "sll_entry", frozen.NONE_TESTED, ISOLATED, HARD_COPY)


def _target_key(node: fx.Node) -> str:
    return _target_key_of(node.target)


def _target_key_of(t) -> str:
    if isinstance(t, str):
        return t
    if isinstance(t, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return str(t)
    return f"{getattr(t, '__module__', '')}.{getattr(t, '__qualname__', getattr(t, '__name__', repr(t)))}"


def _picklable(value) -> bool:
    import pickle

    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


def _node_records(graph: fx.Graph) -> list:
    """(op, target, name, metadata) per node: the retrace on unpickling names its nodes anew."""
    types: dict = {}
    out = []
    for node in graph.nodes:
        meta = {k: node.meta[k] for k in _META if k in node.meta}
        stack = meta.get("nn_module_stack")
        if stack:  # (path, type) per entry; a type that does not pickle (a local class) travels as its name
            entries = {}
            for key, (path, kind) in stack.items():
                if isinstance(kind, type):
                    if kind not in types:
                        types[kind] = kind if _picklable(kind) else f"{kind.__module__}.{kind.__qualname__}"
                    kind = types[kind]
                entries[key] = (path, kind)
            meta["nn_module_stack"] = type(stack)(entries)
        out.append((node.op, _target_key(node), node.name, meta))
    return out


def _call_key(op: str, key: str) -> tuple[str, str]:
    """(op, target key) with a dunder method call read as its operator: ``t[i]`` traced on a tensor
    attribute is ``call_method __getitem__``, and retraced from the generated code ``operator.getitem``."""
    if op == "call_method" and key.startswith("__") and key.endswith("__") and hasattr(operator, key):
        return "call_function", _target_key_of(getattr(operator, key))
    return op, key


def _restore_nodes(graph: fx.Graph, records) -> fx.Graph:
    """``graph`` (retraced from the pickled code) with the pickled node names and metadata, when it
    has the pickled nodes one for one; else ``graph`` with the metadata of each node whose name and call
    match a pickled one (the retrace drops unused nodes and reads an attribute where it is first used,
    so the order can differ; names are made the same way both times)."""
    nodes = list(graph.nodes)
    if not records:
        return graph
    if len(records) != len(nodes) or any(
            _call_key(n.op, _target_key(n)) != _call_key(r[0], r[1]) for n, r in zip(nodes, records)):
        records = [(*r[:3], {k: v for k, v in r[3].items() if k not in (HARD_COPY, ISOLATED)}) for r in records]
        # (the marks: a node named as a marked one may be another call of the same op now, a user's own clone that
        # export_hard would drop; not merged nor dropped, the hard model computes those ops twice, values equal)
        by_name = {r[2]: r for r in records}
        matched, used = set(), set()
        for node in nodes:  # by name and call
            r = by_name.get(node.name)
            if r is not None and _call_key(node.op, _target_key(node)) == _call_key(r[0], r[1]):
                node.meta.update(r[3])
                matched.add(node)
                used.add(r[2])
        left: dict[tuple, list] = {}  # then, per call, in order (a split node's names come out swapped)
        for r in records:
            if r[2] not in used:
                left.setdefault(_call_key(r[0], r[1]), []).append(r)
        for node in nodes:
            queue = left.get(_call_key(node.op, _target_key(node)))
            if node not in matched and queue:
                node.meta.update(queue.pop(0)[3])
        return graph
    new = fx.Graph(tracer_cls=graph._tracer_cls)
    new._codegen = graph._codegen
    env: dict = {}
    for node, (_, _, name, meta) in zip(nodes, records):
        copy = new.create_node(node.op, node.target, fx.map_arg(node.args, env.__getitem__),
                               fx.map_arg(node.kwargs, env.__getitem__), name=name, type_expr=node.type)
        copy.meta.update({k: v for k, v in node.meta.items() if k not in _META})  # not the retrace's own
        copy.meta.update(meta)
        env[node] = copy
    if any(env[n].name != r[2] for n, r in zip(nodes, records)):
        return graph
    return new


def _unpickle(body: dict, import_block: str) -> SLLGraphModule:
    records = body.pop(_NODES, None)
    carried = body.pop(_CARRIED, None)
    twin = torch.nn.Module()  # the pickled module tree, with its persistence sets
    twin.__dict__.update(body)
    gm = reduce_graph_module(dict(body), import_block)
    graph = _restore_nodes(gm.graph, records)
    res = SLLGraphModule(gm, graph, class_name=body.get("_graphmodule_cls_name", type(gm).__name__))
    mirror_state(res, twin)
    res.meta.update(body.get("meta", {}))
    for key, value in body.items():  # plain attributes set on the module, as fx's own unpickling keeps them
        if not hasattr(res, key):
            setattr(res, key, value)
    _carry(res, carried)
    return res
