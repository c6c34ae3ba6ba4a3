from wemcp.common.migrations import run_env
from wemcp.catalog.models import Base

run_env(Base.metadata)
