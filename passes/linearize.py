"""``linearize_pass``: rewrite every discrete node the rule table knows into its sll op.

Two phases, so that a bad eps or an unsupported argument raises before the graph is
touched: planning decides, node by node, what happens and why (one report entry per
discrete node found), then ``_apply`` edits the graph.  Planning runs in three sweeps:
first the selections (``where``/``masked_fill`` on a comparison), then the comparisons, which
need to know which of their users were taken by a selection, then the elementwise ops,
``one_hot(argmax)`` and top-k masks; the last two go from the last node back, so that a node's
users are planned before it.  A rewrite is for the float arithmetic on a node's result: a use as
a bool or an integer (``.bool()``, ``~``, ``==``, ``.long()``, ``x[mask]``, an op left hard, ...)
passes no gradient and would see fractional values, so it keeps reading the hard result (or,
with no float use at all, the node stays hard), also after arithmetic that carries the values on
(``(1 - mask).bool()``, ``round(h).clamp(0, 3).long()``: ``_Planner._read_as_mask``; where such a chain is shared
with float uses, the integer use gets its own copy of it on the hard result: ``_copy_chain``; a hard heaviside, which
has no derivative, reads its inputs through ``.detach()``: ``_detach_hard_heavisides``); a cast to the
dtype of another tensor the graph does not tell (``.to(idx.dtype)``) counts as such a use.  A node whose
value reaches the output only through ``.detach()`` is a straight-through estimator already and stays hard
(``_Planner._verdict``, ``_reach_output``), and so does a node that no gradient reaches
(``_gradient_sources``: its inputs come through ``.detach()``, a ``torch.no_grad()`` block (an exported
one too), from buffers and constants alone, or from what carries no gradient: ``rand_like(h)``, argmax
indices, an integer or bool result).  An elementwise node (``call_function``) becomes its
sll op in place: it keeps its name, place and users, so the report's node names are the sll
nodes' names (unless other uses keep the hard node); the other patterns insert a new node and
erase what it replaces.  In hard mode a selection also reads a linear-mode copy of its comparison
as its ``soft`` mask, which weighs the branches' gradients (``_soft_mask``): a part of the selection,
not a node of its own (``sll_fx.diagnostics.is_soft_mask``).  Afterwards the pass checks its guarantee:
every elementwise or cast-rule node that is still in the graph is reported as left hard (or sits in a
skipped submodule).
Discrete ops without a rule (``rules.UNLISTED``: ``h // s``, ``torch.bucketize``, ``nn.Threshold``, ...)
are found too and reported as left hard where a gradient is lost (``_Planner._plan_unlisted``); the graph keeps
them as they are.  An elementwise rule's in-place spelling (``x.round_()``, ``torch.round_(x)``) on a fresh
temporary is rewritten out of place (``_Planner._plan_in_place``); elsewhere, and ``gt_``/``masked_fill_`` always,
it is reported as left hard.

Per node, eps and mode come from the :class:`~sll_fx.config.SLLConfig` (by submodule name,
by submodule type, by rule kind, then the default).  The eps is checked here, in Python, and
stored in a non-persistent 0-dim float64 buffer ``_sll_eps_<node>`` of the GraphModule that the
node reads through a ``get_attr`` node (:func:`sll_fx.annealing.eps_input`): eps is then an
input of the graph, not a constant in its code, so ``set_eps`` changes it in place and
``torch.compile`` does not recompile for a new value (``sll_fx/annealing.py``).

Where things are: this file holds the pass, ``_apply`` (the graph edits of one planned step) and
the check of its guarantee; the planning is ``_plan.py`` (``_Planner``), which reads how values are
used (``_uses.py``), where gradients reach (``_gradients.py``), the multi-node patterns
(``_patterns.py``) and the spelling tables (``_spellings.py``).
"""

from __future__ import annotations

import operator
from dataclasses import replace

import torch
from torch.fx import GraphModule, Node, map_arg
from torch.fx.passes.infra.pass_base import PassResult

