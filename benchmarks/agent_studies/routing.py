"""Routing: Router-R1's cost-weight sweep (accuracy vs cost frontier) on the routing testbed.

Three arms of ``recipes/agents/router_r1.yaml`` that differ only in the cost weight α of the
``router_r1`` reward: 0 (accuracy only), 0.3 (the frontier of fixed policies sends easy hops to the
cheap model, hard hops to the reliable one) and 0.7 (hard hops to the mid model); see the frontier
table in docs/agents/routing.md (``benchmarks/routing_frontier.py --cost-scale 12``). The claim under
test: a larger α lowers the mean episode cost, at some accuracy.
"""

RECIPE = "recipes/agents/router_r1.yaml"

STUDY = {
    "name": "routing",
    "title": "Router-R1 cost-weight sweep on the routing testbed",
    "arms": [
        {"label": f"α={a:g}", "recipe": RECIPE, "overrides": [f"rewards.terms.0.cost_weight={a}"]}
        for a in (0.0, 0.3, 0.7)
    ],
    "metrics": ["pass@1", "episode_cost", "episode_tool_calls", "episode_malformed"],
    "curves": {"agent/cost": [1, 40], "agent/success": [1, 40]},
    "overrides": [],
}
