"""`--device`: where the fast-path exactness tests (tests/test_static_cache.py) run; cpu by default, cuda on
a GPU (`pytest tests/test_static_cache.py --device cuda`, a stage of scripts/gpu_protocol.sh)."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="device of the fast-path exactness tests (cpu or cuda)")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    name = request.config.getoption("--device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {name}: CUDA is not available")
    return torch.device(name)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy machine waiting threads slow them tenfold."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