from sll_fx import dtypes, rules
from sll_fx.annealing import eps_buffer, eps_device, eps_input
from sll_fx.config import SLLConfig
from sll_fx.diagnostics import is_soft_mask
from sll_fx.errors import RewriteError
from sll_fx.exported import STALE_META
from sll_fx.graph_module import HARD_COPY
from sll_fx.ops import DEFAULT_EPS, SLL_TARGETS, find_calls, hard_mask, is_sll_target
from sll_fx.report import RewriteReport

from ._aliases import isolate_writes
from ._checks import check_not_decomposed, check_placement
from ._gradients import _carried
from ._patterns import _select_operands
from ._plan import _Planner, _Step
from ._spellings import _rule_nodes


def linearize_pass(gm: GraphModule, *, eps: float = DEFAULT_EPS, mode: str = "linear",
                   config: SLLConfig | None = None, example_inputs: tuple | None = None,
                   no_grad: bool = False, held: str | None = None, refuse_inputs: bool = False) -> PassResult:
    """Rewrite ``gm`` in place; the report is attached as ``gm.sll_report``.

    ``config`` (an :class:`SLLConfig`) overrides ``eps`` and ``mode`` when given.  ``no_grad``: ``gm`` runs with grad
    mode off (an exported ``torch.no_grad()`` block's body, ``grad_regions.nested_bodies``): no gradient reaches
    its nodes, and its discrete ops stay hard.  ``held``: a reason to leave every discrete op of ``gm`` hard (a
    ``torch.cond`` branch: ``grad_regions.nested_bodies``).  ``refuse_inputs``: ``example_inputs`` are the user's: a
    torch op refusing them is a ValueError (:func:`sll_fx.dtypes.infer_kinds`).
    """
    config = config if config is not None else SLLConfig(eps=eps, mode=mode)
    check_not_decomposed(gm.graph, "linearize_module", "linearize the model, or its program before "
                         "decomposing it; a decomposed program of export_hard's result linearizes as usual")
    ranks: dict = {}  # (of the fake run with example_inputs: the flat rule's dims)
    kinds = dtypes.infer_kinds(gm, example_inputs, ranks, refuse=refuse_inputs)
    planner = _Planner(gm, config, kinds, no_grad=no_grad, ranks=ranks)
    plan = sorted(planner.plan(), key=lambda s: planner.order[s.node])  # graph order: comparisons first
    if held:
        plan = [planner._hard(s.node, s.rule, held) if s.rewrites else s for s in plan]
    before = _count_sll(gm)
    # the graph's in-place writes: without any, the rewrite adds none and isolate_writes has nothing to copy
    writes = bool(planner.writes())
    # the values carrying a gradient in the model (from what planning a rewrite found; none without one), which
    # isolate_writes reads
    carried = _carried(gm.graph, planner._gradients()[0], kinds) if writes and any(s.rewrites for s in plan) else set()
    surrogates: dict = {}  # comparison -> its sll node; ("soft", sll node) -> its soft mask (_soft_mask)
    device = eps_device(gm)  # (before the first eps buffer is added)
    created: list[Node] = []
    twins: dict = {}  # rewritten node -> its sll node
    for step in plan:
        if (new := _apply(gm, step, surrogates, device, created, twins)) is not None:
            twins[step.node] = new
    copied = set()  # (the chains copied for integer uses, of comparisons' kept casts too)
    for s in plan:
        extra = s.extra
        if s.rewrites and ("chain" in extra or "cast_hard" in extra):
            copied.update(extra.get("chain", ((),))[0])
            copied.update(c for _, chain, _ in extra.get("cast_hard", {}).values() for c in chain)
    for c in sorted(copied, key=planner.order.__getitem__, reverse=True):  # originals only integer uses read
        _erase_if_unused(gm.graph, c)
    created = _note_kept_originals(gm.graph, plan, created, {n: s.name for n, s in twins.items()})
    if writes:  # (the writes again, as they are now: isolate_writes finds them on the graph rewritten)
        ops = [n for n in created if n.op == "call_function" and is_sll_target(n.target)]
        isolate_writes(gm, ops, {n for n in ops if rules.sll_op_name(n.target) in _INTEGRAL}, created,
                       carried | {new for n, new in twins.items() if n in carried})
    _detach_hard_heavisides(gm.graph, plan, planner, created)
    check_placement(gm.graph, created, "linearize_pass")  # graph.lint()'s checks, for the nodes added
    for node in created:  # fake values (an exported graph's) taken from the node replaced, or its own: stale
        if not node.meta.keys().isdisjoint(STALE_META):  # (torch.export computes fresh ones when the result is
            for key in STALE_META:                       # exported again)
                node.meta.pop(key, None)
    gm.recompile()
    report = RewriteReport([s.entry for s in plan], mode=config.mode, method=config.method, auto=config.auto)
    _check(gm, report, planner, before)
    gm.sll_report = report
    return PassResult(gm, modified=any(e.rewritten for e in report.entries))


