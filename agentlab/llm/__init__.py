"""The LLM wing: the agents' gateway, the one transport (retries, backoff, cost, error
explanations) it shares with the evaluation client, structured output, model serving, the usage
ledger and the response cache."""
