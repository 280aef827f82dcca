"""A slice of the tie check's fuzzer (``tests/_fuzz_ties.py``: how programs are made and classified).

Programs ``0 .. N - 1`` (version 1 of the generator), ``V2 .. V2 + N2 - 1`` (version 2: a wider op set, seeds from
``100_000_000``) and the seeds of ``KNOWN_SILENT``, ``AT_INIT`` and ``FIXED``: none crashes, none exports other
values than the model's, none is ``silent`` (a linearized output off the model's on whole ranges of inputs, at
every eps) but the seeds in ``KNOWN_SILENT``, found in bigger batches, each an open case named by its reason.  A
change that mends one makes its seed pass: the test then fails, saying to move the seed to ``FIXED`` (run as a
control from then on).  ``slow`` (a band seen through a saturating ``tanh``/``sigmoid``) passes.  ``at_init``:
silent at the learned scalars' values now (an ``nn.Parameter`` bound, ``floor(maximum(x, p))`` at ``p = 1.0``) and
not with each nudged off its round value: the documented policy (a trainable value is never taken for a number,
so such an op is on its jump only until the scalar's first update), not a miss; the seeds of ``AT_INIT`` must
be classified so (not ``silent``: nudged, their elements off shrink with eps), and
``test_nudge_hides_no_real_miss`` checks that a tie that holds whatever a scalar is stays ``silent``.
A bigger batch: ``python tests/_fuzz_ties.py --seed 4 --n 300 --only silent,crash,export,at_init --shrink``
(``--seed 100`` and above: version 2).  The seeds name programs only while the generator draws the same:
``test_programs_unchanged`` pins the sources of the seeds this file names (a change to the generator goes into a new
version, from a new seed).
"""

from __future__ import annotations

import hashlib

import pytest

import _fuzz_ties as fz

N = 60
N2 = 20

