from wemcp.common.migrations import run_env
from wemcp.agents.models import Base

run_env(Base.metadata)
