#!/usr/bin/env python3
"""Summarise a rollout from the loopback LiveKit server's own record (stdlib only).

Usage: rollout_report.py LOOPBACK_HTTP_URL START_TS END_TS JOB_ID...
Prints one JSON object: the dispatched jobs by final status, jobs assigned while their worker was
WS_FULL, the lowest number of available workers (connected, not WS_FULL) during [START_TS, END_TS],
and the calls that were running on a worker when its drain started (the calls a drain waited for).
"""

import json
import sys
import urllib.request
from collections import Counter


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as r:  # noqa: S310 - lab URL
        return json.loads(r.read())


def main():
    base, start, end, ids = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), set(sys.argv[4:])
    jobs = [j for j in get(base, "/_loopback/jobs") if j["id"] in ids]
    events = get(base, "/_loopback/events")
    # the fleet's workers (automatic dispatch, agent_name ""), not the role's one-off registrations
    # that prove a configuration (check-config --connect: livekit-voice-worker-config-check)
    minimum = get(base, f"/_loopback/min_available?start_ts={start}&end_ts={end}&agent_name=")
    # first moment each worker reported WS_FULL/draining inside the window = its drain start
    drain_ts = {}
    for ev in events:
        if (
            ev["kind"] == "worker_status"
            and (ev.get("status") == "WS_FULL" or ev.get("draining"))
            and start <= ev["ts"] <= end
            and ev["worker_id"] not in drain_ts
        ):
            drain_ts[ev["worker_id"]] = ev["ts"]
    spanning = [
        j["id"]
        for j in jobs
        if j["worker_id"] in drain_ts
        and j["assigned_ts"] is not None
        and j["assigned_ts"] < drain_ts[j["worker_id"]]
        and (j["ended_ts"] is None or j["ended_ts"] > drain_ts[j["worker_id"]])
    ]
    registered = sorted(
        {
            ev["worker_id"]
            for ev in events
            if ev["kind"] == "worker_registered"
            and not ev.get("agent_name")
            and start <= ev["ts"] <= end
        }
    )
    print(
        json.dumps(
            {
                "dispatched": len(jobs),
                "by_status": dict(Counter(j["status"] for j in jobs)),
                "succeeded": sum(j["status"] == "success" for j in jobs),
                "not_succeeded": sorted(
                    ":".join(
                        [
                            j["id"],
                            j["status"],
                            str(j["worker_id"]),
                            j["unassigned_reason"] or j["error"],
                        ]
                    )
                    for j in jobs
                    if j["status"] != "success"
                ),
                "assigned_while_worker_full": sorted(
                    j["id"] for j in jobs if j["assigned_while_worker_full"]
                ),
                "min_available": minimum["min_available"],
                "drained_workers": sorted(drain_ts),
                "calls_spanning_a_drain": len(spanning),
                "workers_registered_in_window": registered,
                # first drain -> last registration: the part of the rollout that takes capacity
                "drain_window_s": round(
                    max(
                        (
                            ev["ts"]
                            for ev in events
                            if ev["kind"] == "worker_registered"
                            and not ev.get("agent_name")
                            and start <= ev["ts"] <= end
                        ),
                        default=0,
                    )
                    - min(drain_ts.values(), default=0),
                    1,
                )
                if drain_ts
                else 0,
                "longest_call_s": round(
                    max(
                        (
                            j["ended_ts"] - j["assigned_ts"]
                            for j in jobs
                            if j["ended_ts"] and j["assigned_ts"]
                        ),
                        default=0,
                    ),
                    1,
                ),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
