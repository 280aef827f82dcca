"""Test-wide settings.

Inductor's on-disk caches are off for the whole run: their keys see an ``sll`` op as one
node of the traced graph, not the Python code behind it, so after a change to
``sll_fx/kernels.py`` a warm cache (``/tmp/torchinductor_$USER``) would serve the old
kernels and the compile tests would check stale code.
"""

import pytest
import torch._functorch.config
import torch._inductor.config


@pytest.fixture(autouse=True, scope="session")
def no_stale_compiled_code():
    with torch._inductor.config.patch(fx_graph_cache=False), \
            torch._functorch.config.patch(enable_autograd_cache=False):
        yield
