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
with float uses, the integer use gets its own copy of it on the hard result: ``_copy_chain``); a cast to the
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
and in-place spellings (``x.round_()``, ``torch.round_(x)``) are found too and reported as left hard, the
former only where a gradient is lost (``_Planner._plan_unlisted``); the graph keeps them as they are.

Per node, eps and mode come from the :class:`~sll_fx.config.SLLConfig` (by submodule name,
by submodule type, by rule kind, then the default).  The eps is checked here, in Python, and
stored in a non-persistent 0-dim float64 buffer ``_sll_eps_<node>`` of the GraphModule that the
node reads through a ``get_attr`` node (:func:`sll_fx.annealing.eps_input`): eps is then an
input of the graph, not a constant in its code, so ``set_eps`` changes it in place and
``torch.compile`` does not recompile for a new value (``sll_fx/annealing.py``).
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, field

import torch
from torch import nn
from torch._ops import OpOverload, OpOverloadPacket
from torch.fx import GraphModule, Node
from torch.fx.node import map_arg
from torch.fx.passes.infra.pass_base import PassResult

from sll_fx import dtypes, grad_regions, rules
from sll_fx.annealing import eps_buffer, eps_device, eps_input
from sll_fx.config import SLLConfig
from sll_fx.diagnostics import is_soft_mask
from sll_fx.errors import EpsError, RewriteError
from sll_fx.exported import STALE_META
from sll_fx.ops import DEFAULT_EPS, check_eps, eps_limit, hard_mask, is_sll_target
from sll_fx.report import Entry, RewriteReport
from sll_fx.tracer import module_of, source_of

from ._checks import check_not_decomposed, check_placement

_INT_KINDS = (dtypes.INT, dtypes.BOOL)

# --- a cheap first look at each node: one dict lookup on its target -----------------------------------
# ``rules.match`` tries every rule on a node; these tables say what a node can be at all, so that a sweep
# over the graph costs one lookup per node.  They are read from the rule table (its spellings stay the
# only source).  Function targets are keyed by identity, as ``Rule.matches`` compares them (the rule
# table keeps them alive).
_RULE, _FIND, _SELECTION, _UNLISTED = 1, 2, 4, 8  # a rule's spelling; in-place or no-jump spelling;
# argmax/argmin/topk; a discrete op without a rule (rules.UNLISTED: found and reported, left hard)


def _spelling_tables() -> tuple[dict[int, int], dict[str, int], frozenset[str]]:
    functions: dict[int, int] = {}
    methods: dict[str, int] = {}

    def add(table, key, bit):
        table[key] = table.get(key, 0) | bit

    for r in rules.RULES:
        for f in r.functions:
            add(functions, id(f), _RULE)
        for m in r.methods:
            add(methods, m, _RULE)
        for m in r.inplace:
            add(methods, m, _FIND)
        for f in r.inplace_functions:  # torch.round_(x)
            add(functions, id(f), _FIND)
    for functions_, method in rules.NO_JUMP.values():
        for f in functions_:
            add(functions, id(f), _FIND)
        add(methods, method, _FIND)
    for key in rules.UNLISTED_FUNCTIONS:  # (keyed by id there too)
        add(functions, key, _UNLISTED)
    for m in rules.UNLISTED_METHODS:
        add(methods, m, _UNLISTED)
    for spelling in (*rules.ARGMAX, *rules.TOPK):
        if isinstance(spelling, str):
            add(methods, spelling, _SELECTION)
        else:
            add(functions, id(spelling), _SELECTION)
    return functions, methods, frozenset(m for r in rules.RULES for m in r.inplace)


_FUNCTION_BITS, _METHOD_BITS, _INPLACE_NAMES = _spelling_tables()


def _classify(node: Node) -> int:
    """What ``node`` may be (``_RULE | _FIND | _SELECTION | _UNLISTED`` bits); 0 for most nodes (and for
    ``call_module`` nodes: ``_Planner.plan`` looks their module's type up in ``rules.UNLISTED_MODULES``)."""
    op = node.op
    if op == "call_function":
        target = node.target
        bits = _FUNCTION_BITS.get(id(target), 0)
        if isinstance(target, OpOverload) and target._opname in _INPLACE_NAMES:
            bits |= _FIND  # aten.round_.default, ...: see Rule.matches_inplace
        return bits
    if op == "call_method":
        return _METHOD_BITS.get(node.target, 0)
    return 0


def _match(node: Node) -> rules.Rule | None:
    """``rules.match(node)``, after a lookup that rules out most nodes."""
    return rules.match(node) if _classify(node) & _RULE else None


def linearize_pass(gm: GraphModule, *, eps: float = DEFAULT_EPS, mode: str = "linear",
                   config: SLLConfig | None = None, example_inputs: tuple | None = None) -> PassResult:
    """Rewrite ``gm`` in place; the report is attached as ``gm.sll_report``.

    ``config`` (an :class:`SLLConfig`) overrides ``eps`` and ``mode`` when given.
    """
    config = config if config is not None else SLLConfig(eps=eps, mode=mode)
    check_not_decomposed(gm.graph, "linearize_module", "linearize the model, or its program before "
                         "decomposing it; a decomposed program of export_hard's result linearizes as usual")
    planner = _Planner(gm, config, dtypes.infer_kinds(gm, example_inputs))
    plan = sorted(planner.plan(), key=lambda s: planner.order[s.node])  # graph order: comparisons first
    before = _count_sll(gm)
    surrogates: dict = {}  # comparison -> its sll node; ("soft", sll node) -> its soft mask (_soft_mask)
    device = eps_device(gm)  # (before the first eps buffer is added)
    created: list[Node] = []
    for step in plan:
        _apply(gm, step, surrogates, device, created)
    copied = {c for s in plan if s.rewrites for c in s.extra.get("chain", ((),))[0]}
    copied |= {c for s in plan if s.rewrites for _, chain, _ in s.extra.get("cast_hard", {}).values() for c in chain}
    for c in sorted(copied, key=planner.order.__getitem__, reverse=True):  # originals only integer uses read
        _erase_if_unused(gm.graph, c)
    check_placement(gm.graph, created, "linearize_pass")  # graph.lint()'s checks, for the nodes added
    for node in created:  # fake values (an exported graph's) taken from the node replaced, or its own: stale
        for key in STALE_META:  # (torch.export computes fresh ones when the result is exported again)
            node.meta.pop(key, None)
    gm.recompile()
    report = RewriteReport([s.entry for s in plan], mode=config.mode, method=config.method, auto=config.auto)
    _check(gm, report, planner, before)
    gm.sll_report = report
    return PassResult(gm, modified=bool(report.rewritten))


@dataclass
class _Step:
    node: Node
    rule: rules.Rule | None
    entry: Entry
    mode: str = "linear"
    casts: tuple = ()                               # cast rules: the float-cast users to re-point
    extra: dict = field(default_factory=dict)       # pattern pieces: mask node, argmax node, zeros/topk nodes

    @property
    def rewrites(self) -> bool:
        return self.entry.replacement is not None


@dataclass(frozen=True)
class _Uses:
    """What a result's uses make of its rewrite (``_Planner._verdict``)."""
    hard: str = ""                                  # not one float use: the reason to leave it hard
    reason: str = ""                                # a rewrite's reason (other uses than float arithmetic)
    keep: frozenset = frozenset()                   # the users that keep reading the hard result
    found: tuple = ()                               # the uses that are not float arithmetic
    mixed: bool = False                             # a user that keeps the hard result has float uses too
    chain: tuple = ()                               # value-preserving nodes shared by float and integer uses,
    ends: frozenset = frozenset()                   # in graph order, copied for those integer uses (_copy_chain)
    blocked: str = ""                               # (mixed) why such nodes cannot be copied


