"""A stand-in gateway process for the cross-process exactness test (not a test module).

usage: python decide_worker.py REDIS_URL USER_ID SERVER LIMIT CALLERS
Prints "ready", waits for "go" on stdin, runs CALLERS concurrent decisions, prints one JSON line:
the ``remaining`` of every allowed decision and the number refused.
"""

import asyncio
import json
import sys

from redis.asyncio import Redis

from wemcp.quota.client import QuotaClient
from wemcp.quota.policy import StaticPolicies


async def main() -> None:
    url, user, server = sys.argv[1:4]
    limit, callers = int(sys.argv[4]), int(sys.argv[5])
    redis = Redis.from_url(url, max_connections=callers)
    client = QuotaClient(redis, StaticPolicies(server_daily=limit), timeout=10.0)
    await redis.ping()
    # open the pool's connections up front so the callers start together
    await asyncio.gather(*(redis.ping() for _ in range(callers)))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    decisions = await asyncio.gather(*(client.decide(user, "server", server) for _ in range(callers)))
    print(json.dumps({"remaining": [d.remaining for d in decisions if d.allowed],
                      "refused": sum(1 for d in decisions if not d.allowed),
                      "reasons": sorted({d.reason for d in decisions})}), flush=True)
    await redis.aclose()


asyncio.run(main())
