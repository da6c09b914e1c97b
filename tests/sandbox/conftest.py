import shutil

import pytest

from sandbox import SandboxOptions

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed (apt-get install bubblewrap)")


@pytest.fixture
def opts():
    """Explicit host-side sandbox settings (no config files involved)."""
    return SandboxOptions(backend="bubblewrap")