class _Planner:
    def __init__(self, gm: GraphModule, config: SLLConfig, kinds: dict):
        self.gm, self.config, self.kinds = gm, config, kinds
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}
        self.taken: set[Node] = set()               # where/masked_fill, argmax, topk taken by a rewritten pattern
        self.pattern_users: set[Node] = set()       # rewritten one_hot/scatter nodes (users inside a pattern)
        self.pattern_hard: set[Node] = set()        # one_hot(argmax)/top-k scatter nodes not quite the pattern
        self.decided: dict[Node, bool] = {}         # planned rule nodes -> rewritten (read by _use)
        self._sources: dict = {}                    # stack_trace text -> source_of
        self._reach: tuple[set, set] | None = None  # (reaches the output, reaches it not through .detach())
        self._graded: tuple | None = None           # _gradient_sources: (graded nodes, any detach)
        self._foreseen: dict[Node, bool] = {}       # elementwise ops' decisions foreseen before their sweep

    def plan(self) -> list[_Step]:
        # (node, rule), in graph order: where/masked_fill; comparisons (and in-place / no-jump / unlisted finds);
        # the elementwise ops, one-hots and top-k masks; and the argmax/topk nodes
        masks, second, third, selections = [], [], [], []
        unlisted_modules = rules.UNLISTED_MODULES
        # (looked up per call_module node only when the model holds such a module at all: one pass over the modules)
        any_unlisted = any(type(m) in unlisted_modules for m in self.gm.modules())
        for node in self.order:
            bits = _classify(node)
            if not bits:
                if any_unlisted and node.op == "call_module" and \
                        type(self.gm.get_submodule(node.target)) in unlisted_modules:
                    second.append((node, None))  # nn.Threshold, ...: a discrete op without a rule
                continue
            rule = rules.match(node) if bits & _RULE else None
            if rule is None:
                if bits & (_FIND | _UNLISTED):
                    second.append((node, None))
            elif rule.pattern == "cast":
                second.append((node, rule))
            elif rule.pattern == "mask":
                masks.append((node, rule))
            else:
                third.append((node, rule))
            if bits & _SELECTION:
                selections.append(node)
        steps = []
        for node, rule in masks:                    # sweep 1: the selections, which comparisons read
            if step := self._plan(node, rule):
                steps.append(step)
        # sweeps 2 and 3 go from the last node back: whether a result is used as a float depends on
        # whether its users (later nodes: a comparison of it, sign(round(x))) are linearized themselves
        for node, rule in reversed(second):         # sweep 2: comparisons (and in-place / no-jump finds)
            if step := (self._plan_unmatched(node) if rule is None else self._plan(node, rule)):
                steps.append(step)
        steps = self._unselect(steps)
        for node, rule in reversed(third):          # sweep 3: elementwise ops, one-hots, top-k masks
            if step := self._plan(node, rule):
                steps.append(step)
        steps += self._plan_bare_selections(selections)
        return steps

    def _unselect(self, steps: list[_Step]) -> list[_Step]:
        """A selection planned as rewritten whose comparison stays hard (no gradient reaches it: ``rand_like(h)
        < p``, a buffer, ``h.detach() > 0``; read through ``.detach()`` only) has no surrogate to read: it stays
        the hard where/masked_fill too (its branches keep torch.where's own gradient), for its comparison's reason."""
        entries = {s.node: s.entry for s in steps}
        out = []
        for step in steps:
            mask = step.extra.get("mask") if step.rewrites and step.rule.pattern == "mask" else None
            if mask is not None and not self.decided.get(mask, False):
                why = entries[mask].reason if mask in entries else "it is not planned"
                step = self._hard(step.node, step.rule, f"left hard: its comparison '{mask.name}' stays hard ({why})")
                self.taken.discard(step.node)
                self.decided[step.node] = False
            out.append(step)
        return out

    # -- shared checks ----------------------------------------------------------------------
    def _stack(self, node: Node) -> list:
        return list((node.meta.get("nn_module_stack") or {}).values())

    def _entry(self, node, replacement=None, reason="", eps=None, mode=None, auto=False, op=None) -> Entry:
        return Entry(node=node.name, op=op or rules.describe_target(node), replacement=replacement, reason=reason,
                     eps=eps, module=module_of(node), source=self._source(node), mode=mode, auto=auto)

    def _source(self, node: Node) -> str:
        """``source_of(node)``, read once per stack trace (the nodes of one source line share it)."""
        text = node.meta.get("stack_trace")
        source = self._sources.get(text)
        if source is None:
            source = self._sources[text] = source_of(node)
        return source

    def _hard(self, node, rule, reason) -> _Step:
        return _Step(node, rule, self._entry(node, reason=reason))

    def _plan(self, node: Node, rule: rules.Rule) -> _Step | None:
        stack = self._stack(node)
        if self.config.is_skipped(stack):
            self.decided[node] = False
            return None
        planner = {"elementwise": self._plan_elementwise, "cast": self._plan_comparison,
                   "mask": self._plan_mask, "onehot": self._plan_onehot, "topk": self._plan_topk}[rule.pattern]
        step = planner(node, rule)
        self.decided[node] = step is not None and step.rewrites
        return step

    def _rewrite(self, node, rule, decimals=0, eps=None, live=None, **extra) -> _Step:
        """A step rewriting ``node``, or leaving it hard when its rule is switched off or its value (or
        that of the ``live`` nodes, its float uses) reaches the output only through ``.detach()``."""
        if self.config.is_disabled(rule.kind):  # before the eps check: an eps for a switched-off kind is moot
            return self._hard(node, rule, f"rule '{rule.kind}' switched off by the config")
        if self._detached_only((node,) if live is None else live):
            return self._hard(node, rule, _DETACHED)
        if self._no_gradient(node):
            return self._hard(node, rule, _NO_GRADIENT)
        stack = self._stack(node)
        eps = self.config.eps_for(rule.kind, stack) if eps is None else eps
        auto = isinstance(eps, str) and eps == "auto"
        if auto:  # a placeholder until calibrated (sll_fx/calibration.py)
            eps = min(DEFAULT_EPS, 0.5 * eps_limit(rule.sll_op, decimals))
        method = self.config.method
        if method != "sll" and rule.sll_op in ("argmax_onehot", "topk_mask"):
            raise ValueError(f"node '{node.name}' ({rules.describe_target(node)}, {source_of(node) or 'no source'}): "
                             f"sll.{rule.sll_op} supports only method='sll', not method={method!r}")
        try:
            check_eps(rule.sll_op, eps, decimals)
        except EpsError as e:
            raise EpsError(f"node '{node.name}' ({rules.describe_target(node)}, "
                           f"{source_of(node) or 'no source'}): {e}") from None
        replacement = f"sll.{rule.sll_op}" + (f"({rule.discriminator})" if rule.discriminator else "")
        if method != "sll" and rule.sll_op != "select":
            replacement += f"[{method}]"
        mode = self.config.mode_for(stack) if method == "sll" else method  # ste/sigmoid: hard forward
        # the report's mode: a selection runs its comparison's (the mask's module decides)
        shown = mode if method != "sll" or "mask" not in extra else self.config.mode_for(self._stack(extra["mask"]))
        entry = self._entry(node, replacement, extra.pop("reason", ""), eps, mode=shown, auto=auto)
        return _Step(node, rule, entry, mode=mode, casts=extra.pop("casts", ()), extra=extra)

    def _is_int(self, value) -> bool:
        return isinstance(value, Node) and self.kinds.get(value) in _INT_KINDS

    def _is_float(self, value: Node) -> bool:
        """Is ``value`` known to be floating (its inferred kind, else an exported graph's fake value)?"""
        kind = self.kinds.get(value)
        if kind is None:
            val = value.meta.get("val")
            return isinstance(val, torch.Tensor) and val.dtype.is_floating_point
        return kind == dtypes.FLOAT

    def _int_comparison(self, rule, node) -> bool:
        """An integer ``x`` against a number or an integer tensor: no gradient to give.  Against a floating
        (or unknown) threshold tensor the jump moves with it: sll::compare computes in floats then."""
        x, *rest = rule.operand_values(node)
        t = rest[0] if rest else None
        return self._is_int(x) and not (isinstance(t, Node) and self.kinds.get(t) not in _INT_KINDS)

    # -- how a result is used: through .detach() only; as a float, or as a bool/integer ----------------
    def _detached_only(self, nodes) -> bool:
        """Do ``nodes`` reach the graph's output, but only through ``.detach()`` (``x.data``)?  Then a
        surrogate there gives no gradient, and in linear mode it only changes the forward."""
        if not nodes:
            return False
        if self._reach is None:  # (a graph without any detach has nothing to find: no walk)
            self._reach = _reach_output(self.gm.graph, self.order) if self._gradients()[1] else ()
        if not self._reach:
            return False
        reaches, differentiable = self._reach
        return any(n in reaches for n in nodes) and not any(n in differentiable for n in nodes)

    def _no_gradient(self, node: Node) -> bool:
        """Can no gradient reach ``node``'s inputs (``_gradient_sources``)?  Then a surrogate gives none."""
        graded = self._gradients()[0]
        return not any(n in graded for n in _pattern_inputs(node))

    def _gradients(self) -> tuple[set, bool]:
        """``_gradient_sources(gm)``, made once: (the nodes a gradient can come from or pass through, any detach)."""
        if self._graded is None:
            self._graded = _gradient_sources(self.gm, self.kinds)
        return self._graded

    def _use(self, user: Node, value: Node) -> str:
        """How ``user`` reads ``value``, a discrete op's float result: _FLOAT_USE, _PASS_USE, _META_USE or
        _OTHER_USE (see ``_use_kind``).  A discrete op reading it is a float use when it is linearized
        itself (its surrogate passes the gradient on; the users of a node are planned before it)."""
        bits = _classify(user)
        if bits & _FIND and rules.match_inplace(user) is not None:
            return _OTHER_USE  # x.round_(): an in-place discrete op stays hard, it would round a surrogate
        if not bits & (_RULE | _SELECTION):  # (most users: no discrete op, no selection)
            return _use_kind(user, value, self.kinds)
        rule = rules.match(user) if bits & _RULE else None
        if rule is not None and rule.pattern in ("elementwise", "cast") and value in _operands(rule, user):
            return _FLOAT_USE if self._linearized(user, rule) else _OTHER_USE
        if _argmax_spelling(user) is not None and _arg(user, 0, "input") is value:
            linearized = any(self.decided.get(u) for u in user.users)      # one_hot(argmax(value, dim), n)
            return _FLOAT_USE if linearized else _OTHER_USE
        if _is_topk(user) and _arg(user, 0, "input") is value:
            linearized = any(self.decided.get(u) for u in _topk_index_users(user))
            values = any(u.op == "call_function" and ((u.target is getattr and u.args[1:2] == ("values",))
                                                     or (u.target is operator.getitem and u.args[1:2] == (0,)))
                         for u in user.users)  # topk(value).values: the selected values carry the gradient
            return _FLOAT_USE if linearized or values else _OTHER_USE
        return _use_kind(user, value, self.kinds)

    def _linearized(self, node: Node, rule: rules.Rule) -> bool:
        """Is the discrete op ``node`` rewritten (its surrogate passes a gradient on)?  Its decision once planned.
        Before that (a selection's or a comparison's user: those are planned first), an elementwise op's is
        foreseen by planning it now, without recording it (``torch.round(x.masked_fill(x > 0, 2.5)).long()``:
        the round stays hard, so the selection has no float use); any other's is taken to be yes."""
        decided = self.decided.get(node)
        if decided is not None:
            return decided
        if rule.pattern != "elementwise":
            return True
        if node not in self._foreseen:
            self._foreseen[node] = True  # (while foreseeing it: a cycle back to it reads yes)
            skipped = self.config.is_skipped(self._stack(node))
            self._foreseen[node] = not skipped and self._plan_elementwise(node, rule).rewrites
        return self._foreseen[node]

    def _split_uses(self, value: Node, users, copies: bool = True) -> tuple:
        """``users`` of ``value``, split: those through which it reaches float arithmetic only, and the
        others (they keep reading the hard result); the uses found that are not float arithmetic; and
        whether float arithmetic is reached through one of the others too (``q = round(h).clamp(-8, 7) * s``
        used both as a float and by ``q.long()``).  Such a user reads the surrogate when the chain of views and
        value-preserving arithmetic between ``value`` and those integer uses can be copied for them (reading
        the hard result): the chain (in graph order) and its integer uses are returned, and a mixed user that
        stays hard only where it cannot (``copies`` False, or the chain writes in place: the reason why)."""
        floats, others, found, mixed, mixed_users = [], [], [], False, []
        parents: dict[Node, set] = {}
        ends: set = set()
        for user in users:
            uses, saw_float, walk, reached = self._other_uses(user, value)
            found += [u for u in uses if u not in found]
            if uses and saw_float:
                mixed_users.append(user)
                for u, vs in walk.items():
                    parents.setdefault(u, set()).update(vs)
                ends.update(reached)
            else:
                (others if uses else floats).append(user)
        found.sort(key=self.order.__getitem__)
        chain, blocked = (), ""
        if mixed_users:
            chain, blocked = self._chain(value, parents, ends) if copies else ((), "")
            if chain:
                floats += mixed_users
            else:
                others += mixed_users
                mixed = True
                chain, ends = (), set()
        return floats, others, found, mixed, (chain, frozenset(ends), blocked)

    def _chain(self, value: Node, parents: dict, ends: set) -> tuple[tuple, str]:
        """The nodes between ``value`` and the integer uses ``ends`` (``parents``: each walked node -> the
        nodes it was reached from), in graph order, and ``""``; or ``()`` and why they cannot be copied for
        those uses: a node written in place, one with side effects (a random draw), a discrete op or a
        pattern's piece, or an integer use that is a part of the chain itself."""
        chain, stack = set(), [v for _, v in ends]
        while stack:
            v = stack.pop()
            if v is value or v in chain or v not in parents:
                continue
            chain.add(v)
            stack += parents[v]
        chain = sorted(chain, key=self.order.__getitem__)
        for c in chain:
            written = [w for w in c.users if c in _mutated(w)]
            if _mutated(c) or written:
                return (), f"{_describe([c])} is written in place{f' (by {_describe(written)})' if written else ''}"
            if c.is_impure() or _classify(c) or c in self.taken:
                return (), f"{_describe([c])} is a discrete op or has side effects"
            if any(u in chain for u, _ in ends):
                return (), f"{_describe([c])} is itself read both ways"
        return tuple(chain), ""

    def _verdict(self, uses_of: list[tuple[Node, list[Node]]], what: str, copies: bool = True) -> _Uses:
        """What the uses of a result (``uses_of``: (value, its users) pairs) make of its rewrite."""
        floats, others, found, written, mixed, chain, ends, blocked = [], [], [], [], False, [], set(), ""
        for value, users in uses_of:
            f, o, u, m, (c, e, b) = self._split_uses(value, users, copies)
            floats += f
            others += o
            found += [n for n in u if n not in found]
            written += [w for w in users if value in _mutated(w)]
            mixed = mixed or m
            chain += c
            ends |= e
            blocked = blocked or b
        found.sort(key=self.order.__getitem__)
        if not found:
            return _Uses()
        if not floats:
            return _Uses(hard=_only_other_uses(found, what, blocked if mixed else None), found=tuple(found),
                         mixed=mixed)
        if written:  # x.clamp_(): a hard copy for the other uses would miss the write
            return _Uses(reason=_also_other_uses(found, what, written), found=tuple(found))
        chain = sorted(set(chain), key=self.order.__getitem__)
        return _Uses(reason=_also_other_uses(found, what, chain=chain) + (_mixed(blocked) if mixed else ""),
                     keep=frozenset(others), found=tuple(found), mixed=mixed, chain=tuple(chain),
                     ends=frozenset(u for u, _ in ends), blocked=blocked)

    def _other_uses(self, user: Node, value: Node) -> tuple[list[Node], bool, dict, set]:
        """The uses of ``value`` by ``user`` that are not float arithmetic, following views, copies and
        float casts to their own users, and ``1 - mask``-like arithmetic that is read as a mask further on
        (``(1 - mask).bool()``: :meth:`_read_as_mask`); whether float arithmetic was found too; the nodes
        followed (-> the nodes each was reached from); and the (use, value read) pairs of the uses found."""
        out, seen, stack, saw_float = [], set(), [(user, value)], False
        walk: dict[Node, set] = {}
        reached: set = set()
        while stack:
            u, v = stack.pop()
            if (u, v) in seen:
                continue
            seen.add((u, v))
            kind = self._use(u, v)
            if kind == _FLOAT_USE and _carries(u, v) and self._read_as_mask(u):
                kind = _PASS_USE  # (a bool use of 1 - mask would see 1 - (a fraction) inside the band; an
                # integer use of round(h).clamp(0, 3), its truncation)
            if kind == _PASS_USE:
                walk.setdefault(u, set()).add(v)
                stack += [(w, u) for w in u.users]
            elif kind == _OTHER_USE:
                reached.add((u, v))
                if u not in out:
                    out.append(u)
            saw_float = saw_float or kind == _FLOAT_USE
        return out, saw_float, walk, reached

    def _read_as_mask(self, value: Node) -> bool:
        """Is ``value``, a ``1 - mask``-like function of a 0/1 (or -1/0/1, or integer) result, read as a mask or
        an integer further on: by a bool or integer use (a cast, a logical op, an index, an op left hard) that
        does not only order values (argmax of ``10 * sign(h)``), through views and more such functions
        (``_carries``: ``round(h).clamp(0, 3).long()``, ``(1 - m) * a + m * b`` then ``.long()``), up to
        ``_MASK_DEPTH`` of them?"""
        seen, frontier = {value}, [value]
        for _ in range(_MASK_DEPTH + 1):
            if not frontier:
                break
            following = []
            for v in frontier:
                for w in v.users:
                    kind = self._use(w, v)
                    if kind == _OTHER_USE and _op_name(w) not in _ORDER_NAMES:
                        return True
                    if w not in seen and (kind == _PASS_USE or (kind == _FLOAT_USE and _carries(w, v))):
                        seen.add(w)
                        following.append(w)
            frontier = following
        return False

    # -- patterns -----------------------------------------------------------------------------
    def _plan_elementwise(self, node, rule) -> _Step:
        if extra := rule.unsupported_arguments(node):
            return self._hard(node, rule, f"unsupported argument(s) {', '.join(extra)}: left hard")
        x = rule.operand_values(node)[0]
        if self._is_int(x):
            return self._hard(node, rule, f"input '{_name(x)}' has an integer dtype: no gradient to give, left hard")
        keywords = rule.keyword_values(node)
        if any(isinstance(v, Node) for v in keywords.values()):
            return self._hard(node, rule, "argument computed at run time (e.g. decimals=tensor): left hard")
        uses = self._verdict([(node, list(node.users))], "result")
        if uses.hard and not self.config.is_disabled(rule.kind):
            return self._hard(node, rule, uses.hard)
        return self._rewrite(node, rule, decimals=keywords.get("decimals", 0), reason=uses.reason,
                             hard_uses=uses.keep, chain=(uses.chain, uses.ends))

    def _plan_comparison(self, node, rule) -> _Step:
        if self.config.is_disabled(rule.kind):
            return self._hard(node, rule, f"rule '{rule.kind}' switched off by the config")
        if extra := rule.unsupported_arguments(node):
            return self._hard(node, rule, f"unsupported argument(s) {', '.join(extra)}: left hard")
        x = rule.operand_values(node)[0]
        if self._int_comparison(rule, node):  # as sll::compare itself decides at run time
            return self._hard(node, rule, f"input '{_name(x)}' has an integer dtype: no gradient to give, left hard")
        casts = [u for u in node.users if _is_float_cast(u, node, self.kinds) or _moved_to_float(u, node, self.kinds)]
        products = {u: f for u in node.users if (f := _mask_factor(u, node, self.kinds)) is not None}
        selections = [u for u in node.users if u in self.taken]
        # a cast's own uses: float arithmetic, or a bool/integer use (`.float().bool()`, `x[m.float().long()]`)
        # that keeps reading the hard 0/1 cast (all of them: the cast stays hard, a bool use of the comparison)
        cast_hard, dropped, cast_uses, written, mixed, blocked, chain = {}, [], [], [], None, None, []
        for cast in casts:
            uses = self._verdict([(cast, list(cast.users))], "0/1 result")
            if uses.hard or uses.keep or uses.chain:
                cast_uses += [u for u in uses.found if u not in cast_uses]
                if uses.hard:
                    dropped.append(cast)
                    blocked = uses.hard if uses.mixed and blocked is None else blocked
                else:  # (its users that keep the hard cast; the nodes copied for its integer uses, and those)
                    cast_hard[cast] = (uses.keep, uses.chain, uses.ends)
                    mixed = uses.blocked if uses.mixed and mixed is None else mixed
                    chain += uses.chain
            elif uses.reason:  # the cast is written in place: its other uses see the surrogate (reason says so)
                written.append(uses.reason)
        casts = [c for c in casts if c not in dropped]
        bool_uses = [u for u in node.users if u not in casts and u not in selections and u not in products]
        shown = [u for u in bool_uses if u not in dropped] + cast_uses  # a dropped cast: shown by its uses
        if not casts and not selections and not products:
            if dropped:
                return self._hard(node, rule, blocked or _only_other_uses(shown, "0/1 result"))
            held = [u for u in bool_uses if self.decided.get(u) is False and (r := _match(u)) is not None
                    and r.pattern == "mask"]
            if held and len(held) == len(bool_uses):  # (its where/masked_fill stays hard: its entry says why)
                return self._hard(node, rule, f"the mask of {_describe(held)}, which stays hard (its entry says why): "
                                              "left hard")
            return self._hard(node, rule, f"boolean result used by {_describe(bool_uses)}: left hard "
                                          "(cast it with .float() to linearize)")
        if self._detached_only([*casts, *products, *selections]):
            return self._hard(node, rule, _DETACHED)
        through = f", through a copy of {_describe(chain)} on the hard 0/1 cast" if chain else ""
        reason = "; ".join(([f"also used as bool by {_describe(shown)}: that use stays hard{through}"
                             f"{_mixed(mixed) if mixed is not None else ''}"] if shown else []) + written)
        return self._rewrite(node, rule, casts=tuple(casts), reason=reason, products=products,
                             cast_hard=cast_hard, live=())

    def _comparison_of(self, mask) -> tuple[rules.Rule | None, str]:
        """The cast rule of a selection's mask operand, or why it cannot be linearized."""
        rule = rules.match(mask) if isinstance(mask, Node) else None
        if rule is None or rule.pattern != "cast":
            return None, "its mask is not a comparison"
        if self.config.is_disabled(rule.kind):
            return None, f"its comparison's rule '{rule.kind}' is switched off by the config"
        if rule.unsupported_arguments(mask) or self._int_comparison(rule, mask):
            return None, "its comparison stays hard (integer input or unsupported arguments)"
        if self.config.is_skipped(self._stack(mask)):
            return None, "its comparison sits in a skipped submodule"
        return rule, ""

    def _plan_mask(self, node, rule) -> _Step | None:
        if rule.unsupported_arguments(node):
            return self._hard(node, rule, "unsupported arguments: left hard")
        operands = rule.operand_values(node)
        mask = operands[rule.operands.index("mask" if rule.select_op == "masked_fill" else "condition")]
        cmp_rule, why = self._comparison_of(mask)
        if cmp_rule is None:
            return None if why == "its mask is not a comparison" else self._hard(node, rule, f"left hard: {why}")
        # the result's dtype: where's two branches (Python numbers included), masked_fill's input
        branches = [operands[rule.operands.index(n)] for n in
                    (("input",) if rule.select_op == "masked_fill" else ("input", "other"))]
        if all(self._is_int(v) or (isinstance(v, (int, bool)) and not isinstance(v, Node)) for v in branches):
            return self._hard(node, rule, "integer result: it cannot hold a blend of its branches, left hard "
                                          "(give it floating branches, e.g. torch.where(x > t, 1.0, 0.0))")
        if self._detached_only((node,)):  # (before the check below: a hard op read through .detach() only)
            return self._hard(node, rule, _DETACHED)
        if self._read_as_mask(node):  # where(h > 0, h * 3, h - 1).long(): a blend would change that integer
            return self._hard(node, rule, "its result is read as an integer or a mask further on (a cast, an index, "
                                          "a logical op): a blend of its branches inside the band would change that "
                                          "value, left hard (its branches keep torch.where's own gradient)")
        band = self.config.eps_for(cmp_rule.kind, self._stack(mask))  # the band is the comparison's
        # a result not known to be floating may be an integer at run time: sll.select then takes the hard value
        # of the comparison (its surrogate is 1/2 on the threshold for > and >= alike: it cannot tell)
        exact = not any(self._is_float(v) if isinstance(v, Node) else isinstance(v, float) for v in branches)
        step = self._rewrite(node, rule, eps=band, mask=mask, exact=exact)
        if step.rewrites:
            self.taken.add(node)
        return step

    def _plan_onehot(self, node, rule) -> _Step | None:
        index, n = _arg(node, 0, "input"), _arg(node, 1, "num_classes", -1)
        if not isinstance(index, Node) or _argmax_spelling(index) is None:
            return None  # one_hot of labels: nothing discrete to linearize
        x, dim, keepdim = _argmax_args(index)
        self.pattern_hard.add(node)  # (until it is planned below)
        if dim is None or keepdim or isinstance(dim, Node):
            return self._hard(node, rule, "argmax without a literal dim (or with keepdim): left hard")
        if isinstance(n, Node):  # num_classes=h.shape[-1]: an int only at run time (to fx, a node)
            return self._hard(node, rule, f"one_hot's num_classes is computed at run time ({_describe([n])}): "
                                          "it must be a literal int (e.g. F.one_hot(h.argmax(-1), 10)), left hard")
        if not isinstance(n, int) or n < 0:
            return self._hard(node, rule, "one_hot without a literal num_classes: its width depends on the data, "
                                          "left hard (pass num_classes)")
        if self._is_int(x):
            return self._hard(node, rule, f"input '{_name(x)}' has an integer dtype: left hard")
        uses = self._verdict([(node, list(node.users))], "0/1 result")
        if uses.hard and not self.config.is_disabled(rule.kind):
            step = self._hard(node, rule, uses.hard)
        else:
            step = self._rewrite(node, rule, x=x, dim=dim, n=n, largest=_argmax_spelling(index), argmax=index,
                                 reason=uses.reason, hard_uses=uses.keep, chain=(uses.chain, uses.ends))
        self.pattern_hard.discard(node)
        self.taken.add(index)  # its entry is this node's (rewritten, or left hard)
        self.pattern_users.add(node)
        return step

    def _plan_topk(self, node, rule) -> _Step | None:
        pieces = _topk_pattern(node)
        if pieces is None:
            return None  # an ordinary scatter
        if isinstance(pieces, str):
            self.pattern_hard.add(node)
            return self._hard(node, rule, f"top-k mask left hard: {pieces}")
        if self._is_int(pieces["x"]):
            return self._hard(node, rule, f"input '{_name(pieces['x'])}' has an integer dtype: left hard")
        later = [u for u in pieces["zeros"].users if self.order[u] > self.order[node]] if pieces["inplace"] else []
        # (mask.scatter_(...): the mask's uses are those of the zeros after it)
        uses = self._verdict([(node, list(node.users)), (pieces["zeros"], later)], "0/1 result",
                             copies=not pieces["inplace"])
        if uses.hard and not self.config.is_disabled(rule.kind):
            step = self._hard(node, rule, uses.hard)
        else:
            step = self._rewrite(node, rule, reason=uses.reason, hard_uses=uses.keep, chain=(uses.chain, uses.ends),
                                 **pieces)
        self.taken.update((pieces["topk"], pieces["index"]))  # its entry is this node's
        self.pattern_users.update((node, pieces["zeros"]))
        return step

    def _plan_unmatched(self, node: Node) -> _Step | None:
        if self.config.is_skipped(self._stack(node)):
            return None
        if node.op == "call_module":
            return self._plan_unlisted(node, self.gm.get_submodule(node.target))
        if rules.match_inplace(node):  # x.round_(), torch.round_(x), aten.round_.default
            return self._hard(node, None, f"in-place {rules.describe_target(node)}: left hard "
                                          "(use the out-of-place spelling to linearize)")
        if (name := rules.match_no_jump(node)) and any(_is_float_cast(u, node, {}) for u in node.users):
            if name == "eq" and (found := _max_one_hot(node)) is not None:
                largest, dim = found
                arg = "argmax" if largest else "argmin"
                fix = f"F.one_hot(x.{arg}({dim}), n)" + ("" if dim == -1 else f".movedim(-1, {dim})")
                return self._hard(node, None, f"x == x.{'max' if largest else 'min'}(dim={dim}, keepdim=True) is "
                                              f"one_hot({arg}(x, {dim})) (ties aside), which jumps where the {arg} "
                                              f"changes: write {fix} (n: x's size along dim {dim}) to linearize it; "
                                              "left hard")
            return self._hard(node, None, f"'{name}' has no jump to linearize (a spike of measure zero): left hard")
        return self._plan_unlisted(node)

    def _plan_unlisted(self, node: Node, module: nn.Module | None = None) -> _Step | None:
        """A discrete op without a rule (``rules.UNLISTED``: ``torch.div(h, s, rounding_mode='floor')``,
        ``h // s``, ``torch.bucketize``, ``nn.Threshold``, ...): found and left hard, with the spelling that
        is linearized where there is one.  Only where a gradient is lost: an operand it jumps in is known to
        be floating (an integer division of integers is no jump) and a gradient reaches it
        (``_gradient_sources``), and its value reaches the output not only through ``.detach()``."""
        unlisted = rules.match_unlisted(node, module)
        if unlisted is None:
            return None
        graded = self._gradients()[0]
        if not any(isinstance(v, Node) and v in graded and self._is_float(v) for v in unlisted.jump_operands(node)):
            return None
        if self._detached_only((node,)):  # a straight-through estimator already
            return None
        spelling = f"nn.{type(module).__name__}" if module is not None else rules.describe_target(node)
        return _Step(node, None, self._entry(node, reason=unlisted.reason(spelling), op=spelling))

    def _plan_bare_selections(self, selections: list[Node]) -> list[_Step]:
        """argmax/argmin/topk whose indices are used other than in a rewritten pattern: found, left hard.
        ``selections``: the argmax/argmin/topk spellings in the graph (the other nodes find nothing)."""
        steps = []
        for node in sorted(self.taken.union(selections), key=self.order.__getitem__):
            if self.config.is_skipped(self._stack(node)):
                continue
            if node in self.taken:
                others = [u for u in (_topk_index_users(node) if _is_topk(node) else node.users)
                          if u not in self.pattern_users and u not in self.taken]
                if others and (_argmax_spelling(node) is not None or _is_topk(node)):
                    steps.append(self._hard(node, None, f"index also used by {_describe(others)}: that use "
                                                        "stays hard (the one-hot/mask use is linearized)"))
                continue
            users = list(node.users) if _argmax_spelling(node) is not None else _topk_index_users(node)
            if users and all(u in self.pattern_hard for u in users):  # one_hot(argmax(x, -1)) with no num_classes
                what = "that one_hot(argmax)" if _argmax_spelling(node) is not None else "that top-k mask"
                steps.append(self._hard(node, None, f"index used by {_describe(users)}: {what} is left hard (its "
                                                    "entry says why), and so is this index"))
            elif _argmax_spelling(node) is not None:
                steps.append(self._hard(node, None, f"index used by {_describe(list(node.users))}: only "
                                                    "one_hot(argmax(x, dim), n) has a surrogate, left hard"))
            elif _is_topk(node) and users:
                steps.append(self._hard(node, None, "indices used by "
                                        f"{_describe(users)}: only zeros_like(x).scatter(dim, "
                                        "topk(x, k, dim).indices, 1.0) masks have a surrogate, left hard"))
        return steps


