"""The lab wing: run/resume, the LangGraph workflow (graph, nodes, context, state), experiments as
jobs, the verified report, publishing and the outbox."""
