"""WeMcp crawler service: discovery crawls, health probes and request logs."""
