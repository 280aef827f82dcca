"""The linearize pass's planning: what happens to each discrete node, and why.

``_Planner.plan`` decides before the graph is touched (so a bad eps raises on an unchanged
graph), one ``_Step`` per discrete node found, with its report entry.  It sweeps three times:
the selections (``where``/``masked_fill`` on a comparison), then the comparisons, which need to
know which of their users a selection took, then the elementwise ops, ``one_hot(argmax)`` and
top-k masks; the last two go from the last node back, so that a node's users are planned before
it.  How each result is used decides its rewrite (``_verdict``, from ``_uses.py``): with no
float use it stays hard; integer uses of a rewritten one keep the hard node, with their own copy
of a chain they share with float uses (``chain`` in a step: ``linearize.py``'s ``_copy_chain``).
Gradients that cannot reach a node (``_gradients.py``) leave it hard too.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.fx import GraphModule, Node

from sll_fx import dtypes, rules
from sll_fx.config import SLLConfig
from sll_fx.errors import EpsError
from sll_fx.ops import DEFAULT_EPS, MAX_DECIMALS, check_eps, decimals_in_range, eps_limit
from sll_fx.report import Entry
from sll_fx.tracer import module_of, source_of

from ._aliases import _fresh, _parent as _alias_parent, _root as _alias_root
from ._gradients import _gradient_sources, _reach_output
from ._grids import Tie
from ._patterns import (_ORDER_STATISTICS, _arg, _argmax_args, _argmax_spelling, _is_topk, _max_one_hot,
                        _order_statistic_of, _pattern_inputs, _topk_index_users, _topk_pattern)
from ._spellings import _FIND, _RULE, _SELECTION, _UNLISTED, _classify, _match, _op_name
from ._tie_nodes import _attribute
from ._ties import Ties
from ._uses import (_FLOAT_USE, _INT_KINDS, _MASK_DEPTH, _META_USE, _ORDER_NAMES, _OTHER_USE, _PASS_USE, _carries,
                    _is_float_cast, _mask_factor, _moved_to_float, _mutated, _use_kind)


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
    ends: frozenset = frozenset()                   # the integer uses the chain is copied for (_copy_chain)
    blocked: str = ""                               # (mixed) why such nodes cannot be copied


#: the verdict of a result used by float arithmetic alone (most results; frozen, shared: no object per verdict)
_FLOAT_ONLY = _Uses()

#: how many elementwise ops' foresights :meth:`_Planner._linearized` runs one inside another (each one's planning
#: foresees its users'): a chain of selections and rounds, 200 blocks of ``where(x > 0, round(x), x)``, went ~9 Python
#: frames deeper per block and exhausted the stack at about 120; deeper than this an op is taken to be rewritten
_FORESIGHT = 48
#: the largest tensor attribute :func:`_fill_of` reads for the one number it may hold
_FILL_SIZE = 1 << 20


class _Planner:
    def __init__(self, gm: GraphModule, config: SLLConfig, kinds: dict, no_grad: bool = False,
                 ranks: dict | None = None):
        self.gm, self.config, self.kinds = gm, config, kinds
        self.order = dict(zip(gm.graph.nodes, itertools.count()))  # (node -> its place in the graph)
        self.taken: set[Node] = set()               # where/masked_fill, argmax, topk taken by a rewritten pattern
        self.pattern_users: set[Node] = set()       # rewritten one_hot/scatter nodes (users inside a pattern)
        self.pattern_hard: set[Node] = set()        # one_hot(argmax)/top-k scatter nodes not quite the pattern
        self.decided: dict[Node, bool] = {}         # planned rule nodes -> rewritten (read by _use)
        self._bits: dict[Node, int] | None = None   # (plan's sweep: the nodes of non-zero _classify bits -> them)
        self._sources: dict = {}                    # stack_trace text -> source_of
        self._reach: tuple[set, set] | None = None  # (reaches the output, reaches it not through .detach())
        self._graded: tuple | None = (set(), False) if no_grad else None  # _gradient_sources: (graded nodes, any
        # detach); none in a graph that runs with grad mode off (an exported no_grad block's body)
        self._foreseen: dict[Node, bool] = {}       # elementwise ops' decisions foreseen before their sweep
        self._foresight = 0                         # (_linearized: foresights inside one another now)
        self._writes: tuple | None = None           # (alias root -> the nodes writing it in place, the roots)
        self.ties = Ties(gm, kinds, functools.partial(_fixed_number, gm), ranks, self.order)  # what comparisons'
        # inputs take on whole ranges (no reference back to the planner: see _fixed_number)

    def plan(self) -> list[_Step]:
        # (node, rule), in graph order: where/masked_fill; comparisons (and in-place / no-jump / unlisted finds);
        # the elementwise ops, one-hots and top-k masks; and the argmax/topk nodes
        masks, second, third, selections = [], [], [], []
        unlisted_modules = rules.UNLISTED_MODULES
        # (looked up per call_module node only when the model holds such a module at all: one pass over the modules)
        any_unlisted = any(type(m) in unlisted_modules for m in dtypes.module_list(self.gm))
        swept = self._bits = {}
        classified: dict = {}  # ((op, id(target)) -> _classify's bits, which they alone settle; the graph holds its
        for node in self.order:  # targets: one call per target)
            key = (node.op, id(node.target))
            bits = classified.get(key)
            if bits is None:
                bits = classified[key] = _classify(node)
            if bits:
                swept[node] = bits
            else:
                if any_unlisted and node.op == "call_module" and \
                        type(self.gm.get_submodule(node.target)) in unlisted_modules:
                    second.append((node, None))  # nn.Threshold, ...: a discrete op without a rule
                continue
            rule = rules.match(node) if bits & _RULE else None
            if rule is None and bits & _FIND:  # x.round_(): planned as its out-of-place spelling (_plan_in_place)
                rule = _in_place_rule(node)
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

    def _rewrite(self, node, rule, decimals=0, eps=None, live=None, mode=None, **extra) -> _Step:
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
        if mode is None or method != "sll":
            mode = self.config.mode_for(stack) if method == "sll" else method  # ste/sigmoid: hard forward
        # the report's mode: a selection runs its comparison's (the mask's module decides)
        shown = mode if method != "sll" or "mask" not in extra else self.config.mode_for(self._stack(extra["mask"]))
        entry = self._entry(node, replacement, extra.pop("reason", ""), eps, mode=shown, auto=auto)
        # (the pieces _apply reads with a default are not kept where empty, the usual case: no objects per step)
        if not extra.get("hard_uses", True):
            del extra["hard_uses"]
        if "chain" in extra and not any(extra["chain"]):
            del extra["chain"]
        if not extra.get("out_of_place", True):
            del extra["out_of_place"]
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
        bits = self._bits.get(user, 0) if self._bits is not None else _classify(user)  # (the sweep's, once swept)
        if bits & _FIND and rules.match_inplace(user) is not None:  # x.round_(): rewritten out of place on a fresh
            rule = _in_place_rule(user)                              # temporary, else hard (it would round a surrogate)
            linearized = rule is not None and value in _operands(rule, user) and self._linearized(user, rule)
            return _FLOAT_USE if linearized else _OTHER_USE
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

    def writes(self) -> list[tuple[Node, list[Node]]]:
        """The graph's in-place writes as planned (``_aliases._writes``: (writer, what it writes)), found once."""
        return self.ties._writes()

    def _written_between(self, x: Node, first: Node, last: Node) -> list[Node]:
        """The nodes after ``first`` and before ``last`` that write ``x`` (or what it shares memory with) in place:
        a pattern's sll op sits at ``last`` and reads ``x`` there, where ``first`` (its argmax/topk) read it."""
        if self._writes is None:
            roots: dict = {}
            self._writes = ({}, roots)
            for writer, targets in self.writes():
                for t in targets:
                    self._writes[0].setdefault(_alias_root(t, roots), []).append(writer)
        index, roots = self._writes
        if not index:
            return []
        lo, hi = self.order[first], self.order[last]
        return [w for w in index.get(_alias_root(x, roots), ()) if lo < self.order[w] < hi]

    def _writers_through_views(self, value: Node, users: list[Node]) -> list[Node]:
        """Those of ``value``'s ``users`` that write it in place (``r.sign_()``), and the nodes that write it through a
        view among them (``r.view(-1).sign_()``, ``r.t().clamp_(0, 1)``), in graph order."""
        if not self.writes():  # (a graph that writes nothing in place: no node is a writer, no view walk)
            return []
        writers, stack, seen = [], [], {value}
        for user in users:
            if value in _mutated(user):
                writers.append(user)
            elif user.args[:1] == (value,) and _alias_parent(user) is value:
                seen.add(user)
                stack.append(user)
        while stack:
            v = stack.pop()
            for user in v.users:
                if v in _mutated(user):
                    writers.append(user)
                elif user not in seen and user.args[:1] == (v,) and _alias_parent(user) is v:
                    seen.add(user)
                    stack.append(user)
        return sorted(set(writers), key=self.order.__getitem__)

    def _why_not_float(self, user: Node) -> str:
        """Why ``user`` reads its input as a bool or an integer (for a reason's text)."""
        rule = rules.match(user) if _classify(user) & _RULE else None
        if rule is None:
            return "a cast, an index, a logical op or a comparison"
        if self.config.is_disabled(rule.kind):
            return f"a discrete op whose rule '{rule.kind}' is switched off by the config"
        if self.config.is_skipped(self._stack(user)):
            return "a discrete op in a skipped submodule"
        return "a discrete op left hard (its entry says why)"

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
            if self._foresight >= _FORESIGHT:  # (as deep as that: taken to be yes, as any other op is, not kept)
                return True
            self._foreseen[node] = True  # (while foreseeing it: a cycle back to it reads yes)
            skipped = self.config.is_skipped(self._stack(node))
            self._foresight += 1
            try:
                self._foreseen[node] = not skipped and self._plan_elementwise(node, rule).rewrites
            finally:
                self._foresight -= 1
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
        read_both = any(u in chain for u, _ in ends)
        chain = sorted(chain, key=self.order.__getitem__)
        for c in chain:
            written = self._writers_through_views(c, list(c.users))  # (also h[:, 0].zero_(): a copy would miss it)
            if _mutated(c) or written:
                return (), f"{_describe([c])} is written in place{f' (by {_describe(written)})' if written else ''}"
            if c.is_impure() or _classify(c) or c in self.taken:
                return (), f"{_describe([c])} is a discrete op or has side effects"
            if read_both:  # (once: a sorted list's `in` for every node made a chain of n nodes cost n^2 ends)
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
            written += [w for w in self._writers_through_views(value, users) if w not in written and
                        not self._rewritten_in_place(w)]
            mixed = mixed or m
            chain += c
            ends |= e
            blocked = blocked or b
        found.sort(key=self.order.__getitem__)
        if not found:
            return _FLOAT_ONLY
        if others and (late := self._kept_after_a_rewrite(uses_of, others)):  # (a safeguard: the writer's own verdict
            # leaves it hard when such a use follows it)
            return _Uses(hard=f"{what} used by {_describe(late)} after the in-place op that writes it, rewritten out "
                              "of place: that use cannot keep the hard result, left hard", found=tuple(found))
        if not floats:
            return _Uses(hard=_only_other_uses(found, what, blocked if mixed else None), found=tuple(found),
                         mixed=mixed)
        if discrete := [w for w in written if rules.match_inplace(w) is not None]:  # r.sign_(): a discrete op
            return _Uses(hard=f"its {what} is overwritten by the in-place {_describe(discrete)}, which stays hard "
                              "(it would read the surrogate's fractional values inside the band)", found=tuple(found))
        if written:  # x.clamp_(): a hard copy for the other uses would miss the write
            return _Uses(reason=_also_other_uses(found, what, written), found=tuple(found))
        chain = sorted(set(chain), key=self.order.__getitem__)
        return _Uses(reason=_also_other_uses(found, what, chain=chain) + (_mixed(blocked) if mixed else ""),
                     keep=frozenset(others), found=tuple(found), mixed=mixed, chain=tuple(chain),
                     ends=frozenset(u for u, _ in ends), blocked=blocked)

    def _rewritten_in_place(self, writer: Node) -> bool:
        """Is ``writer`` an in-place discrete op rewritten out of place (``t.round_()`` on a fresh temporary)?  It
        writes nothing then: the values after it are its sll op's result, which its own uses read."""
        rule = _in_place_rule(writer) if _classify(writer) & _FIND else None
        return rule is not None and self._linearized(writer, rule)

    def _kept_after_a_rewrite(self, uses_of: list, kept: list[Node]) -> list[Node]:
        """Those of ``kept`` (users that keep reading the hard result) after an in-place op rewritten out of place that
        writes the value they read (``r = round(h); r.sign_(); r.long()``): they would read it unwritten."""
        writers = [w for value, users in uses_of for w in users if value in _mutated(w) and self._rewritten_in_place(w)]
        first = min((self.order[w] for w in writers), default=None)
        return [] if first is None else [k for k in kept if self.order[k] > first]

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

    def _read_as_mask(self, value: Node) -> Node | None:
        """Is ``value``, a ``1 - mask``-like function of a 0/1 (or -1/0/1, or integer) result, read as a mask or
        an integer further on: by a bool or integer use (a cast, a logical op, an index, an op left hard) that
        does not only order values (argmax of ``10 * sign(h)``), through views and more such functions
        (``_carries``: ``round(h).clamp(0, 3).long()``, ``(1 - m) * a + m * b`` then ``.long()``), up to
        ``_MASK_DEPTH`` of them?  The first such use, else None."""
        seen, frontier = {value}, [value]
        for _ in range(_MASK_DEPTH + 1):
            if not frontier:
                break
            following = []
            for v in frontier:
                for w in v.users:
                    kind = self._use(w, v)
                    if kind == _OTHER_USE and _op_name(w) not in _ORDER_NAMES:
                        return w
                    if w not in seen and (kind == _PASS_USE or (kind == _FLOAT_USE and _carries(w, v))):
                        seen.add(w)
                        following.append(w)
            frontier = following
        return None

    # -- patterns -----------------------------------------------------------------------------
    def _plan_elementwise(self, node, rule) -> _Step:
        if _classify(node) & _FIND:  # x.round_(), torch.round_(x), aten.round_.default
            return self._plan_in_place(node, rule)
        return self._plan_jumps(node, rule, [(node, list(node.users))])

    def _plan_in_place(self, node: Node, rule: rules.Rule) -> _Step:
        """An in-place spelling: rewritten as its out-of-place one where the tensor it writes is a fresh temporary
        nothing else refers to (:meth:`_fresh_temporary`); its own uses and the uses of that tensor after it read the
        sll op's result (``linearize.py``'s ``_apply``), all of them float arithmetic (a use that keeps the hard
        result cannot: the op writes it no more).  Else, or when its uses leave it hard, a hard step without a rule
        (the graph keeps it as it is)."""
        t = _operands(rule, node)[:1]
        if not t or not self._fresh_temporary(t[0], node):
            return self._hard(node, None, f"in-place {rules.describe_target(node)}: left hard "
                                          "(use the out-of-place spelling to linearize)")
        t = t[0]
        later = [u for u in t.users if self.order[u] > self.order[node]]
        step = self._plan_jumps(node, rule, [(node, list(node.users)), (t, later)], copies=False,
                                live=(node, *later), fresh=t)
        return step if step.rewrites else replace(step, rule=None)

    def _fresh_temporary(self, t, node: Node) -> bool:
        """Is ``t``, the tensor the in-place ``node`` writes, a fresh temporary: made by an op that allocates it
        (``_aliases._fresh``: ``x / step``, ``x * c``; not an input, an attribute, a module's output, a view, an
        alias or an in-place call's result), and read before ``node`` only by ops whose results are fresh too or by
        its shape (no view, alias or write of it taken before, which would see the write)?"""
        if not isinstance(t, Node) or not _fresh(t):
            return False
        at = self.order[node]
        return all(self.order[u] > at or u is node or
                   (_fresh(u) and t not in _mutated(u)) or _use_kind(u, t, self.kinds) == _META_USE for u in t.users)

    def _plan_jumps(self, node, rule, uses_of: list, copies: bool = True, live=None, fresh=None) -> _Step:
        """An elementwise op (``uses_of``: the values its result is, with their users; ``fresh``: the temporary an
        in-place spelling writes, ``copies``: whether a chain may be copied for integer uses, ``live``: its float
        uses, see :meth:`_rewrite`)."""
        if extra := rule.unsupported_arguments(node):
            return self._hard(node, rule, f"unsupported argument(s) {', '.join(extra)}: left hard")
        operands = rule.operand_values(node)
        x = operands[0]
        if self._is_int(x):
            return self._hard(node, rule, f"input '{_name(x)}' has an integer dtype: no gradient to give, left hard")
        keywords = rule.keyword_values(node)
        if any(isinstance(v, Node) for v in keywords.values()):
            return self._hard(node, rule, "argument computed at run time (e.g. decimals=tensor): left hard")
        if not decimals_in_range(decimals := keywords.get("decimals", 0)):  # (checked before its uses: a moot verdict)
            return self._hard(node, rule, f"decimals={decimals} is out of range ({-MAX_DECIMALS} to {MAX_DECIMALS}): "
                                          f"10**{abs(decimals)} overflows float64, so the op is NaN for every input, "
                                          "no jump to linearize: left hard")
        middle = rule.kind == "heaviside" and len(operands) > 1 and _fixed_number(self.gm, operands[1]) == 0.5  # (its
        # value at 0: the surrogate's there)
        tie = None if middle else self.ties.on_jumps(x, rule.kind, decimals, at=node)
        if tie is not None and rule.kind != "heaviside":
            return self._hard(node, rule, _jump_tie_reason(tie, rule.kind))
        uses = self._verdict(uses_of, "result", copies)
        if uses.hard and not self.config.is_disabled(rule.kind):
            return self._hard(node, rule, uses.hard)
        if fresh is not None and (uses.keep or uses.chain):
            return self._hard(node, rule, _kept_in_place(node, uses.found))
        reason = _jump_tie_reason(tie, rule.kind) if tie is not None else uses.reason
        if fresh is not None:
            reason = "; ".join(r for r in (_out_of_place(node, fresh), reason) if r)
        if tie is not None:  # (torch.heaviside has no derivative: left hard, a backward through it fails)
            return self._rewrite(node, rule, reason=reason, hard_uses=uses.keep, chain=(uses.chain, uses.ends),
                                 mode="hard", live=live, out_of_place=fresh is not None)
        return self._rewrite(node, rule, decimals=decimals, reason=reason, hard_uses=uses.keep,
                             chain=(uses.chain, uses.ends), live=live, out_of_place=fresh is not None)

    def _plan_comparison(self, node, rule) -> _Step:
        if self.config.is_disabled(rule.kind):
            return self._hard(node, rule, f"rule '{rule.kind}' switched off by the config")
        if extra := rule.unsupported_arguments(node):
            return self._hard(node, rule, f"unsupported argument(s) {', '.join(extra)}: left hard")
        operands = rule.operand_values(node)
        x = operands[0]
        if self._int_comparison(rule, node):  # as sll::compare itself decides at run time
            return self._hard(node, rule, f"input '{_name(x)}' has an integer dtype: no gradient to give, left hard")
        if len(operands) > 1 and (reduced := _order_statistic_of(operands[1], operands[0]) or
                                  _order_statistic_of(operands[0], operands[1])) is not None:
            return self._hard(node, rule, f"its threshold is an element of its input ({_describe([reduced])} of "
                                          f"'{_name(_arg(reduced, 0, 'input'))}'): that element sits on the boundary, in the band at every eps "
                                          "(a surrogate of 1/2 there, never the hard 0/1), left hard; to linearize a "
                                          "top-k or argmax mask write torch.zeros_like(x).scatter(-1, x.topk(k, "
                                          "-1).indices, 1.0) or F.one_hot(x.argmax(-1), n)")
        if len(operands) > 1:
            x, t = self.ties.oriented(*operands[:2], at=node)
            if (tie := self.ties.of(x, t, at=node)) is not None:
                return self._hard(node, rule, _tie_reason(tie, t))
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
            if any(u.op in ("call_function", "call_method") and u.target in _LOGICAL for u in bool_uses):  # (a & b)
                return self._hard(node, rule, f"boolean result used by {_describe(bool_uses)}: left hard (cast each "
                                              "comparison with .float() and write & as *, | as a + b - a * b, ~m as "
                                              "1 - m, ^ as a + b - 2 * a * b to linearize)")
            if any(_selects_through_view(u, node) for u in bool_uses):  # (c > t).unsqueeze(1) as where's condition
                return self._hard(node, rule, f"boolean result used by {_describe(bool_uses)}, a view that a "
                                              "where/masked_fill takes as its condition: left hard (compare after the "
                                              "view to linearize: x.unsqueeze(1) > t, x[:, None] > t)")
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
        values = [operands[rule.operands.index(n)] for n in (("value",) if rule.select_op == "masked_fill" else
                                                              ("input", "other"))]
        if extreme := [f for v in values if (f := _constant_fill(self.gm, v)) is not None and not abs(f) <= _HALF_MAX]:
            f = extreme[0]
            what = f"{f!r}: a blend with it is {f!r} (or overflows)" if not math.isfinite(f) else \
                f"{f!r}, beyond float16's largest value (65504): infinite in float16 (a half-precision model, " \
                "autocast, a .half() on the way), and in wider types a stand-in for infinity whose blend is as large"
            return self._hard(node, rule, f"a branch of {what} across the band, where no gradient passes, so the "
                                          "rewrite would only change values, left hard (a fill within float16's "
                                          "range, e.g. -1e4 for attention scores, is linearized)")
        if all(self._is_int(v) or (isinstance(v, (int, bool)) and not isinstance(v, Node)) for v in branches):
            return self._hard(node, rule, "integer result: it cannot hold a blend of its branches, left hard "
                                          "(give it floating branches, e.g. torch.where(x > t, 1.0, 0.0))")
        if self._detached_only((node,)):  # (before the check below: a hard op read through .detach() only)
            return self._hard(node, rule, _DETACHED)
        if use := self._read_as_mask(node):  # where(h > 0, h * 3, h - 1).long(): a blend would change that integer
            return self._hard(node, rule, f"its result is read as an integer or a mask further on, by {_describe([use])} "
                                          f"({self._why_not_float(use)}): a blend of its branches inside the band would "
                                          "change that value, left hard (its branches keep torch.where's own gradient)")
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
        if written := self._written_between(x, index, node):
            return self._hard(node, rule, _written_between_reason(x, index, written))
        if (tie := self.ties.flat(x, dim, at=index)) is not None:
            return self._hard(node, rule, _flat_reason(tie, "argmax", "one_hot(x.argmax(-1), n)"))
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
        if written := self._written_between(pieces["x"], pieces["topk"], node):
            self.pattern_hard.add(node)
            return self._hard(node, rule, f"top-k mask left hard: {_written_between_reason(pieces['x'], pieces['topk'], written)}")
        if (tie := self.ties.flat(pieces["x"], pieces["dim"], at=pieces["topk"])) is not None:
            self.pattern_hard.add(node)
            return self._hard(node, rule, f"top-k mask left hard: {_flat_reason(tie, 'top-k', 'x.topk(k, -1)')}")
        if pieces["inplace"] and (why := self._shared_zeros(node, pieces["zeros"])):
            self.pattern_hard.add(node)
            return self._hard(node, rule, f"top-k mask left hard: {why}")
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

    def _shared_zeros(self, node: Node, zeros: Node) -> str:
        """Why the zeros ``mask.scatter_(...)`` (``node``) fills are not the mask's alone ("" when they are): written
        or viewed before the scatter (the mask would start from other values, the view would see it filled), or
        filled by another scatter too (a second top-k into one mask)."""
        for user in zeros.users:
            if user is node:
                continue
            before = self.order[user] < self.order[node]
            if zeros in _mutated(user) and (before or _topk_pattern(user) is not None):
                return (f"the zeros it fills are {'written before it' if before else 'filled by another scatter'} "
                        f"({_describe([user])})")
            if before and _use_kind(user, zeros, self.kinds) == _PASS_USE:
                return f"a view of the zeros it fills is taken before it ({_describe([user])})"
        return ""

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


