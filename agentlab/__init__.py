"""agentlab: autonomous research laboratories of LLM agents."""

import os as _os

# litellm fetches its model cost map from the network at import unless told not to;
# Chroma phones home unless told not to. Both must stay offline by default.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
_os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
