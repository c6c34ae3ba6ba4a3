from wemcp.common.migrations import run_env
from wemcp.auth.models import Base

run_env(Base.metadata)
