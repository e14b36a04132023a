"""The embedded judge's servers: OpenAI-compatible HTTP over a small instruct model on CPU.

`batch_engine` decodes every request in flight in one batch under JSON-schema grammars,
`prompt_scoring` scores prompt tokens (`echo` + `logprobs`), `batch_server` serves both
(`python -m serving.batch_server`), and `launch` starts, supervises and stops a server
(this one or llama-cpp-python's) as a child process of autoscope.

Uses `scope_core` only through `scope_core.api`; never imports `agent` (the agent's judge
client, `agent.judging.embedded_judge`, builds on `launch`).
"""
