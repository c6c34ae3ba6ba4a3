"""WeMcp ratelimit service: quota policies, atomic daily counters and usage."""
