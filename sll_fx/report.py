"""Reports of the two passes: records you can test first, a tabulate table second.

``RewriteReport`` (attached by ``linearize_module`` as ``gm.sll_report``) has one
:class:`Entry` per discrete node found, rewritten or left hard with the reason, with the mode
its sll node runs (``Entry.mode``) and whether calibration chooses its eps (``Entry.auto``).
When per-submodule modes (``SLLConfig.module_mode``) make the rewritten nodes run different
modes, the text says ``mode=mixed`` and gets a ``mode`` column; otherwise it names the one mode.
Explicit ``sll_fx.*`` ops written in the model are not entries: ``linearize_module`` did not
rewrite them (they keep their eps, see ``sll_fx/calibration.py``).
``StripReport`` (attached by ``export_hard``) has one :class:`StripEntry` per sll node
put back to its hard op, and the count of sll ops left (always 0 on success).
Both list, in ``opaque``, the submodules that the fallback tracer kept out of the graph
(:class:`OpaqueModule`: ``path``, ``type``, ``reason``), rendered as a second table "opaque (not traced)".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tabulate import tabulate


@dataclass(frozen=True)
class OpaqueModule:
    """A submodule that runs as the user's own Python code (``torch.fx`` did not trace it)."""
    path: str      # qualified name in the model ("" for the model itself)
    type: str      # its class name
    reason: str    # the tracing error ("TraceError: ..."), or "autograd.Function <Name>: ..."


def _opaque_table(opaque: list[OpaqueModule]) -> str:
    rows = [(o.path or "(model)", o.type, (o.reason.splitlines() or [""])[0]) for o in opaque]
    return f"opaque (not traced): {len(opaque)} module(s)\n" + tabulate(rows, headers=["module", "type", "reason"])


def _with_opaque(text: str, opaque: list[OpaqueModule]) -> str:
    return text + "\n" + _opaque_table(opaque) if opaque else text


@dataclass(frozen=True)
class Entry:
    node: str                  # fx node name in the traced graph
    op: str                    # the hard op as spelled: "torch.sign", "Tensor.round", "x > t"
    replacement: str | None    # "sll.sign", ... or None when left hard
    reason: str                # why it was left hard (or what part stayed hard); "" otherwise
    eps: float | None          # the half-width used (None when left hard)
    module: str                # qualified name of the owning submodule ("" for the top level)
    source: str                # "file.py:line" of the user code
    mode: str | None = None    # the forward the sll node runs: "linear", "hard" ("ste"/"sigmoid" for those
                               # methods); a selection's is its comparison's; None when left hard
    auto: bool = False         # its eps is calibrated from data (eps="auto" reached this node, not a number
                               # from the config's kind_eps/module_eps): see sll_fx/calibration.py

    @property
    def rewritten(self) -> bool:
        return self.replacement is not None


@dataclass
class RewriteReport:
    entries: list[Entry] = field(default_factory=list)
    mode: str = "linear"
    opaque: list[OpaqueModule] = field(default_factory=list)
    method: str = "sll"          # the estimator (linearize_module's method=); also "[ste]" in each replacement
    calibrating: bool = False    # eps="auto" before its first calibration: the entries with ``auto`` hold placeholders
    auto: bool = False           # linearized with eps="auto" as the default (the config's eps): calibration
                                 # sets only the entries with ``auto``; else (a fixed eps) every rewritten entry
    skipped: list[str] = field(default_factory=list)  # the submodules SLLConfig.skip left as they are (paths)

    @property
    def rewritten(self) -> list[Entry]:
        return [e for e in self.entries if e.rewritten]

    @property
    def hard(self) -> list[Entry]:
        return [e for e in self.entries if not e.rewritten]

    @property
    def counts(self) -> dict[str, int]:
        return {"found": len(self.entries), "rewritten": len(self.rewritten), "hard": len(self.hard)}

    @property
    def modes(self) -> list[str]:
        """The forward modes the rewritten nodes run, sorted (one, unless ``module_mode`` mixes them);
        ``[self.mode]`` when the entries do not record theirs."""
        return sorted({e.mode for e in self.rewritten if e.mode is not None}) or [self.mode]

    def __str__(self) -> str:
        c = self.counts
        modes = self.modes
        mixed = self.method == "sll" and len(modes) > 1   # per-submodule modes: a "mode" column
        how = f"mode={'mixed' if mixed else modes[0]}" if self.method == "sll" else \
            f"method={self.method}, hard forward"
        head = (f"sll_fx.linearize_module: {c['found']} discrete node(s) found, {c['rewritten']} rewritten "
                f"({how}), {c['hard']} left hard")
        if self.opaque:
            head += f"; {len(self.opaque)} module(s) kept opaque"
        if self.skipped:
            head += f"; {len(self.skipped)} submodule(s) skipped by the config, not looked into: {', '.join(self.skipped)}"
        if self.calibrating:
            head += '; eps="auto": calibrated on the first forward call'
        if not self.entries:
            return _with_opaque(head, self.opaque)
        rows = [(e.node, e.op, e.replacement or "(hard)",
                 "" if e.eps is None else "auto" if self.calibrating and (e.auto or not self.auto) else f"{e.eps:g}",
                 e.module or "-", e.source, e.reason) for e in self.entries]
        headers = ["node", "op", "replacement", "eps", "module", "source", "reason"]
        if mixed:
            rows = [(*r[:3], e.mode or "", *r[3:]) for r, e in zip(rows, self.entries)]
            headers.insert(3, "mode")
        return _with_opaque(head + "\n" + tabulate(rows, headers=headers), self.opaque)


@dataclass(frozen=True)
class StripEntry:
    node: str          # the sll node's name
    sll_op: str        # "sll.round"
    restored: str      # "torch.round(decimals=2)"
    module: str
    source: str


@dataclass
class StripReport:
    entries: list[StripEntry] = field(default_factory=list)
    remaining: int = 0   # sll ops left in the graph: checked to be 0
    opaque: list[OpaqueModule] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return {"stripped": len(self.entries), "remaining": self.remaining}

    def __str__(self) -> str:
        head = f"sll_fx.export_hard: {len(self.entries)} sll op(s) stripped to their hard ops; " \
               f"{self.remaining} sll op(s) remain"
        if self.opaque:
            head += f"; {len(self.opaque)} module(s) kept opaque"
        if not self.entries:
            return _with_opaque(head, self.opaque)
        rows = [(e.node, e.sll_op, e.restored, e.module or "-", e.source) for e in self.entries]
        return _with_opaque(head + "\n" + tabulate(rows, headers=["node", "sll op", "restored", "module", "source"]),
                            self.opaque)