def _note_kept_originals(graph, plan: list[_Step], created: list, surrogate_names: dict) -> list:
    """Mark each rewritten node still read by a use left hard (and its pattern's pieces, its kept casts) as a hard
    copy (``export_hard`` merges it with the restored op), give it a reason where the report has none (read by a copy
    of a chain that an op left hard reads: ``q * (q > 0.5) >= 1.2`` left hard reads the hard ``q > 0.5``), and erase
    the implicit casts whose product such a copy replaced; returns ``created`` without them."""
    for step in plan:
        n = step.node
        if not step.rewrites or getattr(n, "_erased", True) or not n.users or (
                n.op == "call_function" and is_sll_target(n.target)):  # (an elementwise op rewritten where it is)
            continue
        for key in _PIECES:  # (its pattern's own pieces, dropped with it when nothing else reads them)
            piece = step.extra.get(key)
            if isinstance(piece, Node) and not getattr(piece, "_erased", True):
                piece.meta[HARD_COPY] = ("piece", None)
        if n in surrogate_names:  # (the original: the hard twin of its sll node, next to it)
            n.meta[HARD_COPY] = ("sll", surrogate_names[n])
        if not step.entry.reason:
            readers = ", ".join(u.name for u in n.users)
            step.entry = replace(step.entry, reason=f"its hard result is also read by {readers}, a copy of the chain "
                                                    "that an op left hard reads")
    for node in [n for n in created if n.op == "call_method" and n.target in ("to", "type_as")]:
        _erase_if_unused(graph, node)
    return [n for n in created if not getattr(n, "_erased", False)]


def _detach_hard_heavisides(graph, plan: list[_Step], planner: _Planner, created: list) -> None:
    """Let each ``torch.heaviside`` that stays in the graph (the hard copy a rewritten one keeps for its uses left
    hard, or one left hard as its uses pass no gradient) read its inputs through ``.detach()``: torch has no
    derivative for heaviside, so a gradient reaching it (0: through a ceil left hard) failed the backward with
    "derivative for aten::heaviside is not implemented"; its derivative is 0 wherever it has one, which the detach
    gives.  Not one whose rule the config switches off (left as the model has it).  The detaches are marked
    ``("input", None)`` (``HARD_COPY``): ``export_hard`` drops them."""
    graded = None
    for step in plan:
        node = step.node
        if step.rule is None or step.rule.kind != "heaviside" or getattr(node, "_erased", True) or \
                is_sll_target(node.target) or not step.rewrites and planner.config.is_disabled(step.rule.kind):
            continue
        graded = planner._gradients()[0] if graded is None else graded
        for arg in [a for a in node.all_input_nodes if a in graded]:
            with graph.inserting_before(node):
                cut = graph.call_function(torch.ops.aten.detach.default, (arg,)) if rules.is_aten_level(node) \
                    else graph.call_method("detach", (arg,))
            cut.meta.update({k: v for k, v in node.meta.items() if k in _EPS_META})
            cut.meta[HARD_COPY] = ("input", None)
            node.replace_input_with(arg, cut)
            created.append(cut)


#: a pattern's own pieces (``step.extra``), kept with its original for a use left hard (not its input ``x``)
_PIECES = ("argmax", "index", "topk", "zeros")

#: sll ops whose hard op returns a bool or an integer (their casts were copies: ``_aliases``)
_INTEGRAL = frozenset(("compare", "argmax_onehot"))


# --- applying a step --------------------------------------------------------------------------

