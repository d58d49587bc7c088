"""`--device`: where the fast-path exactness tests (tests/test_static_cache.py) run; cpu by default, cuda on
a GPU (`pytest tests/test_static_cache.py --device cuda`, a stage of scripts/gpu_protocol.sh)."""

import os

# The tests never fetch from the hub (their models are built from configs): a hub call fails at once instead of
# waiting for the network. Read by huggingface_hub when it is first imported, so set before any test module is.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`'s parallel group: one worker per core already
        os.environ["OMP_NUM_THREADS"] = "1"  # and the `scb` processes a test starts, whose folders it resumes
        torch.set_num_threads(1)


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
