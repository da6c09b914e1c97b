"""The evaluation wing: the model client, running a technique, statistics, records and their store,
output files and charts, the harness. Modules named ``sandbox_*`` run inside the sandbox."""