def _apply(gm: GraphModule, step: _Step, surrogates: dict, device: torch.device, created: list,
           twins: dict) -> Node | None:
    """Rewrite one planned step; the nodes it adds are appended to ``created``.  ``twins``: the steps applied before
    (rewritten node -> its sll node), whose sll node stands for a node erased since (a ``where`` rewritten before the
    ``one_hot(argmax)`` that reads it).  Returns its sll node."""
    if not step.rewrites:
        return None
    graph, node, rule = gm.graph, step.node, step.rule
    eps, mode = step.entry.eps, step.mode
    pattern = rule.pattern
    if pattern in ("elementwise", "cast"):
        args, kwargs = rule.sll_call(node, eps, mode)
    elif pattern == "mask":
        a, b = _select_operands(rule, node)
        mask = surrogates[step.extra["mask"]]
        args, kwargs = (mask, a, b), {"op": rule.select_op}
        if mask.kwargs.get("mode") == "hard":  # the branches' gradient weights: the surrogate, not the 0/1 mask
            kwargs["soft"] = _soft_mask(graph, mask, surrogates, created)
        if step.extra.get("exact"):  # maybe an integer result: the comparison's exact value
            kwargs["hard"] = _hard_mask(graph, mask, surrogates, created)
    elif pattern == "onehot":
        e = step.extra
        args, kwargs = (e["x"], e["dim"], e["n"]), {"eps": eps, "mode": mode, "largest": e["largest"]}
    else:  # topk
        e = step.extra
        args, kwargs = (e["x"], e["k"], e["dim"]), {"eps": eps, "mode": mode, "largest": e["largest"]}
    if pattern not in ("elementwise", "cast") or any(getattr(n, "_erased", False) for n in node.all_input_nodes):
        # (the plan's nodes: one rewritten and erased since stands for its sll node; an elementwise op's or a
        # comparison's arguments are its own operands, most often none of them erased)
        now = lambda n: twins.get(n, n) if getattr(n, "_erased", False) else n  # noqa: E731
        args, kwargs = tuple(map_arg(args, now)), dict(map_arg(kwargs, now))
    hard_uses = step.extra.get("hard_uses", frozenset())  # users that keep reading the hard result
    chain, ends = step.extra.get("chain", ((), frozenset()))  # copied for integer uses, to read the hard result
    in_place = pattern == "elementwise" and node.op == "call_function" and not hard_uses and not chain
    # eps, checked by the planner, is from here on a buffer of gm (set_eps fills it), read by a get_attr node
    attr = None
    if in_place:  # the node becomes the sll op: same name, meta, users and place (no node to add or erase)
        if "eps" in kwargs:
            attr = kwargs["eps"] = eps_buffer(gm, node, eps, device)
        _retarget(node, rule.target, args, kwargs)
        new = node
    else:
        with graph.inserting_before(node):
            new = graph.call_function(rule.target, args, kwargs)
        new.meta.update(node.meta)
        if "eps" in kwargs:
            attr = eps_input(gm, new, eps, device)
    created.append(new)
    if step.extra.get("out_of_place"):  # t.round_() on a fresh temporary: t's uses after it read the sll op's result
        _read_after(args[0], node, new)
    new.meta["sll_entry"] = step.entry.node  # the report entry's name (set_eps keeps the report current)
    if attr is not None:
        attr.meta.update({k: v for k, v in node.meta.items() if k in _EPS_META})
        created.append(attr)
    if in_place:  # (an elementwise op rewritten where it is: no other node to re-point or erase)
        return new
    if pattern == "cast":
        surrogates[node] = new
        for cast in step.casts:
            kept = step.extra["cast_hard"].get(cast)
            if not kept:
                cast.replace_input_with(node, new)
                continue
            keep, chain, ends = kept
            # the cast's bool/integer users keep it (on the hard comparison); its float users get a copy
            with graph.inserting_after(cast):
                soft = graph.node_copy(cast, lambda n: new if n is node else n)
            soft.meta[HARD_COPY] = ("of", cast.name)  # (the same cast once the comparison is hard again)
            created.append(soft)
            for user in list(cast.users):
                if user not in keep:
                    user.replace_input_with(cast, soft)
            _copy_chain(graph, chain, ends, cast, soft, created)
        for product, factor in step.extra["products"].items():  # x * (x > t): an implicit cast to x's dtype
            if isinstance(factor, Node):  # (as it is now: a where rewritten before, where(h > 0, h, 1.) * (h > .5))
                factor = next((a for a in product.args if isinstance(a, Node) and a is not node), factor)
            with graph.inserting_before(product):  # (x > t) * 1.0: the bool became the default float dtype
                as_factor = graph.call_method("to", (new, factor)) if isinstance(factor, torch.dtype) else \
                    graph.call_method("type_as", (new, factor))
            as_factor.meta.update(node.meta)
            product.replace_input_with(node, as_factor)
            created.append(as_factor)
        # selections taking this comparison are rewritten later in graph order and drop their use of it
        _erase_if_unused(graph, node)
        return new
    inplace_topk = pattern == "topk" and step.extra["inplace"]
    if inplace_topk:
        zeros = step.extra["zeros"]
        for user in list(zeros.users):
            if user is not node and user > node and user not in hard_uses:  # (fx orders the nodes of a graph)
                user.replace_input_with(zeros, new)
    if not in_place:
        node.replace_all_uses_with(new, delete_user_cb=lambda user: user not in hard_uses)
        _copy_chain(graph, chain, ends, node, new, created)
        if not node.users and not (inplace_topk and hard_uses):  # (a kept scatter_ fills the hard mask)
            graph.erase_node(node)
    for piece in ("mask", "argmax", "index", "topk", "zeros"):
        if piece in step.extra:
            if piece == "topk":  # `top_vals, idx = topk(...)` leaves an unused values getitem behind
                for user in list(step.extra[piece].users):
                    if user.op == "call_function" and user.target is operator.getitem:
                        _erase_if_unused(graph, user)
            _erase_if_unused(graph, step.extra[piece])
    return new


