"""The casts that decide whether a comparison is linearized, spelled every way they are written.

1. A device move keeps the bool (``(x > t).to(x.device)``, ``.to("cpu")``, ``.to(device=...)``):
   the comparison stays hard, its result stays a bool (``x[mask]`` still indexes), and the report
   says why, for a model (with and without ``example_inputs``) and for an exported program; a move
   whose only uses are float casts (``(x > t).to(x.device).float()``) is linearized, in a model and in an
   exported program (``aten.to.dtype_layout(b, dtype=torch.bool, device=...)`` then a cast).
2. A cast to a floating dtype is linearized whether or not it also names a device
   (``.to(x)``, ``.to(x.device, torch.float32)``, ``.to("cpu", torch.float32)``, ...): export writes
   those as ``aten.to.device`` (and ``aten._to_copy.default(dtype=, device=)`` after decompositions),
   which count as casts as ``aten.to.dtype`` does; the same values and gradients on every path.
3. The aten overloads one by one (hand-built graphs): ``to.other`` and ``to.dtype_layout`` to a
   floating dtype are casts; a device-only ``_to_copy``/``to.device``/``to.dtype_layout`` is not.
4. ``example_inputs`` on a graph that fake tensors cannot run to the end (``x[x > 0]``): the dtypes
   found up to that node, the graph's own inference after it; no exception, nothing printed.

Band used throughout: ``x > 0`` with eps = 0.25, so the surrogate is ``0.5 + 2 x`` on ``|x| < 0.25``
(slope ``1 / (2 eps) = 2``), exact in float32 on the inputs below.
"""

from __future__ import annotations

import operator

import pytest
import torch
from torch import fx, nn

import sll_fx
from _helpers import assert_bitwise

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")  # torch's own, deep-copying a pytree spec

aten = torch.ops.aten
EPS = 0.25
X = torch.tensor([-1.0, -0.125, 0.0, 0.125, 0.5, 2.0])
HARD = torch.tensor([False, False, False, True, True, True])
LINEAR = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])      # 0.5 + 2 x in the band, the hard 0/1 outside
SLOPE = torch.tensor([0.0, 2.0, 2.0, 2.0, 0.0, 0.0])         # d/dx: 1 / (2 eps) in the band
LEFT_HARD = "boolean result used by {} (to): left hard (cast it with .float() to linearize)"


class Cast(nn.Module):
    """``cast(x > 0, x)``: the comparison and one cast of its bool."""

    def __init__(self, cast):
        super().__init__()
        self.cast = cast

    def forward(self, x):
        return self.cast(x > 0, x)


def linearize(source, mode="linear", **kw):
    return sll_fx.linearize_module(source, EPS, mode=mode, verbose=False, **kw)


def source_of(path: str, model: nn.Module):
    """The model, or the program ``torch.export`` makes of it (decomposed: ``aten._to_copy``)."""
    if path == "model":
        return model
    ep = torch.export.export(model, (X,))
    return ep.run_decompositions() if path == "decomposed" else ep


def slope(gm) -> torch.Tensor:
    x = X.clone().requires_grad_(True)
    gm(x).sum().backward()
    return x.grad


# ----------------------------------------------------------------------------------------
# 1. a device move is no float cast
# ----------------------------------------------------------------------------------------

DEVICE_MOVES = {
    "to(x.device)": lambda b, x: b.to(x.device),
    "to(x.device, non_blocking=True)": lambda b, x: b.to(x.device, non_blocking=True),
    "to(device=x.device)": lambda b, x: b.to(device=x.device),
    "to(x.device, copy=True)": lambda b, x: b.to(x.device, copy=True),
    "to('cpu')": lambda b, x: b.to("cpu"),
    "to(torch.device('cpu'))": lambda b, x: b.to(torch.device("cpu")),
}


@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("example_inputs", [None, (X,)], ids=["graph", "example_inputs"])
@pytest.mark.parametrize("spelling", DEVICE_MOVES)
def test_a_device_move_leaves_the_comparison_hard(spelling, example_inputs, mode):
    gm = linearize(Cast(DEVICE_MOVES[spelling]), mode, example_inputs=example_inputs)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}, str(gm.sll_report)
    assert [e.reason for e in gm.sll_report.hard] == [LEFT_HARD.format("Tensor.to")]
    assert_bitwise(gm(X), HARD)


