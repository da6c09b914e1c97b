"""Reasoning techniques: validated specs the harness executes, and the built-in library."""

from agentlab.techniques.builtin import apply_overrides, builtin_techniques, get_technique
from agentlab.techniques.spec import (
    Chains,
    FewShotExample,
    Refine,
    Sampling,
    Step,
    TechniqueError,
    TechniqueSpec,
    Verifier,
    format_validation_error,
    parse_verdict,
)

__all__ = [
    "Chains", "FewShotExample", "Refine", "Sampling", "Step", "TechniqueError", "TechniqueSpec", "Verifier",
    "apply_overrides", "builtin_techniques", "format_validation_error", "get_technique", "parse_verdict",
]
