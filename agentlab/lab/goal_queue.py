"""A lab's goal from the server's queue (``agentlab lab start --from-queue``, ``agentlab lab resume``): claim the
next open goal under a lease that a background thread renews (``GoalHold``), give it back when the run ends,
claim a resumed run's goal back. Messages go to ``say`` (``agentlab.lab.launch.Say``); nothing here prints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentlab.errors import AgentlabError

if TYPE_CHECKING:
    from agentlab.config import Settings
    from agentlab.lab.goal_lease import GoalHold
    from agentlab.lab.launch import Say


def claim_from_queue(settings: Settings, url: str, key: str | None, run_id: str, say: Say) -> GoalHold:
    """Claim the next open goal on the server under a lease that a background thread renews."""
    from agentlab.lab.goal_lease import GoalHold

    q = settings.goals
    hold = GoalHold.claim(url, key, lease_s=q.lease_s, heartbeat_s=q.heartbeat_s, holder=run_id)
    if hold is None:
        raise AgentlabError(f"no open goal in the queue on {url}: add one with `agentlab goals add` or `goals import`")
    say("info", f"claimed goal {hold.goal_id} (attempt {hold.lease.attempt}; lease {q.lease_s:g} s, renewed every "
                f"{hold.heartbeat_s:g} s): {hold.goal.text}")
    return hold


def release_goal(hold: Any, reason: str, say: Say) -> None:
    hold.release(reason)
    if hold.lost:
        say("note", f"the lease on goal {hold.goal_id} was lost during the run: {hold.lost}")
    else:
        say("info", f"goal {hold.goal_id} released ({reason}): it is {hold.lease.goal.status}")


def reclaim_goal(settings: Settings, url: str, key: str | None, goal_id: str, run_id: str,
                 say: Say) -> GoalHold | None:
    """A resumed run from the queue claims its goal back; it runs on without a lease when another lab holds
    the goal (or it closed): its paper still counts for the goal."""
    from agentlab.lab.goal_lease import GoalHold

    q = settings.goals
    hold, why = GoalHold.reclaim(url, key, goal_id, lease_s=q.lease_s, heartbeat_s=q.heartbeat_s, holder=run_id)
    if hold is None:
        say("note", f"goal {goal_id} was not claimed back ({why}); the run continues")
    else:
        say("info", f"claimed goal {goal_id} back (attempt {hold.lease.attempt})")
    return hold