# Found by --seed 1, 2, 3 (--n 300 each), 4 (--n 200) and 5 to 9 (--n 150); the minimal repro (--shrink) in each reason.
KNOWN_SILENT: dict[int, str] = {
    6000021: "tanh is exactly -1 in float32 below about -9, on ceil's jump (the known open case of the fuzzer's "
             "docstring), seen through a row mean that every band reaches too: v1 = ceil(tanh(x)); "
             "v1.detach().mean(-1, keepdim=True), 128 rows off at eps 1e-3 and 1e-5, 30 at 1e-9 (11 rows hold an "
             "x < -9); left open: read, tanh's -1 and 1 would leave pass_scaling's Modular floor(tanh(Linear(x)) * 2) "
             "hard too (a layer's output has no bound the check may read)",
}
# Version 2, found by --seed 100 to 113 (--n 150 each): a learned scalar's bound on a jump or threshold at its value
# now, the documented policy (classified ``at_init``: ok with the scalars nudged).  Each reason: the form, its shrunk
# repro.
AT_INIT: dict[int, str] = {
    100000080: "round(maximum(x, p) * 10) with p = 0.75 is 7.5 on x < 0.75, on round's jump; shrunk: v0 = "
               "maximum(x, p0); round(v0 + (x - x.detach()), decimals=1)",
    103000083: "floor(maximum(x, p)) with p = 1.0 on floor's jump on x < 1 (shrunk as it is)",
    106000074: "clamp(ceil(x * 2), min=p) with p = 0.5 on round's jump where ceil(2x) <= 0; shrunk: v1 = ceil(x * "
               "2.0); v2 = clamp(v1, min=p0); round(v2)",
    106000086: "round(abs(minimum(x, p)), decimals=1) with p = 0.75 on x >= 0.75 (shrunk as it is)",
    106000099: "clamp(one_hot(argmax(x, -1)), min=p) with p = 0.5 on round's jump off each row's argmax; shrunk: "
               "v2 = floor(one_hot(argmax(x, -1), 128).float()); round(clamp(v2, min=p0))",
    108000002: "maximum(mask, p) with p = 0.5 at a where's threshold 0.5 where the mask is 0; shrunk: v0 = (x > "
               "1.5).float(); v2 = maximum(v0, p0); v4 = v2 + (v2 - v2.detach()); where(v4 > 0.5, floor(v0), v4)",
    108000102: "ceil(clamp(x, min=p)) with p = 2.0 below 2; shrunk: ceil(clamp(where(x > 0.25, x, x), min=p0).clone())",
    108000108: "floor(minimum(x, p)) with p = 2.0 from 2 up (shrunk as it is)",
    110000013: "as 108000108 with p = 1.0 (shrunk as it is)",
    110000067: "round(clamp(x, min=p)) with p = 0.5 below 0.5; shrunk: round(clamp(where(x > 0.0, x, x), min=p0))",
    111000038: "ceil(clamp(x, min=p)) with p = 1.0, read on by sign and ceil; shrunk: v1 = ceil(clamp(x, min=p0)); "
               "ceil(sign(v1)) + v1",
    111000109: "ceil(minimum(where(x > 0.5, x, x), p)) with p = 2.0",
    112000051: "minimum(v, v) > 0.5 of v = clamp(x, min=p), p = 0.5, at a where's threshold; shrunk: v0 = clamp(x, "
               "min=p0); where(minimum(v0, v0) > 0.5, x, v0)",
    112000147: "as 110000013: floor(minimum(x.clone(), p)) with p = 1.0",
    113000013: "maximum(mask, p) - sigmoid(mask) with p = 0.5 is 0 where the mask is 0, compared through sigmoid at "
               "0.5 (a constant tensor for p is read: test_an_extremum_with_a_constant_tensor_is_read_on_a_grid_s_"
               "points); shrunk: v0 = (sigmoid(x) > 0.5).float(); (sigmoid(maximum(v0, p0) - sigmoid(v0)) > 0.5)",
    113000080: "floor(clamp(x, min=p)) with p = 2.0 (shrunk as it is)",
    113000100: "clamp(x, min=p) > -1.0 with p = -1.0 at a where's threshold; shrunk: v1 = clamp(x, min=p0); "
               "where(v1 > -1.0, x - x * 0.1, relu(v1) - v1)",
    # found silent by --seed 118 (--n 150: ok 147, silent 1, slow 2), on main too: clamp(floor(x), min=p) >= 2.0 (a
    # clamp with a learned bound read as though it cut every value), fixed since; at_init for the where below
    118000040: "clamp(floor(x), min=p) with p = 0.5 is p on x < 1, at a where's threshold 0.5; shrunk: v1 = "
               "floor(x.clone()); v3 = clamp(v1, min=p0); where(v3 > 0.5, (v1 >= 1.5).float(), hardtanh(x))",
}
# Version 2 seeds fixed in the twenty-fourth session: 103000070, 110000009, 111000065, 111000135 (found by --seed 103,
# 110, 111), 115000035 and 115000044 (--seed 115: ok 147, at_init 1, silent 2 on its commit); in the twenty-fifth,
# found silent (on main too) by --seed 121 (ok 149, silent 1) and 124 (ok 146, at_init 2, slow 1, silent 1):
# 121000050 (trunc(relu(v) - v) of v = clamp(x + heaviside(x, 0), -2, 1) + heaviside(x, 0): 2 on x <= -2) and
# 124000006 (heaviside(relu(minimum(x, x)) - (x + (x - x.detach())), relu(x)): 0 from 0 up); then by --seed 125 (ok
# 148, slow 1, silent 1) and 127 (ok 149, silent 1): 125000081 (round(round(heaviside(mask, x) * 2) / 2): x where the
# mask is 0, read as on 0 and 1 only) and 127000080 (mask + where(mask > -0.5, mask, x) > 2: read at 0 only); then by
# --seed 129 (ok 147, at_init 2, silent 1): 129000003 (floor(maximum(round(trunc(x.mean(-1))), p).mean(-1)): a mean
# of a grid its input takes on ranges, silent with p nudged too); then by --seed 136 (ok 148, slow 1, silent 1):
# 136000080 (floor(abs(maximum(round(floor(round(x, decimals=1))), p))): abs of a grid on a part, read as numbers);
# in the twenty-sixth, by --seed 146 (ok 149, silent 1): 146000057 (heaviside(v - v.clone(), 1.0): a copy not read as
# the value it copies); in the twenty-eighth, by --seed 19 (version 1, ok 148, slow 1, silent 1): 19000129 (trunc(v1 -
# v0) of v0 = x + 1, v1 = where(v0 > 2, v0, x): x - (x + 1), -1, where the where takes x).
FIXED: tuple[int, ...] = (  # seeds once in KNOWN_SILENT, now ok: controls
    3000211, 1000108, 1000222, 4000063, 3000285, 3000029, 2000235, 5000072, 5000129, 8000103, 8000098, 105000007,
    102000004, 111000125, 115000044, 103000070, 110000009, 111000065, 111000135, 115000035, 121000050, 124000006,
    125000081, 127000080, 129000003, 136000080, 146000057, 19000129)