_EPS_META = ("nn_module_stack", "stack_trace", "source_fn_stack")  # what an eps get_attr node takes over


def _retarget(node: Node, target, args: tuple, kwargs: dict) -> None:
    """Make ``node`` the call ``target(*args, **kwargs)``.  Its arguments are set once where they are the ones it has
    (an elementwise op's: ``round(x)`` becomes ``sll.round(x, eps=..., mode=...)``): each ``Node`` attribute set
    updates fx's lookup table and its users' lists."""
    node.target = target
    if len(args) != len(node.args) or any(a is not b for a, b in zip(args, node.args)):
        node.args = args
    node.kwargs = kwargs


def _read_after(written: Node, node: Node, new: Node) -> None:
    """Let the uses of ``written`` after the in-place op ``node`` (graph order), which read the values it wrote, read
    ``new``, its sll op (``node`` itself when retargeted), instead: the out-of-place spelling's graph."""
    for user in list(written.users):
        if user is not node and user is not new and user > node:  # (fx orders the nodes of a graph)
            user.replace_input_with(written, new)


def _copy_chain(graph, chain: tuple, ends: frozenset, hard: Node, soft: Node, created: list) -> None:
    """Give the integer uses ``ends`` their own copy of ``chain`` (the views and value-preserving arithmetic
    that lead to them from the rewritten result, shared with its float uses: ``round(h).clamp(-8, 7) * s`` then
    ``.long()``): each copy right after its original, in graph order, reading ``hard`` (the hard result) where
    the original reads ``soft`` (the surrogate), and the copies where it reads the originals.  The float uses
    keep the originals; ``linearize_pass`` erases an original left without users."""
    copies: dict[Node, Node] = {}
    for c in chain:  # (one node per inserting_after: they keep their order)
        with graph.inserting_after(c):
            copies[c] = graph.node_copy(c, lambda n: copies.get(n, hard if n is soft else n))
        copies[c].meta[HARD_COPY] = ("of", c.name)
        created.append(copies[c])
    for c in chain:  # (by each original's users, in their order: ``ends`` is a set, its order changes per run)
        for end in [u for u in c.users if u in ends]:
            end.replace_input_with(c, copies[c])


