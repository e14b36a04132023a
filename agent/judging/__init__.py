"""Everything that asks the judge LLM, in one place: the client (`judge`: schema-bound
requests, retries, the answer cache), the embedded judge it can start (`embedded_judge`, on
`serving.launch`), LLM-labelled features (`llm_feature`, and the scored `channel` labeller it
uses for categorical labels) and the judge as a proposer of hypotheses (`proposer`). The
explore loop (`agent.loop`), labelling and the FCR job call these; nothing here imports them.
"""