# --- applying a step --------------------------------------------------------------------------

def _apply(gm: GraphModule, step: _Step, surrogates: dict, device: torch.device, created: list) -> None:
    """Rewrite one planned step; the nodes it adds are appended to ``created``."""
    if not step.rewrites:
        return
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
    hard_uses = step.extra.get("hard_uses", frozenset())  # users that keep reading the hard result
    chain, ends = step.extra.get("chain", ((), frozenset()))  # copied for integer uses, to read the hard result
    in_place = pattern == "elementwise" and node.op == "call_function" and not hard_uses and not chain
    # eps, checked by the planner, is from here on a buffer of gm (set_eps fills it), read by a get_attr node
    attr = None
    if in_place:  # the node becomes the sll op: same name, meta, users and place (no node to add or erase)
        if "eps" in kwargs:
            attr = kwargs["eps"] = eps_buffer(gm, node, eps, device)
        node.target, node.args, node.kwargs = rule.target, args, kwargs
        new = node
    else:
        with graph.inserting_before(node):
            new = graph.call_function(rule.target, args, kwargs)
        new.meta.update(node.meta)
        if "eps" in kwargs:
            attr = eps_input(gm, new, eps, device)
    created.append(new)
    new.meta["sll_entry"] = step.entry.node  # the report entry's name (set_eps keeps the report current)
    if attr is not None:
        attr.meta.update({k: v for k, v in node.meta.items() if k in _EPS_META})
        created.append(attr)
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
            created.append(soft)
            for user in list(cast.users):
                if user not in keep:
                    user.replace_input_with(cast, soft)
            _copy_chain(graph, chain, ends, cast, soft, created)
        for product, factor in step.extra["products"].items():  # x * (x > t): an implicit cast to x's dtype
            with graph.inserting_before(product):  # (x > t) * 1.0: the bool became the default float dtype
                as_factor = graph.call_method("to", (new, factor)) if isinstance(factor, torch.dtype) else \
                    graph.call_method("type_as", (new, factor))
            as_factor.meta.update(node.meta)
            product.replace_input_with(node, as_factor)
            created.append(as_factor)
        # selections taking this comparison are rewritten later in graph order and drop their use of it
        _erase_if_unused(graph, node)
        return
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


