"""Multi-turn agents: environments with tool calls, episode rollouts, and their testbed tasks.

``env`` (the protocol and ``ToolEnv``), ``toolcall`` (the strict action format), ``episodes``
(multi-turn rollouts into a ``RolloutBatch``), ``envs/`` (the testbed environments, registered as
episodic tasks). See docs/agents.md.
"""