@pytest.mark.parametrize("spelling", ["to(x.device)", "to(x.device, non_blocking=True)", "to('cpu')"])
def test_a_device_move_in_an_exported_program_leaves_the_comparison_hard(spelling):
    """Export writes a device move of a bool as ``aten.to.dtype_layout(b, dtype=torch.bool, device=...)``."""
    gm = linearize(torch.export.export(Cast(DEVICE_MOVES[spelling]), (X,)))
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}, str(gm.sll_report)
    assert [e.reason for e in gm.sll_report.hard] == [LEFT_HARD.format("aten.to.dtype_layout")]
    assert_bitwise(gm(X), HARD)


@pytest.mark.parametrize("mode", ["linear", "hard"])
def test_a_moved_mask_still_indexes(mode):
    class Select(nn.Module):
        def forward(self, x):
            return x[(x > 0).to(x.device)].sum()

    gm = linearize(Select(), mode)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}
    assert_bitwise(gm(X), torch.tensor(2.625))


MOVED_THEN_CAST = {
    "to(x.device).float()": lambda b, x: b.to(x.device).float(),
    "cpu().to(x.dtype)": lambda b, x: b.cpu().to(x.dtype),
    "to('cpu', non_blocking=True).type_as(x)": lambda b, x: b.to("cpu", non_blocking=True).type_as(x),
    "to(device=x.device).to(torch.float32)": lambda b, x: b.to(device=x.device).to(torch.float32),
}


@pytest.mark.parametrize("path", ["model", "program", "decomposed"])
@pytest.mark.parametrize("mode", ["linear", "hard"])
@pytest.mark.parametrize("spelling", MOVED_THEN_CAST)
def test_a_device_move_whose_only_use_is_a_float_cast_is_linearized(spelling, mode, path):
    """The move then carries the surrogate's floats (before: left hard, no gradient); export_hard gives back the
    model.  A moved mask with another use keeps its bool (test_a_moved_mask_still_indexes)."""
    model = Cast(MOVED_THEN_CAST[spelling])
    gm = linearize(source_of(path, model), mode)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 1, "hard": 0}, str(gm.sll_report)
    assert_bitwise(gm(X), LINEAR if mode == "linear" else HARD.float())
    assert_bitwise(slope(gm), SLOPE)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), model(X))


# ----------------------------------------------------------------------------------------
# 2. a cast to a floating dtype, with or without a device, on every path
# ----------------------------------------------------------------------------------------

FLOAT_CASTS = {
    "float()": lambda b, x: b.float(),
    "to(torch.float32)": lambda b, x: b.to(torch.float32),
    "to(x.dtype)": lambda b, x: b.to(x.dtype),
    "type_as(x)": lambda b, x: b.type_as(x),
    "to(x)": lambda b, x: b.to(x),
    "to(x, copy=True)": lambda b, x: b.to(x, copy=True),
    "to(x.device, torch.float32)": lambda b, x: b.to(x.device, torch.float32),
    "to(x.device, x.dtype)": lambda b, x: b.to(x.device, x.dtype),
    "to(x.device, torch.float32, non_blocking=True)": lambda b, x: b.to(x.device, torch.float32, non_blocking=True),
    "to(device=x.device, dtype=torch.float32)": lambda b, x: b.to(device=x.device, dtype=torch.float32),
    "to('cpu', torch.float32)": lambda b, x: b.to("cpu", torch.float32),
}
PATHS = ["model", "example_inputs", "program", "decomposed"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spelling", FLOAT_CASTS)
def test_a_float_cast_is_linearized_on_every_path(spelling, path):
    model = Cast(FLOAT_CASTS[spelling])
    kw = {"example_inputs": (X,)} if path == "example_inputs" else {}
    source = source_of("model" if kw else path, model)
    gm = linearize(source, **kw)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 1, "hard": 0}, str(gm.sll_report)
    assert [e.reason for e in gm.sll_report.entries] == [""]
    assert_bitwise(gm(X), LINEAR)
    assert_bitwise(slope(gm), SLOPE)
    assert_bitwise(linearize(source, "hard", **kw)(X), HARD.float())
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), model(X))


@pytest.mark.parametrize("spelling", ["to(x)", "to(x.device, torch.float32)", "to('cpu', torch.float32)"])
def test_export_writes_these_casts_as_aten_to_device(spelling):
    """(What test 2 relies on: the casts it adds to ``rules.ATEN_CASTS`` are the ones export writes.)"""
    ep = torch.export.export(Cast(FLOAT_CASTS[spelling]), (X,))
    assert [n.target for n in ep.graph.nodes if n.op == "call_function"][-1] is aten.to.device
    decomposed = ep.run_decompositions()
    casts = [n for n in decomposed.graph.nodes if n.target is aten._to_copy.default]
    assert [c.kwargs for c in casts] == [{"dtype": torch.float32, "device": torch.device("cpu")}]


