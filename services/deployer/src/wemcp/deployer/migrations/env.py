from wemcp.common.migrations import run_env
from wemcp.deployer.models import Base

run_env(Base.metadata)
