"""The nodes whose walks find nothing (``_inert``): :meth:`Ties.on_jumps` and :meth:`Ties.of` at a number skip the walk
of such an input.

A node is *inert* where :meth:`_range_values` (with or without ``numbers``) and :meth:`_ties` at any number find
nothing from it at any depth, as they read the graph today: decided once per node, from its inputs' verdicts, where a
walk asks (back from the node asked as far as nodes are undecided: at most each node once, linear in the graph), in a
graph that writes nothing in place (a write makes a read depend on where it is read).  It is the walks' own verdict,
not a fact about the values: ``tanh(x)`` is inert, as the walks read no constant from a one-to-one op of a value that
takes none (float32's saturation, ``tanh(x) == 1`` from ``x ~ 9`` up, is read on a grid's points only:
:meth:`_images`); a read added there is to be added here too, which
``tests/test_tie_inert.py`` checks, the walks against this verdict on graphs of each rule and on fuzzer programs.
(What the values do would not do: a value that takes no constant on a range of inputs and sits on no grid is an input,
arithmetic with numbers on one; past the benchmark chain's first ``tanh``, saturated at 1 for ``x > ~10``, every value
is constant there.)  The rules, each read where its inputs are inert (the pass reads the users of inert nodes, and the
calls of modules, only):

- an input (a ``placeholder`` of no integer or bool kind): no op, no grid, no number;
- a call of a torch.nn module of :data:`_INERT_MODULES` (``nn.Linear``, the convolutions: exactly those classes, not
  with an eager QAT observer), whatever its input (not its users' rule: a source, as an input is): the walks read a
  module's call through its class alone (its constants, a value it keeps or maps one-to-one, a fake quantizer's or an
  average pool's grid), and of these classes nothing (the benchmark's many modules, ``tanh(self.lin(x))``);
- arithmetic with a Python number (``x * 0.9``, ``x + 0.1``, ``0.1 - x``, ``x / 2``; not by 0): its walks follow the
  value alone (a run of such ops as one step), and its grid is the value's, scaled or moved;
- a one-to-one op of one operand (:data:`_INERT_ONE_TO_ONE`: ``tanh(x)``): the walks read its input's numbers mapped,
  its input's grid's images, the grids its input takes on a part (none, for an inert input);
- a sum or difference of two tensors, one of them inert (``h + 0.1 * d``), that is none of the sums the walks read on
  their own: a learned scalar or a number held by a node as a term, a hand-written straight-through value (or a term
  less itself, ``(r + p) - p``), a value shifted less itself (``(x + 2) - x``; also a selection with such a branch,
  ``where(m, x + 1.0, x) - (x + 1.0)``: ``_selected_shifts``), less its clip or its extremum
  (``relu(x) - x``, ``x - x.min()``, also plus its clip negated, ``x + (-relu(x))``), less itself (``h - h``, ``h +
  (-h)``, ``h * -1.0 + h``, ``h * 2.0 - 2.0 * h``, ``(h * -1) * 1 + h``: ``_opposite``, read by the names first),
  plus a selection with a branch that is the other term negated (``h + where(m, -h, 0)``: by the selection's own op,
  no view) or its absolute value, also inside a clip (``clamp(abs(h), max=2) + h``), a quantizer's ``(g + zp) -
  zp``.  Its walks read the zeros of both terms together and a number of each added up (none: one has none) and a
  term's grid where the other is 0 (never, one's or the other's); the value a sum of like terms reads in each
  (``_one_value``) is an inert term too (an inert operand's terms are inert: :meth:`_linear` stops at an inert node
  or goes on into one); the value two functions of one value read (``_on_points``: ``h + 0.1 * sign(h)``) is inert
  too (the elementwise ops with numbers it composes keep an inert operand under an inert node), and it reads no grid
  nor any value on ranges of an inert value, so it is not asked here.

(A planner's cost: each comparison and rounding of the benchmark's chain, ``tanh(x * 0.9 + 0.1)`` of the sum before,
walked eight nodes deep, and found the grids of each, to find nothing.)

A part of :class:`_ties.Ties` (a mixin: ``Ties.__init__`` sets the memo it reads); that module's docstring says where
the rest is.
"""

from __future__ import annotations

import math

from torch import nn
from torch.fx import Node

from sll_fx import dtypes

from ._tie_nodes import _difference, _factors_of, _fake_quantizer, _less_its_extremum
from ._tie_ops import _CONSTANTS, _IDENTITY_ON_A_RANGE, _ONE_TO_ONE, _PUTS, _UNNAMED

#: one-to-one ops of one operand whose walks read nothing but their input's (no constant, no grid of their own; not the
#: identity on a range, which a difference reads: ``x - elu(x)``)
_INERT_ONE_TO_ONE = frozenset(n for n in _ONE_TO_ONE if n not in _CONSTANTS and n not in _IDENTITY_ON_A_RANGE and
                              n not in ("gelu", "silu"))
