import pytest

from sandbox import SandboxOptions

# the gate of tests/conftest.py: skipped without bubblewrap, a failure under CI=true
needs_bwrap = pytest.mark.requires("bubblewrap")


@pytest.fixture
def opts():
    """Explicit host-side sandbox settings (no config files involved)."""
    return SandboxOptions(backend="bubblewrap")
