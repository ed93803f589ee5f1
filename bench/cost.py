"""Scenario E's cost phase (issue 21): what one delivery costs the server processes, nginx and
Redis, and how many Redis commands one post costs, at a fixed rate that every process count
passes.

Two shared cores cannot run three server processes side by side, so more processes cannot add
throughput here; what they can do is cost more per delivery (each process's own event loop,
hub, timers, database thread and channel-layer reader) and per post (the channel layer writes
the doorbell to each process's channel, and each process reads its own). This phase measures
both, with the load and the receivers the same for every process count.
"""

from dataclasses import dataclass, field
from typing import Any

from .loadgen import Load
from .many import RedisCounter
from .servers import cpu_seconds


@dataclass(frozen=True)
class Cost:
    """What to measure beside the servers: a role's CPU ("nginx", "redis") and one Redis."""

    redis_url: str
    roles: dict[str, list[int]] = field(default_factory=dict)


class Metered:
    """A `Load` whose `run` also reports `cost` for the phase: CPU seconds per role (the servers'
    summed over their processes) per delivery, and Redis commands (INFO commandstats: commands
    run inside scripts are counted with the script) per post. Everything else is the Load's, so
    `Noise.run` repeats a noisy phase with the cost measured again."""

    def __init__(self, load: Load, cost: Cost) -> None:
        self.load = load
        self.cost = cost
        self.redis = RedisCounter(cost.redis_url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.load, name)

    def _cpu(self) -> dict[str, float]:
        roles = {"server": self.load.target.server_pids, **self.cost.roles}
        spent = {}
        for role, pids in roles.items():
            total = 0.0
            for pid in pids:
                try:
                    total += cpu_seconds(pid)
                except OSError:
                    pass
            spent[role] = total
        return spent

    async def run(self, rate: float, duration: float, drain: float, **kw) -> dict[str, Any]:
        calls = self.redis.calls()
        cpu = self._cpu()
        result = await self.load.run(rate, duration, drain, **kw)
        after_cpu = self._cpu()
        after = self.redis.calls()
        commands = {k: v - calls.get(k, 0) for k, v in after.items() if v > calls.get(k, 0)}
        delivered, posts = result["delivered"], result["sent"]
        cost: dict[str, Any] = {
            "posts": posts,
            "deliveries": delivered,
            "cpu_seconds": {k: round(after_cpu[k] - cpu[k], 3) for k in cpu},
        }
        for role in cpu:
            seconds = after_cpu[role] - cpu[role]
            cost[f"{role}_us_per_delivery"] = (
                round(1e6 * seconds / delivered, 2) if delivered else None
            )
        total = sum(commands.values())
        cost["redis_commands"] = total
        cost["redis_commands_per_post"] = round(total / posts, 2) if posts else None
        cost["redis_commands_by_name_per_post"] = {
            name: round(count / posts, 2)
            for name, count in sorted(commands.items(), key=lambda kv: -kv[1])
        }
        result["cost"] = cost
        return result

    def close(self) -> None:
        self.redis.close()
