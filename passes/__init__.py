"""The graph passes of sll_fx, one per file, each ``GraphModule -> PassResult``.

- ``linearize.py``  ``linearize_pass``: hard discrete ops -> ``torch.ops.sll`` ops (the rule table)
- ``strip.py``      ``strip_pass``: every ``torch.ops.sll`` op -> its exact hard op (the same table)
- ``_checks.py``    what both passes check after editing (the placement of the nodes they added)
- ``_aliases.py``   ``isolate_writes``: in-place writes a rewrite would turn into other values or a failed backward

``linearize_pass`` plans before it edits; its planning is ``_plan.py`` (``_Planner``), which reads
``_uses.py`` (how a value is used), ``_gradients.py`` (where a gradient reaches), ``_patterns.py``
(selections, one_hot(argmax), top-k masks), ``_ties.py`` (inputs equal to a comparison's threshold on whole
ranges: ``round(x) > 0``, ``F.relu(x) > 0``; its parts are ``_grids.py`` and ``_tie_*.py``, listed in its
docstring) and ``_spellings.py`` (what a node calls).

This folder is installed as ``sll_fx.passes``; it is not a top-level package.
"""

if __name__ != "sll_fx.passes":  # e.g. `import passes` from a source checkout
    raise ImportError("'passes' is part of sll_fx: import it as sll_fx.passes (pip install -e . first)")

from .linearize import linearize_pass  # noqa: E402
from .strip import strip_pass  # noqa: E402

__all__ = ["linearize_pass", "strip_pass"]