#: torch.nn modules whose calls the walks read nothing of, whatever their input (the classes themselves: a subclass may
#: be read otherwise, torch.ao's QAT ``Linear``)
_INERT_MODULES = frozenset((nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
#: how many calls :meth:`_Inert._decide` walks back from a node before it reads the whole graph instead
_BACK = 64
_INTEGRAL = (dtypes.INT, dtypes.BOOL)
#: arithmetic with a Python number, the ops and whether the number may come first (``0.1 - x``; not ``2 / x``)
_WITH_A_NUMBER = {"mul": True, "add": True, "sub": True, "truediv": False, "div": False}
#: the ops :func:`_factors_of` reads through (a product with a number, a negation)
_PRODUCTS = frozenset(("mul", "neg"))


class _Inert:
    """The nodes whose walks find nothing: a part of :class:`_ties.Ties`."""

    def _inert(self, node) -> bool:
        """Is ``node`` inert: do :meth:`_range_values` and :meth:`_ties` at a number find nothing from it?  Decided
        where asked, with the inputs it reads (:meth:`_decide`), once per node."""
        verdicts = self._inert_found
        if verdicts is None:  # (the first question: none inert in a graph that writes in place)
            verdicts = self._inert_found = {}
            self._inert_names, self._inert_off = {}, self._any_write()
        if not isinstance(node, Node) or self._inert_off:
            return False
        found = verdicts.get(node)
        return self._decide(node) if found is None else found

    def _find_inert(self) -> set[Node]:
        """The inert nodes of the graph (none in a graph that writes in place)."""
        return {node for node in self.gm.graph.nodes if self._inert(node)}

    def _decide(self, node: Node) -> bool:
        """:meth:`_inert` of a node not decided yet: each verdict the one a forward pass over the graph, in graph order,
        gives it, from its inputs' verdicts (the rules read a call's operands' only; a module's call, an input, is a
        source).  Decided back from ``node``, its undecided inputs first, as long as that meets few nodes (the
        benchmark's many modules: ``tanh(self.lin(x))``, two nodes back to the module's call, where the pass over
        the graph read every node of it: ~40 of the planner's ~110 ms on 10k nodes); beyond :data:`_BACK` nodes (a
        chain, whose every node is read), by that pass, for every node at once (a walk back costs more per node)."""
        deciding, self._deciding = self._deciding, True  # (the walks the rules read skip no inert node meanwhile:
        try:                                             # _on_points_of)
            if not self._decide_back(node):
                self._decide_forward()
        finally:
            self._deciding = deciding
        return self._inert_found[node]

    def _decide_back(self, node: Node) -> bool:
        """:meth:`_decide` back from ``node``, with a stack (not one Python frame per node); False where it meets more
        than :data:`_BACK` calls (those it decided are decided: each verdict is the forward pass's)."""
        verdicts, kinds, names = self._inert_found, self.kinds, self._inert_names
        stack, expanded = [node], set()  # (expanded: the calls whose undecided inputs are on the stack)
        while stack:
            n = stack[-1]
            if n in verdicts:
                stack.pop()
                continue
            op = n.op
            call = op == "call_function" or op == "call_method"
            if call and n not in expanded:
                if len(expanded) >= _BACK:
                    return False
                expanded.add(n)
                size = len(stack)
                stack += [a for a in n.all_input_nodes if a not in verdicts]
                if len(stack) > size:
                    continue
            stack.pop()
            if call:  # (inert only where an operand is: _inert_op reads its operands' verdicts, its inputs')
                inert = self._inert_op(n, verdicts, names)
            elif op == "call_module":  # (a source, as an input: whatever its input, _INERT_MODULES)
                inert = self._inert_module(n)
            else:
                inert = op == "placeholder"
            verdicts[n] = inert and kinds.get(n) not in _INTEGRAL
        return True

    def _decide_forward(self) -> None:
        """:meth:`_decide` for every node, in graph order (a forward pass, linear in the graph)."""
        verdicts, kinds, names = self._inert_found, self.kinds, self._inert_names
        users = set()  # (the users of the inert nodes so far: the only calls to read)
        for node in self.gm.graph.nodes:
            inert = verdicts.get(node)
            if inert is None:
                op = node.op
                if op == "call_module":  # (a source, as an input: whatever its input, _INERT_MODULES)
                    inert = self._inert_module(node)
                else:
                    inert = op == "placeholder" or node in users and self._inert_op(node, verdicts, names)
                inert = verdicts[node] = inert and kinds.get(node) not in _INTEGRAL
            if inert:
                users.update(node.users)

    def _inert_module(self, node: Node) -> bool:
        """Is ``node`` a call of a module of :data:`_INERT_MODULES`, with no fake quantizer an eager QAT hook runs on
        its output (``activation_post_process``: a grid the walks read)?"""
        module = self._module_of(node)
        return type(module) in _INERT_MODULES and \
            not _fake_quantizer(dtypes.module_attr(module, "activation_post_process"))

    def _inert_op(self, node: Node, found: dict, names: dict) -> bool:
        """Is ``node``, a user of an inert node, an inert call, its inputs' verdicts in ``found`` (node -> inert)?"""
        op = node.op
        if op != "call_function" and op != "call_method" or node.kwargs:
            return False
        args = node.args
        if len(args) == 1:
            return isinstance(args[0], Node) and found[args[0]] and \
                (names.get((op, node.target)) or self._target_name(node, names)) in _INERT_ONE_TO_ONE
        if len(args) != 2:
            return False
        a, b = args
        a_node, b_node = isinstance(a, Node), isinstance(b, Node)
        if not (a_node and found[a] or b_node and found[b]):
            return False
        name = names.get((op, node.target)) or self._target_name(node, names)  # (the memo's, read here first)
        if a_node and b_node:
            return (name == "add" or name == "sub") and self._inert_sum(node, name, found)
        number = a if b_node else b
        return name in _WITH_A_NUMBER and (_WITH_A_NUMBER[name] or number is b) and \
            isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number) and \
            (number != 0 or name in ("add", "sub"))

    def _target_name(self, node: Node, names: dict) -> str | None:
        """:meth:`_name_of` of a call with a first operand, read once per target where it is one of the rules' names
        (those of no ``max``/``min`` or ``getattr``, the names :func:`_name` reads from the operands too)."""
        key = (node.op, node.target)
        name = names.get(key, _UNNAMED)
        if name is _UNNAMED:
            name = self._name_of(node)
            if name in _INERT_ONE_TO_ONE or name in _WITH_A_NUMBER:
                names[key] = name
        return name

    def _of_a_product(self, t: Node, v) -> bool:
        """Is ``t``, a product, ``v`` times numbers through a product of a product (:func:`_factors_of`: ``(v * -1) *
        1``)?  Its tensor operand's name first (``0.1 * sign(h)``, the benchmark's: no product of a product)."""
        args = t.args
        u = args[0] if isinstance(args[0], Node) else args[-1]
        return isinstance(u, Node) and self._name_of(u) in _PRODUCTS and _factors_of(t)[0] is v

    def _inert_sum(self, node: Node, name: str, found: dict) -> bool:
        """Is ``node``, a sum or difference of two tensors one of which is inert (in ``found``), none of the sums the
        walks read on their own (the module's docstring)?"""
        a, b = node.args
        constants = self._constant_nodes()  # (_scalar of another node, in a graph that writes nothing, is None)
        for v in (a, b):  # (a loop, not any(): this runs on every sum of an inert term)
            if not found[v] and (self._value(v) is not v or
                                   (v.op == "get_attr" or v in constants) and self._scalar(v) is not None):
                return False  # (a number or a learned scalar as a term: _summand_and_node's; an inert node holds none)
        if self._straight_through(node) is not None or self._cancelled_shift(node) is not None or \
                name == "sub" and self._selected_shifts(node):  # (where(m, x + 1.0, x) - (x + 1.0))
            return False
        if name == "sub" and _less_its_extremum(node) is not None:
            return False
        if name == "add":
            named_a = self._name_of(a) if isinstance(a, Node) else None
            named_b = self._name_of(b) if isinstance(b, Node) else None
            if named_a != "neg" and named_b != "neg":  # (no difference: _difference reads a sum as one only with a
                # negated term; a selection whose branch is the other term negated, h + where(m, -h, 0); abs, h +
                # abs(h), also inside a clip: clamp(abs(h), max=2) + h, _negated_by_abs)
                if (named_a == "mul" and (a in b.users or named_b == "mul" or self._of_a_product(a, b)) or
                        named_b == "mul" and (b in a.users or self._of_a_product(b, a))) and self._opposite(node):
                    return False  # (x * -1.0 + x, (x * -1) * 1 + x: the forms _opposite reads; a term's users first)
                return not (named_a == "where" or named_b == "where" or named_a in _PUTS or named_b in _PUTS or
                            named_a in _IDENTITY_ON_A_RANGE or named_b in _IDENTITY_ON_A_RANGE or
                            isinstance(a, Node) and a.op == "call_module" and self._clipped(a) or
                            isinstance(b, Node) and b.op == "call_module" and self._clipped(b)) or \
                    self._plus_its_negated_branch(a, b) is None
        if self._less_its_clip(node) is not None:
            return False
        pair = _difference(name, node, 1)
        return (pair is None or self._shifted_back(*pair) is None and not self._cancels(*pair)) and \
            not self._opposite(node)  # (h - h, h + (-h); x * 2.0 - 2.0 * x)