_EPS_META = ("nn_module_stack", "stack_trace", "source_fn_stack")  # what an eps get_attr node takes over


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
        created.append(copies[c])
    for end in ends:
        for c in [n for n in end.all_input_nodes if n in copies]:
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
        return "the scattered tensor is not zeros_like(x) of the same x"
    if value not in (1, 1.0) or isinstance(value, bool):
        return f"scattered value {value!r} is not 1"
    if node.kwargs.get("reduce") is not None:
        return f"scatter with reduce={node.kwargs['reduce']!r} is not a mask"
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (k, dim, tdim)) or dim != tdim:
        for what, v in (("k", k), ("dim", tdim), ("scatter's dim", dim)):
            if isinstance(v, Node) and v.op == "placeholder":  # forward(self, x, top_k=3)
                given = v.args[0] if v.args and isinstance(v.args[0], int) else 3
                return (f"{what} comes from the input '{v.target}', known only at run time: fix it when "
                        f"linearizing, linearize_module(model, concrete_args={{'{v.target}': {given}}})")
        return "k and dim must be literal and the same for topk and scatter"
    if not isinstance(largest, bool):
        return "largest must be a literal"
    inplace = node.op == "call_method" and node.target == "scatter_"
    return {"x": x, "k": k, "dim": dim, "largest": largest, "zeros": zeros, "topk": topk, "index": index,
            "inplace": inplace}


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
_NAMESPACES = (torch, torch.nn.functional, operator, torch.Tensor, torch.linalg, torch.special)