# sha256 of the sources of the seeds named here (first 16 hex digits): version 1 as made before version 2 existed
PINNED = {
    (*range(N), 6000021, 8000098, 3000211, 1000108, 1000222, 4000063, 3000285, 3000029, 2000235, 5000072, 5000129,
     8000103): "7fd9e9424d9f5c11",
    (*range(fz.V2, fz.V2 + N2), 100000080, 102000004, 103000070, 103000083): "fdb7339777f3681e",
    (105000007, 106000074, 106000086, 106000099): "7fa17a4c3e03920a",
    (108000002, 108000102, 108000108, 110000009, 110000013, 110000067): "b576da847747998b",
    (111000125,): "784ab7eafde91119",
    (111000038, 111000065, 111000109, 111000135, 112000051, 112000147, 113000013, 113000080,
     113000100): "9ddc633f157ed114",
    (115000035, 115000044): "1f8dc29c1f0cc2ff",
    (118000040,): "73a5e2107380807a",
    (121000050, 124000006): "254f151008f4ac98",
    (125000081, 127000080): "9028e0817cace507",
    (129000003,): "789e388dd4110292",
    (136000080,): "958210f583938c46",
    (146000057,): "423036b28f6e4b54",
    (19000129,): "fc5c3984b771459b",
}


@pytest.mark.parametrize("seed", [*range(N), *range(fz.V2, fz.V2 + N2), *KNOWN_SILENT, *AT_INIT, *FIXED])
def test_program(seed):
    res = fz.classify(fz.program(seed))
    entries = "\n".join(f"  {node} {op}: {'rewritten' if rw else 'hard, ' + why[:160]}"
                        for node, op, rw, why in res.entries)
    what = f"seed {seed}: {res.cls} (n1={res.n1} n2={res.n2} n3={res.n3})\n{res.error}{res.source}{entries}"
    if seed in KNOWN_SILENT:
        assert res.cls != "ok", \
            f"seed {seed} now passes: move it from KNOWN_SILENT to FIXED ({KNOWN_SILENT[seed]})\n{what}"
        assert res.cls == "silent", what
    elif seed in AT_INIT:
        assert res.cls != "ok", f"seed {seed} now passes: move it from AT_INIT to FIXED ({AT_INIT[seed]})\n{what}"
        assert res.cls == "at_init", f"silent with the learned scalars nudged too ({res.nudged}): {what}"
        n1, n2, n3 = res.nudged
        assert fz.verdict(n1, n2, n3) != "silent"
    else:
        assert res.cls in ("ok", "slow"), what


def test_programs_are_seeded():
    a, b = fz.program(12345), fz.program(12345)
    assert a.source == b.source and a.source != fz.program(12346).source
    assert all(x.equal(y) for x, y in zip(fz.inputs(7), fz.inputs(7)))
    fz.program(12345).module()   # the source is a whole module


