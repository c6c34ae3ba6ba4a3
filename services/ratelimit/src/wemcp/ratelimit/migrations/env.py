from wemcp.common.migrations import run_env
from wemcp.ratelimit.models import Base

run_env(Base.metadata)
