"""The evaluation wing: the model client, running a technique, statistics, records and their store,
output files and charts, the harness. Modules named ``sandbox_*`` run inside the sandbox."""

from agentlab.eval.shared_cache import share_with_jobs

# evaluation jobs share the workspace's completion cache whichever scheduler runs them: every process that
# imports the evaluation wing (the CLI, a lab, the harness) gives the schedulers the hook
share_with_jobs()