def _operands(rule: rules.Rule, node: Node) -> tuple:
    try:
        return rule.operand_values(node)
    except KeyError:
        return ()


# -- the one number a value holds: functions of the GraphModule, which the planner and its Ties read ----------------
# (Ties gets ``functools.partial(_fixed_number, gm)`` as its ``number``: a bound method of the planner made the two a
# reference cycle, which kept them, with their per-node tables, alive after the pass until a full garbage collection,
# which then walked them; at 50k nodes the one during code generation.)

def _fixed_number(gm: GraphModule, value) -> float | None:
    """The one number ``value`` holds (:func:`_constant_fill`: a buffer, ``torch.zeros_like(x)``), where no gradient
    changes it (not a trainable parameter); else None."""
    number = _constant_fill(gm, value)  # (first: most values hold no one number, and the walk is the dearer)
    return None if number is None or _trainable(gm, value) else number


def _trainable(gm: GraphModule, value) -> bool:
    """Does ``value`` come from a tensor attribute that requires grad (a learned threshold), through its first
    arguments?"""
    target = _attribute(value)
    t = dtypes.fetch_attr(gm, target) if target is not None else None
    return isinstance(t, torch.Tensor) and t.requires_grad


def _constant_fill(gm: GraphModule, value) -> float | None:
    """The one number ``value``, a selection's branch, holds everywhere, where the graph tells: a Python number,
    ``x.new_tensor(v)``, ``torch.full_like(x, v)``, ``x.new_full(shape, v)``, ``torch.full(shape, v)``,
    ``torch.tensor(v)``, or a tensor attribute (a buffer) holding one value, also through calls that keep every
    value (:data:`_FILL_WRAPPERS`: ``self.neg_inf.to(h.dtype)``, ``.detach()``, ``.expand_as(h)``); else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    factor = 1.0  # (-self.pos_inf, torch.ones_like(h) * -inf: the number times the fill found)
    for _ in range(8):  # (a few wrappers deep)
        if not isinstance(value, Node) or value.op not in ("call_method", "call_function") or not (
                args := value.args):
            break
        name = _op_name(value)
        if name == "mul" and len(args) == 2 and not value.kwargs:  # (x * -inf, -inf * x)
            node, number = args if isinstance(args[0], Node) else args[::-1]
            if isinstance(number, Node) or not isinstance(number, (int, float)) or isinstance(number, bool):
                break
            factor, value = factor * float(number), node
        elif name == "neg" and len(args) == 1:
            factor, value = -factor, args[0]
        elif name in _FILL_WRAPPERS:
            value = args[0]
        else:
            break
    base = _fill_of(gm, value) if isinstance(value, Node) else None
    if base is None:
        return None
    return base * factor if base else 0.0  # (zeros stay zeros: 0 * inf is NaN)


def _fill_of(gm: GraphModule, value: Node) -> float | None:
    """:func:`_constant_fill` of a node that makes its tensor (no wrapper around it)."""
    if value.op == "get_attr":
        t = dtypes.fetch_attr(gm, value.target)
        if isinstance(t, torch.Tensor) and t.is_floating_point() and 0 < t.numel() <= _FILL_SIZE and \
                t.device.type != "meta":  # (a constant of zeros the forward makes, torch.zeros(6000), too)
            t = t.detach()
            first = t.reshape(-1)[0]
            if bool((t == first).all()) or bool(torch.isnan(t).all()):
                return float(first)
        return None
    key = (value.op, _op_name(value))
    if key in _FILL_CONSTANT:  # (torch.ones_like(h), h.new_zeros(n))
        return _FILL_CONSTANT[key]
    where = _FILL_ARGUMENT.get(key)
    if where is None:
        return None
    index, keyword = where
    arg = value.args[index] if len(value.args) > index else value.kwargs.get(keyword)
    return float(arg) if isinstance(arg, (int, float)) and not isinstance(arg, bool) else None


#: the largest float16 value: a fill beyond it is infinite in float16, and a stand-in for infinity in wider types
#: logical ops on a comparison's bool result (``(h >= lo) & (h < hi)``): a float 0/1 has no ``&``, the product does it
_LOGICAL = frozenset((operator.and_, operator.or_, operator.xor, operator.invert, torch.logical_and, torch.logical_or,
                      torch.logical_xor, torch.logical_not, torch.bitwise_and, torch.bitwise_or, torch.bitwise_xor,
                      torch.bitwise_not, *(getattr(torch.ops.aten, n).default for n in ("logical_and", "logical_or",
                                                                                     "logical_xor", "logical_not",
                                                                                     "bitwise_not")),
                      *(getattr(torch.ops.aten, n).Tensor for n in ("bitwise_and", "bitwise_or", "bitwise_xor")),
                      "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and", "bitwise_or",
                      "bitwise_xor", "bitwise_not", "__and__", "__or__", "__xor__", "__invert__"))
_HALF_MAX = 65504.0
#: (op, name) of the calls that make a tensor of one number -> (position, keyword) of that number
_FILL_ARGUMENT = {("call_function", "full_like"): (1, "fill_value"), ("call_method", "new_full"): (2, "fill_value"),
                  ("call_function", "new_full"): (2, "fill_value"), ("call_function", "full"): (1, "fill_value"),
                  ("call_method", "new_tensor"): (1, "data"), ("call_function", "tensor"): (0, "data"),
                  ("call_function", "scalar_tensor"): (0, "s")}
#: (op, name) of the calls that make a tensor of one number they do not take -> that number
_FILL_CONSTANT = {("call_function", "ones_like"): 1.0, ("call_function", "zeros_like"): 0.0,
                  ("call_method", "new_ones"): 1.0, ("call_method", "new_zeros"): 0.0,
                  ("call_function", "ones"): 1.0, ("call_function", "zeros"): 0.0}
#: calls whose result holds the values of their first argument (casts, copies, views, broadcasts): a fill read through
#: them (``self.neg_inf.to(h.dtype)``, ``.detach()``, ``.expand_as(h)``, ``aten._to_copy``) is the fill
_FILL_WRAPPERS = frozenset(("to", "_to_copy", "detach", "alias", "lift_fresh_copy", "clone", "contiguous", "type_as",
                            "type", "float", "half", "double", "bfloat16", "cpu", "cuda", "expand", "expand_as",
                            "repeat", "broadcast_to", "view", "view_as", "_unsafe_view", "reshape", "reshape_as",
                            "squeeze", "unsqueeze", "flatten"))


def _selects_through_view(user: Node, node: Node) -> bool:
    """Is ``user`` a view of the comparison ``node`` (``.unsqueeze(1)``, ``[:, None]``, ``.expand_as``) read, maybe
    through more views, as the condition of a where/masked_fill?"""
    stack, seen = [user], set()
    while stack:
        v = stack.pop()
        if v in seen or _alias_parent(v) not in (node, *seen):
            continue
        seen.add(v)
        for w in v.users:
            name = _op_name(w)
            if name == "where" and _arg(w, 1 if w.op == "call_method" else 0, "condition") is v:
                return True
            if name == "masked_fill" and _arg(w, 1, "mask") is v:
                return True
            stack.append(w)
    return False


def _in_place_rule(node: Node) -> rules.Rule | None:
    """The elementwise rule of an in-place spelling (``x.round_()``, ``torch.sign_(x)``), else None (``x.gt_(0)``, whose
    float 0/1 result no out-of-place spelling gives, ``masked_fill_``: not rewritten)."""
    rule = rules.match_inplace(node)
    return rule if rule is not None and rule.pattern == "elementwise" else None


def _out_of_place(node: Node, fresh: Node) -> str:
    return (f"in-place {rules.describe_target(node)} on '{fresh.name}', a fresh temporary nothing else refers to: "
            f"rewritten out of place (its uses and those of '{fresh.name}' after it read the sll op's result)")


def _kept_in_place(node: Node, uses: list[Node]) -> str:
    return (f"in-place {rules.describe_target(node)}: its result is also used by {_describe(uses)}, which passes no "
            "gradient (not float arithmetic) and would have to keep the hard values, which an op rewritten out of "
            "place writes no more: left hard")


def _written_between_reason(x: Node, first: Node, written: list[Node]) -> str:
    return (f"its input '{_name(x)}' is written in place by {_describe(written)} after {_describe([first])} read it: "
            "the sll op would read the written values, left hard")


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


def _name(v) -> str:
    return v.name if isinstance(v, Node) else repr(v)


def _tie_reason(tie: Tie, threshold) -> str:
    """Why a comparison whose input equals its threshold on whole ranges of inputs stays hard, and the fix."""
    shown = threshold if not isinstance(threshold, Node) else f"'{_name(threshold)}'"
    if tie.grid is None and _op_name(tie.source) in _ORDER_STATISTICS:
        return (f"its input is {shown} on an element of each row, always ({_extremum_held(tie)}): that element sits on "
                "the boundary, in the band at every eps (a surrogate of 1/2 there, never the hard 0/1), left hard; "
                "use a threshold other than that value")
    if tie.grid is not None and tie.grid.any_count:  # (no threshold is off every count's mean)
        return (f"its input holds {tie.grid.describe()} ({_describe([tie.source])}, through ops that keep them so) and "
                f"its threshold {shown} is one for some count: an element equal to it sits on the boundary, in the "
                "band at every eps (a surrogate of 1/2 there, never the hard 0/1), left hard; to linearize, fix the "
                "count (torch.export, or torch.stack of the values averaged) or compare a value that is no such mean")
    if tie.grid is not None:
        half = tie.grid.half_step()
        return (f"its input holds {tie.grid.describe()} ({_describe([tie.source])}, through ops that keep them so) and "
                f"its threshold {shown} is one: an element equal to it sits on the boundary, in the band at every eps "
                f"(a surrogate of 1/2 there, never the hard 0/1), left hard; move the threshold half-way between them "
                f"to linearize (t + {half} for <= and >, t - {half} for < and >=)")
    return (f"its input is {shown} on whole ranges of inputs ({_describe([tie.source])}): an element there sits on "
            "the boundary, in the band at every eps (a surrogate of 1/2 there, never the hard 0/1), left hard; to "
            "linearize, compare the value before it (x > 0 for F.relu(x) > 0; (x > 0).float() * m for x * m > 0), "
            "or use a threshold other than that value")


def _extremum_held(tie: Tie) -> str:
    """A tie's source, an order statistic of a value that the input is that value less it (a min-max
    normalisation), in words."""
    return f"a value less its own {_describe([tie.source])}, a min-max normalisation"


def _jump_tie_reason(tie: Tie, kind: str) -> str:
    """Why an elementwise op whose input sits on one of its jumps on whole ranges of inputs stays hard (a heaviside:
    why it runs in hard mode), and the fix."""
    where = "0" if kind == "heaviside" else "a half-integer" if kind == "round" else "a whole number"
    if tie.grid is None and _op_name(tie.source) in _ORDER_STATISTICS and kind != "heaviside":
        return (f"its input is on a jump of {kind} ({where}) on an element of each row, always ({_extremum_held(tie)}: "
                "0 there, through ops that keep it so): the linear surrogate is the middle of the jump there at every "
                "eps, never the hard value, left hard; to linearize, move the jump off that value (x + 0.5 before "
                f"{kind}) or clamp after it")
    held = f"holds {tie.grid.describe()}" if tie.grid is not None else "takes one same value on whole ranges of inputs"
    what = (f"its input {held} ({_describe([tie.source])}, through ops that keep them so), on a jump of {kind} (at "
            f"{where}{', scaled by 10**-decimals' if kind == 'round' else ''}) on whole ranges of inputs: the linear "
            "surrogate is the middle of the jump there at every eps, never the hard value")
    if kind == "heaviside":
        return (f"{what}; rewritten in hard mode (forward: the hard op exactly; backward: the surrogate's slope inside "
                "the band), as torch.heaviside has no derivative to leave it hard with")
    return (f"{what}, left hard; to linearize, move the jump off those values (x + 0.5 before floor for whole "
            "numbers x), apply it to the value before where that is the same (x for F.relu(x)), or clamp after it "
            "(torch.clamp(torch.floor(16 * h), 0, 16) for torch.floor(torch.clamp(h, 0, 1) * 16))")


def _flat_reason(tie: Tie, what: str, spelled: str) -> str:
    """Why a one-hot or a top-k mask whose input's elements are equal on whole ranges of inputs stays hard."""
    held = f"holds {tie.grid.describe()}" if tie.grid is not None else "has elements of one same value on whole " \
                                                                         "ranges of inputs"
    return (f"its input {held} ({_describe([tie.source])}, through ops that keep them so): elements equal to one "
            f"another tie for the {what}, a margin of 0 on whole ranges of inputs (a surrogate of 1/2 there at every "
            f"eps, never the hard 0/1), left hard; to linearize, take {spelled} of a value whose elements differ (of h "
            "for F.relu(h): the same choice wherever the values differ)" + (
                "; a constant put in one element per row (h[:, 0].fill_(c)) is no tie, but this graph runs at any "
                "rank, where dims counted from the front and from the end may differ: index from the end as the argmax "
                "does (h[..., 0]), or pass example_inputs" if tie.rows else ""))


def _describe(users: list[Node]) -> str:
    return ", ".join(f"{rules.describe_target(u) if u.op in ('call_function', 'call_method') else u.op} "
                     f"({u.name})" for u in users) or "nothing"
