"""The goal queue from a lab command: claim a goal, release it, claim a resumed run's goal back
(``agentlab lab start --from-queue``, ``agentlab lab resume``)."""

from __future__ import annotations

from rich.markup import escape

from agentlab.cli.common import console, err_console
from agentlab.errors import AgentlabError


def claim_from_queue(settings, url: str, key: str | None, run_id: str):
    """Claim the next open goal on the server under a lease that a background thread renews."""
    from agentlab.lab.goal_lease import GoalHold

    q = settings.goals
    hold = GoalHold.claim(url, key, lease_s=q.lease_s, heartbeat_s=q.heartbeat_s, holder=run_id)
    if hold is None:
        raise AgentlabError(f"no open goal in the queue on {url}: add one with `agentlab goals add` or `goals import`")
    console.print(f"claimed goal {hold.goal_id} (attempt {hold.lease.attempt}; lease {q.lease_s:g} s, renewed every "
                  f"{hold.heartbeat_s:g} s): {escape(hold.goal.text)}", highlight=False)
    return hold


def release_goal(hold, reason: str) -> None:
    hold.release(reason)
    if hold.lost:
        err_console.print(f"[yellow]note:[/] the lease on goal {hold.goal_id} was lost during the run: {escape(hold.lost)}")
    else:
        console.print(f"goal {hold.goal_id} released ({reason}): it is {hold.lease.goal.status}", highlight=False)


def reclaim_goal(settings, url: str, key: str | None, goal_id: str, run_id: str):
    """A resumed run from the queue claims its goal back; it runs on without a lease when another lab holds
    the goal (or it closed): its paper still counts for the goal."""
    from agentlab.lab.goal_lease import GoalHold

    q = settings.goals
    hold, why = GoalHold.reclaim(url, key, goal_id, lease_s=q.lease_s, heartbeat_s=q.heartbeat_s, holder=run_id)
    if hold is None:
        err_console.print(f"[yellow]note:[/] goal {goal_id} was not claimed back ({escape(why)}); the run continues")
    else:
        console.print(f"claimed goal {goal_id} back (attempt {hold.lease.attempt})", highlight=False)
    return hold