def test_programs_unchanged():
    """The seeds of this file still name the programs they were found on."""
    for seeds, digest in PINNED.items():
        h = hashlib.sha256()
        for seed in seeds:
            h.update(fz.program(seed).source.encode())
        assert h.hexdigest()[:16] == digest, f"the generator draws other programs for {seeds}: add a version instead"
    assert {*KNOWN_SILENT, *AT_INIT, *FIXED} <= {s for seeds in PINNED for s in seeds}
    assert not set(KNOWN_SILENT) & set(AT_INIT)
    assert fz.program(fz.V2 - 1).source.count("x of shape") == 0 and fz.shape(fz.V2 + 2) == (128, 127)


def test_verdict():
    """The rule that tells a missed tie from SLL's bands (the counts are those of programs of the batch)."""
    assert fz.verdict(186, 41, None) == "ok"          # bands: ~10x fewer at a 10x smaller eps
    assert fz.verdict(27, 10, 0) == "ok"              # a few elements: flat to 1e-4 by chance, not at 1e-5
    assert fz.verdict(25, 21, 20) == "silent"         # the mean of 3000211: a tie on a few rows
    assert fz.verdict(8537, 8483, 8479) == "silent"   # heaviside(round(x), 0.5) then round: a tie at 0.5
    assert fz.verdict(2753, 1255, 496) == "slow"      # ceil(2 * tanh(|x|)): a band through tanh's saturation


# 6000021 shrunk: ceil(tanh(x)) on its jump where tanh is exactly -1 (x < -9), through a row mean: no scalar in it
_TANH_TIE = ["v0 = torch.tanh(x)", "v1 = torch.ceil(v0)", "v2 = v1.detach()", "v3 = v2.mean(-1, keepdim=True)",
             "v4 = v1.clone(); v4.clamp_(0.0, 2.0)", "v6 = torch.heaviside(v4, torch.tensor(1.0))"]


@pytest.mark.parametrize("steps", [
    ["v7 = torch.maximum(x, self.p0)", "v8 = torch.floor(v7)"],          # an output of its own
    ["v7 = torch.maximum(x, self.p0)", "v8 = torch.floor(v7) + v3"],     # the same output: every row of v3 off
    ["v9 = v3 * self.p0"],                                               # the missed rows read p (not on a jump)
], ids=["apart", "summed", "scaled"])
def test_nudge_hides_no_real_miss(steps):
    """A program with a learned scalar and a missed tie that holds whatever the scalar is stays ``silent``: the
    nudged run (``at_init``'s test) still finds the rows of 6000021's tie (128 elements at eps 1e-5), beside a
    learned bound on floor's jump (24,000 elements at p = 1.0, ~0 nudged) or not."""
    base = fz.classify(fz._assemble(6000021, _TANH_TIE, {}))
    assert base.cls == "silent" and base.n3 == 128 and base.nudged == [], base
    steps = _TANH_TIE[:4] + steps + _TANH_TIE[4:] if steps[0].startswith("v9") else _TANH_TIE + steps
    res = fz.classify(fz._assemble(6000021, steps, {"p0": "1.0"}))
    assert res.cls == "silent", res
    assert res.nudged and res.nudged[2] >= 128 and fz.verdict(*res.nudged) == "silent", res
    alone = fz.classify(fz._assemble(6000021, ["v7 = torch.maximum(x, self.p0)", "v8 = torch.floor(v7)"],
                                     {"p0": "1.0"}))
    assert alone.cls == "at_init" and alone.n3 > 20000 and fz.verdict(*alone.nudged) == "ok", alone


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_untraced_program_is_a_crash():
    """linearize_module runs a forward it cannot trace as written (all hard, so ``ok`` by the counts)."""
    res = fz.classify(fz._assemble(0, ["v0 = torch.round(x)", "v1 = x if v0.sum() > 0 else -x"], {}))
    assert res.cls == "crash" and res.error.startswith("opaque:"), res
