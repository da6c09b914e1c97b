"""The shared preprint server where labs publish and find reports."""

import os as _os

_os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