def test_an_integer_target_of_to_other_leaves_the_comparison_hard():
    """``.to(k)`` with an integer ``k``: no float cast (known from example_inputs)."""
    class ToOther(nn.Module):
        def forward(self, x, k):
            return (x > 0).to(k)

    k = torch.arange(6)
    gm = linearize(ToOther(), example_inputs=(X, k))
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}, str(gm.sll_report)
    assert [e.reason for e in gm.sll_report.hard] == [LEFT_HARD.format("Tensor.to")]
    assert_bitwise(gm(X, k), HARD.long())


# ----------------------------------------------------------------------------------------
# 3. the aten overloads one by one
# ----------------------------------------------------------------------------------------

CPU = torch.device("cpu")
ATEN_CASTS = {  # (target, args after the bool, kwargs, output dtype): "x" stands for the input
    "to.dtype": (aten.to.dtype, (torch.float64,), {}, torch.float64),
    "to.device": (aten.to.device, (CPU, torch.float32), {}, torch.float32),
    "to.device non_blocking": (aten.to.device, (CPU, torch.float32, True), {}, torch.float32),
    "to.dtype_layout": (aten.to.dtype_layout, (), {"dtype": torch.float64, "layout": torch.strided, "device": CPU},
                        torch.float64),
    "to.other": (aten.to.other, ("x",), {}, torch.float32),
    "_to_copy dtype": (aten._to_copy.default, (), {"dtype": torch.float16}, torch.float16),
    "_to_copy dtype device": (aten._to_copy.default, (), {"dtype": torch.float32, "device": CPU}, torch.float32),
}
ATEN_MOVES = {  # device moves and bool-to-bool: no float cast
    "to.device bool": (aten.to.device, (CPU, torch.bool), {}),
    "to.dtype_layout bool": (aten.to.dtype_layout, (), {"dtype": torch.bool, "layout": torch.strided, "device": CPU}),
    "_to_copy device": (aten._to_copy.default, (), {"device": CPU}),
}


def aten_graph(target, args, kwargs) -> fx.GraphModule:
    """``target(aten.gt.Scalar(x, 0.0), *args, **kwargs)``."""
    g = fx.Graph()
    x = g.placeholder("x")
    b = g.call_function(aten.gt.Scalar, (x, 0.0))
    g.output(g.call_function(target, (b, *(x if a == "x" else a for a in args)), kwargs))
    return fx.GraphModule(nn.Module(), g)


@pytest.mark.parametrize("case", ATEN_CASTS)
def test_aten_casts_to_a_floating_dtype_are_linearized(case):
    target, args, kwargs, dtype = ATEN_CASTS[case]
    graph = aten_graph(target, args, kwargs)
    gm = linearize(graph)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 1, "hard": 0}, str(gm.sll_report)
    assert_bitwise(gm(X), LINEAR.to(dtype))
    assert_bitwise(slope(gm), SLOPE)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), graph(X))


@pytest.mark.parametrize("case", ATEN_MOVES)
def test_an_aten_device_move_then_a_float_cast_is_linearized(case):
    """``aten.gt`` -> a device move -> ``aten.to.dtype(float32)``: the move carries the surrogate's floats."""
    target, args, kwargs = ATEN_MOVES[case]
    g = fx.Graph()
    x = g.placeholder("x")
    moved = g.call_function(target, (g.call_function(aten.gt.Scalar, (x, 0.0)), *args), kwargs)
    g.output(g.call_function(aten.to.dtype, (moved, torch.float32)))
    graph = fx.GraphModule(nn.Module(), g)
    gm = linearize(graph)
    assert gm.sll_report.counts == {"found": 1, "rewritten": 1, "hard": 0}, str(gm.sll_report)
    assert_bitwise(gm(X), LINEAR)
    assert_bitwise(slope(gm), SLOPE)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X), graph(X))


@pytest.mark.parametrize("case", ATEN_MOVES)
def test_aten_device_moves_are_not_float_casts(case):
    target, args, kwargs = ATEN_MOVES[case]
    gm = linearize(aten_graph(target, args, kwargs))
    assert gm.sll_report.counts == {"found": 1, "rewritten": 0, "hard": 1}, str(gm.sll_report)
    [entry] = gm.sll_report.hard
    assert entry.reason.startswith(f"boolean result used by aten.{target._opname}.{target._overloadname} (")
    assert_bitwise(gm(X), HARD)


# ----------------------------------------------------------------------------------------
# 4. example_inputs on a data-dependent shape
# ----------------------------------------------------------------------------------------