def _hard_mask(graph, mask: Node, surrogates: dict, created: list) -> Node:
    """The ``hard`` input of a selection whose result may be an integer (its dtype unknown before run time), on the
    sll comparison ``mask``: ``ops.hard_mask`` of its operands (not an sll op: nothing counts it; ``export_hard``
    drops it with the selection)."""
    return _beside(graph, mask, "hard", surrogates, created, hard_mask, tuple(mask.args[:3]), {},
                   {k: v for k, v in mask.meta.items() if k in ("nn_module_stack", "stack_trace")})


def _soft_mask(graph, mask: Node, surrogates: dict, created: list) -> Node:
    """The ``soft`` input of a hard-mode selection on the sll comparison ``mask``: a linear-mode copy of it (same
    inputs, same eps ``get_attr`` node: ``set_eps`` and calibration keep the two equal).  In hard mode
    ``where(c(x), a, b)`` forwards the hard where but its backward is that of ``a s + b (1 - s)`` at the surrogate
    ``s`` (SLL_MATH.md, forward modes): ``a`` and ``b`` get the gradient weighed by ``s``, not by the 0/1 mask.
    Read as a part of its selection, not a node of its own (``sll_fx.diagnostics.is_soft_mask``); ``export_hard``
    drops it with the selection."""
    return _beside(graph, mask, "soft", surrogates, created, mask.target, mask.args,
                   {**mask.kwargs, "mode": "linear"}, mask.meta)


def _beside(graph, mask: Node, kind: str, surrogates: dict, created: list, target, args, kwargs, meta) -> Node:
    """A node its selections read next to the sll comparison ``mask`` (``kind``: their "soft" or "hard" input),
    right after it, made once per comparison however many selections read it (``surrogates[(kind, mask)]``)."""
    key = (kind, mask)
    node = surrogates.get(key)
    if node is None:
        with graph.inserting_after(mask):
            node = graph.call_function(target, args, kwargs)
        node.meta.update(meta)
        created.append(node)
        surrogates[key] = node
    return node


def _erase_if_unused(graph, node) -> None:
    if isinstance(node, Node) and not node.users and node.graph is graph:
        graph.erase_node(node)


# --- the guarantee ------------------------------------------------------------------------------

def _check(gm: GraphModule, report: RewriteReport, planner: _Planner, before: int) -> None:
    """The pass's guarantee: every node of an elementwise or cast rule left in the graph is reported (or sits in a
    skipped submodule), and the graph holds one sll node more per rewritten entry (soft masks, a part of their
    selection, not counted)."""
    rewritten = report.rewritten
    kept = {e.node for e in report.entries if e.reason or not e.rewritten}  # (left hard, or with a part kept hard)
    for node in _rule_nodes(gm.graph):  # (by target: the graph's nodes that may be a rule's spelling)
        rule = rules.match(node)
        if rule and rule.pattern in ("elementwise", "cast") and node.name not in kept \
                and not planner.config.is_skipped(planner._stack(node)):
            raise RewriteError(f"linearize_pass left node '{node.name}' ({rules.describe_target(node)}) "
                               "hard without reporting it")
    after = _count_sll(gm)
    if after != before + len(rewritten):
        raise RewriteError(f"linearize_pass: expected {before + len(rewritten)} sll nodes, found {after}")


def _count_sll(gm: GraphModule) -> int:
    """sll nodes in ``gm``'s graph, not counting soft masks (found by target, fx's lookup: counted per target; a soft
    mask is an ``sll.compare`` node, the only nodes :func:`~sll_fx.diagnostics.is_soft_mask` is asked of)."""
    graph = gm.graph
    return sum(len(graph.find_nodes(op="call_function", target=t, sort=False)) for t in SLL_TARGETS
               if t not in _COMPARE_TARGETS) + \
        sum(1 for n in find_calls(graph, _COMPARE_TARGETS, ordered=False) if not is_soft_mask(n))


#: the targets of ``sll.compare`` (its packet, its overloads): the sll nodes :func:`is_soft_mask` may accept
_COMPARE_TARGETS = frozenset(t for t in SLL_TARGETS if rules.sll_op_name(t) == "compare")
