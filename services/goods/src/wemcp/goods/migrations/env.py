from wemcp.common.migrations import run_env
from wemcp.goods.models import Base

run_env(Base.metadata)