class Index(nn.Module):
    """``x[x > 0]``: a shape fake tensors without a ShapeEnv cannot compute."""

    def forward(self, x, k):
        return x[x > 0].sum() + torch.sign(x) + torch.sign(k)


K = torch.tensor([-2, 0, 3, 1, -1, 5])
#: 2.625 (the sum of x > 0) + the sign surrogate of x (x / eps in the band) + the hard sign of k
INDEX_LINEAR = 2.625 + torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 1.0]) + torch.tensor([-1.0, 0.0, 1.0, 1.0, -1.0, 1.0])


def entries(gm) -> list[tuple]:
    return [(e.node, e.op, e.rewritten, e.reason) for e in gm.sll_report.entries]


INTEGER_K = "input 'k' has an integer dtype: no gradient to give, left hard"


def test_example_inputs_with_a_data_dependent_shape(capfd):
    """The dtypes found before ``x[x > 0]`` (``k`` is an integer: its sign stays hard), the graph's after."""
    gm = linearize(Index(), example_inputs=(X, K))
    assert capfd.readouterr().err == ""
    assert entries(gm) == [("gt", "x > t", False, "boolean result used by operator.getitem (getitem): left hard "
                                                  "(cast it with .float() to linearize)"),
                           ("sign", "torch.sign", True, ""),
                           ("sign_1", "torch.sign", False, INTEGER_K)], str(gm.sll_report)
    assert gm.sll_report.counts == {"found": 3, "rewritten": 1, "hard": 2}
    assert_bitwise(gm(X, K), INDEX_LINEAR)
    assert_bitwise(linearize(Index(), "hard", example_inputs=(X, K))(X, K), Index()(X, K))
    plain = linearize(Index())  # without them k's dtype is unknown: its sign is rewritten (the hard result for ints)
    assert plain.sll_report.counts == {"found": 3, "rewritten": 2, "hard": 1}
    assert_bitwise(plain(X, K), INDEX_LINEAR)


def test_an_exported_data_dependent_shape_prints_nothing(capfd):
    gm = linearize(torch.export.export(Index(), (X, K)))
    assert capfd.readouterr().err == ""
    assert entries(gm) == [("gt", "aten.gt.Scalar", False, "boolean result used by aten.index.Tensor (index): left "
                                                           "hard (cast it with .float() to linearize)"),
                           ("sign", "aten.sign.default", True, ""),
                           ("sign_1", "aten.sign.default", False, INTEGER_K)], str(gm.sll_report)
    assert_bitwise(gm(X, K), INDEX_LINEAR)
    assert_bitwise(sll_fx.export_hard(gm, verbose=False)(X, K), Index()(X, K))



class _Bin(nn.Module):
    """A histogram bin: two comparisons joined by a logical op before the cast (or the product of their casts)."""

    def __init__(self, join=None):
        super().__init__()
        self.join = join

    def forward(self, x):
        if self.join is None:
            return (x >= -0.5).float() * (x < 0.5).float()
        return self.join(x >= -0.5, x < 0.5).float()


@pytest.mark.parametrize("join, name", [(operator.and_, "operator.and_ (and_)"), (operator.or_, "operator.or_ (or_)"),
                                        (torch.logical_and, "torch.logical_and (logical_and)")])
def test_a_logical_use_names_the_product_spelling(join, name):
    """The reason said "cast it with .float() to linearize": ``a.float() & b.float()`` raises (no bitwise op on
    floats); the product ``a.float() * b.float()`` is the spelling that is rewritten (a21)."""
    gm = linearize(_Bin(join))
    assert [e.reason for e in gm.sll_report.hard] == [
        f"boolean result used by {name}: left hard (cast each comparison with .float() and write & as *, | as "
        "a + b - a * b, ~m as 1 - m, ^ as a + b - 2 * a * b to linearize)"] * 2
    assert_bitwise(gm(X), _Bin(join)(X))
    assert linearize(_Bin()).sll_report.counts == {"found": 2, "rewritten": 2, "hard": 0}


class _WhereOfBin(nn.Module):
    def forward(self, x):
        return torch.where((x >= -0.5) & (x < 0.5), x, -x)


def test_a_logical_use_as_a_where_condition_names_the_product_spelling_too():
    """The reason called ``operator.and_`` "a view that a where/masked_fill takes as its condition" and advised
    comparing after the view (a23)."""
    gm = linearize(_WhereOfBin())
    assert all("write & as *" in e.reason for e in gm.sll_report.hard) and len(gm.sll_report.hard) == 2
    assert_bitwise(gm(X), _WhereOfBin()(X))
