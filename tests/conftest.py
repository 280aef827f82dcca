"""Test-wide settings.

Inductor's on-disk caches are off for the whole run: their keys see an ``sll`` op as one
node of the traced graph, not the Python code behind it, so after a change to
``sll_fx/kernels.py`` a warm cache (``/tmp/torchinductor_$USER``) would serve the old
kernels and the compile tests would check stale code.
"""

import pytest
import torch
import torch._functorch.config
import torch._inductor.config


@pytest.fixture(autouse=True, scope="session")
def no_stale_compiled_code():
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches emptied around a test that compiles (``autouse`` in the files that compile in every test):
    its recompile limit is per code object, which a test's functions compiled once per case share; and a second
    ``torch.compile`` of one module with other options would run the first one's cached code instead of tracing it
    again."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