def _op_name(node: Node) -> str | None:
    """The name of what ``node`` calls, when it is PyTorch's own (``mul`` for ``x * y``, ``torch.mul``,
    ``x.mul_(y)``, ``aten.mul.Tensor``); None for anything else."""
    if node.op == "call_method":
        return _target_name(True, node.target)
    try:
        return _target_name(False, node.target)
    except TypeError:  # (an unhashable callable)
        return _target_name.__wrapped__(False, node.target)


@functools.lru_cache(maxsize=1024)  # (a graph calls few targets, many times: one lookup in torch's namespaces each)
def _target_name(method: bool, t) -> str | None:
    if method:
        name = t
    elif isinstance(t, OpOverload):
        name = t._opname if t.namespace == "aten" else None
    elif isinstance(t, OpOverloadPacket):
        name = t._qualified_op_name.split("::")[-1] if t._qualified_op_name.startswith("aten::") else None
    else:
        name = getattr(t, "__name__", None)
        if not isinstance(name, str) or not any(getattr(ns, name, None) is t for ns in _NAMESPACES):
            return None
    if isinstance(name, str) and name.endswith("_") and not name.startswith("__"):
        name = name[:-1]  # in place: x.mul_(y), torch.relu_(x), aten.add_.Tensor
    return name


def _nodes_in(args) -> list[Node]:
    found = []
    map_arg(args, found.append)
    return found


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
_ORDER_NAMES = frozenset(("argmax", "argmin", "argsort", "sort", "searchsorted", "bucketize", "histc"))
_MASK_DEPTH = 8  # how many views and such functions _read_as_mask follows


