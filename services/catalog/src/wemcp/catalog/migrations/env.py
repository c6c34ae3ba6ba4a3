from wemcp.catalog.models import Base
from wemcp.common.migrations import run_env

run_env(Base.metadata)
