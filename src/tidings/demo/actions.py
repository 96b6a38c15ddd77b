"""What the demo's social actions mean as Tidings events: pure functions, no I/O.

Each person of the demo app is a user id; ``followers:<id>`` is the topic of that person's followers, so a
post fans out to them (as a real app would wire it). Every event names its actor and carries the sentence the
inbox shows in ``data.text``. A like carries a ``cancel_key`` naming who liked which post, so an unlike
retracts it by that key (``POST /v1/events/cancel``), as an app undoes a notification whose action was undone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEMO_APP = "demo"

# The people of the demo. Ids are what tokens name; names and colours are only for the page.
PEOPLE: dict[str, tuple[str, str]] = {
    "alice": ("Alice", "#e8590c"),
    "bob": ("Bob", "#1c7ed6"),
    "carol": ("Carol", "#2f9e44"),
    "dave": ("Dave", "#9c36b5"),
}

Action = Literal["like", "unlike", "comment", "follow", "post"]


@dataclass(frozen=True, slots=True)
class Planned:
    """An event body for ``POST /v1/events`` and, for a follow, the topic subscription to make first."""

    event: dict[str, Any] | None  # None: nothing to send (an unlike only cancels)
    subscribe: tuple[str, str] | None = None  # (topic, user)
    cancel: str | None = None  # the cancel_key to retract (an unlike)


def followers_topic(user: str) -> str:
    return f"followers:{user}"


def post_id(user: str) -> str:
    """The one post each demo person has, which the others like and comment on."""
    return f"post:{user}:1"


def like_key(actor: str, target: str) -> str:
    """The cancel_key of ``actor``'s like of ``target``'s post: what an unlike cancels."""
    return f"like:{actor}:{post_id(target)}"


def name_of(user: str) -> str:
    return PEOPLE[user][0] if user in PEOPLE else user


def plan(action: Action, actor: str, target: str, text: str = "") -> Planned:
    """The event ``actor`` causes by doing ``action`` to ``target`` (a post goes to the actor's followers)."""
    who = {"id": actor, "name": name_of(actor)}
    name = who["name"]
    if action == "like":
        event = _to(target, "post.liked", who, post_id(target), f"{name} liked your post", like=True)
        event["cancel_key"] = like_key(actor, target)
        return Planned(event)
    if action == "unlike":
        return Planned(None, cancel=like_key(actor, target))
    if action == "comment":
        said = text or "Nice!"
        return Planned(_to(target, "post.commented", who, post_id(target), f'{name} commented: "{said}"'))
    if action == "follow":
        event = _to(target, "user.followed", who, f"user:{actor}", f"{name} started following you")
        return Planned(event, subscribe=(followers_topic(target), actor))
    said = text or "Hello, world"
    return Planned(
        {
            "type": "post.created",
            "actor": who,
            "topic": followers_topic(actor),
            "object": {"id": f"post:{actor}:new"},
            "data": {"text": f"{name} posted: {said}"},
        }
    )


def _to(
    target: str, kind: str, who: dict[str, str], obj: str, text: str, *, like: bool = False
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "actor": who,
        "recipients": [target],
        "object": {"id": obj},
        "data": {"text": text},
    }
    if like:
        # Likes of one post share a group: the fan-out may fold them into "Bob and 2 others liked your post".
        event["group_key"] = f"{obj}:like"
    return event