def _carries(user: Node, value: Node) -> bool:
    """Does ``user`` carry ``value``'s values on (``_CARRY_NAMES``: ``1 - m``, ``r.clamp(0, 3)``, ``r.sum(-1)``,
    ``a * m``; ``where``/``masked_fill``'s data, not its condition)?"""
    return user.op in ("call_function", "call_method") and _op_name(user) in _CARRY_NAMES and \
        user in value.users  # (value is one of user's inputs: a dict lookup)


def _operands(rule: rules.Rule, node: Node) -> tuple:
    try:
        return rule.operand_values(node)
    except KeyError:
        return ()


def _only_other_uses(uses: list[Node], what: str, blocked: str | None = None) -> str:
    if blocked is not None:  # reached through the nodes its float uses go through, which cannot be copied
        return (f"{what} used by {_describe(uses)}, which passes no gradient (not float arithmetic: a bool or "
                "integer use, or an op left hard), through nodes its float uses go through too, which cannot be "
                f"copied for that use ({blocked or 'see the graph'}): left hard (that use would see fractional "
                "values inside the band in linear mode)")
    return (f"{what} used only by {_describe(uses)}, which passes no gradient (not float arithmetic: a bool or "
            "integer use, or an op left hard) and in linear mode would see fractional values inside the band: "
            "left hard")


