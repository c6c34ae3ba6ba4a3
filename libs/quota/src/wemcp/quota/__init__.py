"""WeMcp quota library: the decision the gateway and the agents service take in-process
(:mod:`wemcp.quota.client`), the live policies it reads (:mod:`wemcp.quota.policy`), the settings both
build it from (:mod:`wemcp.quota.config`) and the signed agent-run context
(:mod:`wemcp.quota.runcontext`). The ratelimit service owns the stored policies and usage and depends
on this library like its other users. Nothing here connects at import time."""
