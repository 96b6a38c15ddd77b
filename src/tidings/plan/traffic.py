"""Workload -> traffic: events, inbox rows, connections and deliveries per second, on average and at the peak.

Definitions (each is one line below, so the tests can derive them by hand):

- direct events/day = daily users x events per user; their rows = events x mean recipients;
- posts/day = daily users x posts per user; their rows = posts x mean followers;
- a post to more followers than one chunk (``fanout_chunk``) becomes chunk jobs on the log: ceil(f / chunk)
  chunk jobs plus ceil(chunks / ``fanout_split``) split jobs (``tidings.planner``), which is log traffic too;
- average rate = per day / 86,400; peak = average x ``peak_to_average``;
- connections at the peak = daily users x peak concurrent share x connections per user;
- live deliveries = rows x the share of recipients connected (the peak concurrent share) x connections per
  user, plus one heartbeat frame per connection per ``heartbeat_interval``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tidings.plan.workload import Workload

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Traffic:
    events_per_day: float  # direct events and posts: what producers append
    posts_per_day: float
    mean_recipients: float
    mean_followers: float
    direct_rows_per_day: float
    topic_rows_per_day: float
    celebrity_rows_share: float  # of all rows: those of posts split into chunk jobs
    largest_fanout: int
    chunk_jobs_per_day: float
    rows_per_day: float
    peak_events_per_second: float
    peak_appends_per_second: float  # events plus chunk and split jobs
    peak_rows_per_second: float
    average_rows_per_second: float
    peak_connections: float
    peak_deliveries_per_second: float  # notification frames
    peak_heartbeats_per_second: float
    peak_user_requests_per_second: float
    peak_reconnects_per_second: float
    offline_per_day: dict[str, float]


def jobs_for(followers: int, chunk: int, split: int) -> int:
    """Chunk and split jobs one post to ``followers`` puts on the log (0 when one chunk holds them all)."""
    if followers <= chunk:
        return 0
    chunks = math.ceil(followers / chunk)
    return chunks + math.ceil(chunks / split)


def traffic(w: Workload) -> Traffic:
    direct = w.daily_users * w.events_per_user_per_day
    posts = w.daily_users * w.posts_per_user_per_day
    mean_recipients = sum(count * share for count, share in w.recipients.items())
    mean_followers = sum(count * share for count, share in w.followers.items())
    direct_rows = direct * mean_recipients
    topic_rows = posts * mean_followers
    rows = direct_rows + topic_rows
    celebrity_rows = posts * sum(f * s for f, s in w.followers.items() if f > w.fanout_chunk)
    jobs = posts * sum(s * jobs_for(f, w.fanout_chunk, w.fanout_split) for f, s in w.followers.items())
    peak = w.peak_to_average / DAY
    connections = w.daily_users * w.peak_concurrent_share * w.connections_per_user
    live = w.peak_concurrent_share * w.connections_per_user
    return Traffic(
        events_per_day=direct + posts,
        posts_per_day=posts,
        mean_recipients=mean_recipients,
        mean_followers=mean_followers,
        direct_rows_per_day=direct_rows,
        topic_rows_per_day=topic_rows,
        celebrity_rows_share=celebrity_rows / rows if rows else 0.0,
        largest_fanout=max((f for f, s in w.followers.items() if s > 0), default=0),
        chunk_jobs_per_day=jobs,
        rows_per_day=rows,
        peak_events_per_second=(direct + posts) * peak,
        peak_appends_per_second=(direct + posts + jobs) * peak,
        peak_rows_per_second=rows * peak,
        average_rows_per_second=rows / DAY,
        peak_connections=connections,
        peak_deliveries_per_second=rows * peak * live,
        peak_heartbeats_per_second=connections / w.heartbeat_interval,
        peak_user_requests_per_second=w.daily_users * w.user_requests_per_user_per_day * peak,
        peak_reconnects_per_second=connections * w.reconnects_per_connection_per_hour / 3600.0,
        offline_per_day={channel: rows * share for channel, share in w.channels.items()},
    )