def _mixed(blocked: str) -> str:
    """A rewrite's reason, when a user that keeps the hard result has float uses too: the nodes between it and
    its integer use cannot be copied for that use (``blocked``: why)."""
    return (f" (so do the float uses made through the nodes that integer use is reached through, which cannot be "
            f"copied for it: {blocked or 'see the graph'})")


def _also_other_uses(uses: list[Node], what: str, written: list[Node] = (), chain: list[Node] = ()) -> str:
    also = (f"also used by {_describe(uses)}, which passes no gradient (not float arithmetic: a bool or integer "
            "use, or an op left hard)")
    if written:
        return (f"{also}; the {what} is written in place (by {_describe(written)}), so that use cannot keep the "
                "hard one: in linear mode it sees fractional values inside the band")
    if chain:
        return (f"{also}: that use reads the hard {what}, through a copy of {_describe(chain)} (the float uses "
                "read the originals, on the surrogate)")
    return f"{also}: that use reads the hard {what}"


# --- reaching the output, and through .detach() only ------------------------------------------------
_DETACHED = ("only used through .detach(): no gradient to give (a straight-through estimator already), "
             "left hard")
_NO_GRADIENT = ("no gradient reaches its input (computed under torch.no_grad(), after .detach(), from buffers "
                "and constants alone, or from values that carry none: random draws, *_like/new_* tensors, "
                "indices, integers): no gradient to give, left hard")
_DETACH_FUNCTIONS = (torch.detach, torch.Tensor.detach, torch.ops.aten.detach.default, torch.detach_,
                     torch.Tensor.detach_, torch.ops.aten.detach_.default, grad_regions.detached)
_INPLACE_OPERATORS = (operator.setitem, operator.iadd, operator.isub, operator.imul, operator.itruediv,
                      operator.imatmul, operator.ipow, operator.ifloordiv, operator.imod, operator.iand,
                      operator.ior, operator.ixor)


_DETACH_SET = frozenset(_DETACH_FUNCTIONS)
_INPLACE_SET = frozenset(_INPLACE_OPERATORS)
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
        dtypes.hashable(t) and t in _INPLACE_SET)


def _gradient_sources(gm: GraphModule, kinds: dict) -> tuple[set, bool]:
    """The nodes a gradient can come from or pass through: the graph's inputs, parameters (frozen ones too:
    they may be unfrozen later) and tensors that require grad, calls of modules with parameters, and everything computed from them, except
    through ``.detach()`` / ``x.data`` / a ``torch.no_grad()`` block's edge (``grad_regions.detached``), and
    except what carries no gradient on (``_carries_no_gradient``: ``rand_like(h)``, ``zeros_like(h)``,
    ``h.new_ones(n)``, ``h.shape``, argmax/argsort indices, an integer or bool result; an exported graph's
    node that its input's gradient did not reach: a ``wrap_with_set_grad_enabled(False, ...)`` body).  A
    pattern's result (``one_hot(argmax(x), n)``, a top-k mask) is one when its ``x`` is.
    A tensor written in place by such a node (``buf.add_(x)``) is one too.  Also returns whether the graph
    has any detach node (one of those edges)."""
    graded: set = set()
    memo: dict = {}  # (_mutated's, over the graph)
    plain: dict = {}  # (op, target) -> _plain_call's answer, over the graph
    any_detach = False
    for node in gm.graph.nodes:
        op = node.op
        if op == "placeholder":
            if kinds.get(node) not in _INT_KINDS:  # (an integer input cannot require grad)
                graded.add(node)
        elif op == "get_attr":  # (a parameter frozen now may be unfrozen later: it counts)
            value = dtypes.fetch_attr(gm, node.target)
            if isinstance(value, nn.Parameter) or (isinstance(value, torch.Tensor) and value.requires_grad):
                graded.add(node)
        elif op == "output":
            continue
        elif op != "call_module" and _plain_call(op, node.target, plain):  # (most nodes: the tests below, less
            # those its target settles: what is left of _carries_no_gradient is for an integer kind or export's
            # metadata)
            if graded.isdisjoint(node.all_input_nodes) or (
                    (kinds.get(node) in _INT_KINDS or node.meta.get("tensor_meta") is not None)
                    and _carries_no_gradient(node, kinds, graded)):
                continue
            graded.add(node)
            if op == "call_function" and node.kwargs:  # (an out= tensor)
                graded.update(_mutated(node, memo))
        elif _is_detach(node):
            any_detach = True
        elif op == "call_module":
            if not graded.isdisjoint(node.all_input_nodes) or any(
                    True for _ in gm.get_submodule(node.target).parameters()):
                graded.add(node)
        else:
            name = _op_name(node)  # (inlined _pattern_inputs: this runs on every node)
            inputs = node.all_input_nodes if name not in _PATTERN_NAMES else _pattern_inputs(node)
            if graded.isdisjoint(inputs) or _carries_no_gradient(node, kinds, graded, name):
                continue
            graded.add(node)
            if op == "call_function" or node.target.endswith("_"):
                graded.update(_mutated(node, memo))
    return graded, any_detach


def _plain_call(op: str, t, memo: dict) -> bool:
    """Is a call of ``t`` (``op``: call_function or call_method) one that ``_gradient_sources`` settles by its inputs
    and kind alone, whatever its arguments: no detach, no pattern (``_pattern_inputs``), no item or attribute
    read, no call that carries no gradient by its name or is an exported no-grad block, no in-place spelling
    (only an ``out=`` tensor is written)?  ``memo``: (op, target) -> the answer, over a graph."""
    try:
        found = memo.get((op, t))
    except TypeError:  # (an unhashable callable)
        return False
    if found is None:
        if op == "call_method":
            found = t not in ("detach", "detach_") and not t.endswith("_")
        else:
            found = not (t is getattr or t is operator.getitem or t in _DETACH_SET or
                         t is grad_regions.set_grad_hop() or _writes_first(op, t))
        name = _target_name(op == "call_method", t)
        found = memo[(op, t)] = found and name not in _PATTERN_NAMES and name not in _META_NAMES and \
            name not in _NO_GRADIENT_NAMES
    return found


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


#: calls whose result carries no gradient from their tensor arguments: tensors made like another (only its
#: shape, dtype or device is read), random draws like it, its shape, indices and counts
_NO_GRADIENT_NAMES = frozenset(("randint_like", "new_tensor", "argmax", "argmin", "argsort", "bucketize",
                                "searchsorted", "nonzero", "argwhere", "bincount", "histc", "count_nonzero",
                                "unique", "unique_consecutive"))
#: calls whose second output is an index tensor: ``x.topk(k)[1]``, ``x.sort().indices``, ``x.max(dim).indices``
_INDEXED_NAMES = frozenset(("topk", "sort", "max", "min", "kthvalue", "mode", "median", "nanmedian", "cummax",
                            "cummin"))


def _carries_no_gradient(node: Node, kinds: dict, graded: set, name: str | None = None) -> bool:
    """Does ``node``, computed from a node a gradient reaches, carry none on (see ``_gradient_sources``)?  An
    integer or bool result carries one only where it may become a surrogate's float: a comparison, a one-hot
    (a discrete op the pass may rewrite), a view or move of such a result, integer arithmetic on a one-hot."""
    target = node.target
    if target is operator.getitem or target is getattr:
        if _is_index_output(node):
            return True
        if target is getattr and node.op == "call_function":
            return len(node.args) > 1 and node.args[1] in _META_ATTRS
    name = _op_name(node) if name is None else name
    if name in _META_NAMES or name in _NO_GRADIENT_NAMES or grad_regions.runs_without_grad(node):
        return True
    meta = node.meta.get("tensor_meta")  # an exported graph: its input required grad, its result does not
    if meta is not None and _requires_grad(meta) is False and meta.dtype.is_floating_point and any(  # (a no-grad
            _requires_grad(n.meta.get("tensor_meta")) for n in node.all_input_nodes):           # body)
        return True
    kind = kinds.get(node)
    if kind not in _INT_KINDS or _match(node) is not None:
        return False
    carriers = [n for n in node.all_input_nodes if n in graded and kinds.get(n) in _INT_KINDS]
    if not carriers:  # x.long(), argmax(x).view(-1), (x > 0).sum(): from floats or a bool's integer use
        return True
    if name in _PASS_NAMES or _cast_to(node, carriers[0], kinds) == "move":  # a view or move of one
        return False
    return not any(kinds.get(n) == dtypes.INT for n in carriers)  # integer arithmetic on a one-hot moves it on


def _requires_grad(meta) -> bool | None:
    """A tracer's ``TensorMetadata`` (``node.meta["tensor_meta"]``: torch.export's): its ``requires_grad``;
    None for anything else (no metadata, a tuple of them)."""
    flag = getattr(meta, "requires_grad", None)
    return flag if isinstance(flag, bool) and isinstance(getattr(meta, "dtype", None), torch.dtype) else None


def _is_index_output(node: Node) -> bool:
    """``x.topk(k)[1]``, ``x.sort().indices``, ``torch.max(x, dim).indices``: an index tensor."""
    if node.op != "call_function" or len(node.args) < 2 or not isinstance(node.args[0], Node):
        return False
    if not ((node.target is operator.getitem and node.args[1] == 1) or
            (node.target is getattr and node.args[1] == "indices")):
        return False
    source = node.args[0]
    name = _op_name(source)
    if name in ("max", "min"):  # with a dim: (values, indices); else a tensor (x.max(y)[1]: a row of it)
        return isinstance(_arg(source, 1, "dim"), int) and not isinstance(_arg(source, 1, "dim"), bool)
    return name in _INDEXED_NAMES


def _reach_output(graph, order: dict) -> tuple[set, set]:
    """The nodes whose value reaches the graph's output, and those that reach it not only through
    ``.detach()`` / ``x.data``: walks back from the output along the inputs of each node (and from a
    tensor to the in-place calls writing into it), not into a detach node's input, nor from a use of a
    tensor after its ``detach_()``.  (A ``torch.no_grad()`` block's edges are ``grad_regions.detached`` calls.)"""
    writers: dict[Node, list[Node]] = {}
    detached_at: dict[Node, int] = {}
    any_detach = False
    for node in graph.nodes:
        for target in _mutated(node):
            writers.setdefault(target, []).append(node)
        if _is_detach(node):
            any_detach = True
            if _mutated(node):  # y.detach_(): y's later uses are detached
                detached_at.setdefault(node.args[0], order[node])
    outputs = [n for n in graph.nodes if n.op == "output"]

    def walk(block: bool) -> set:
        seen, stack = set(), list(outputs)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            stack += writers.get(node, ())
            if block and _is_detach(node):
                continue
            for source in node.all_input_nodes:
                if block and source in detached_at and order[node] > detached_at[source]:
                    continue
                stack.append(source)
        return seen

    reaches = walk(False)
    return reaches, (walk(True) if any_detach else reaches)


# --- the guarantee ------------------------------------------------------------------------------

def _check(gm: GraphModule, report: RewriteReport, planner: _Planner, before: int) -> None:
    kept = {e.node for e in report.hard} | {e.node for e in report.rewritten if e.reason}
    after = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and is_sll_target(node.target):
            after += not is_soft_mask(node)  # (a hard-mode selection's soft mask is a part of that selection)
            continue
        rule = _match(node)
        if rule and rule.pattern in ("elementwise", "cast") and node.name not in kept \
                and not planner.config.is_skipped(planner._stack(node)):
            raise RewriteError(f"linearize_pass left node '{node.name}' ({rules.describe_target(node)}) "
                               "hard without reporting it")
    if after != before + len(report.rewritten):
        raise RewriteError(f"linearize_pass: expected {before + len(report.rewritten)} sll nodes, found {after}")


def _count_sll(gm: GraphModule) -> int:
    """sll nodes in ``gm``'s graph (only a call_function's target can be an op)."""
    return sum(1 for n in gm.graph.nodes if n.op == "call_function" and is_sll_target(n.target) and not is_soft_mask(n))


def _name(v) -> str:
    return v.name if isinstance(v, Node) else repr(v)


def _describe(users: list[Node]) -> str:
    return ", ".join(f"{rules.describe_target(u) if u.op in ('call_function', 'call_method') else u.op} "
                     f"({u.name})" for u in users) or "nothing"
