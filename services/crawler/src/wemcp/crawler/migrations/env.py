from wemcp.common.migrations import run_env
from wemcp.crawler.models import Base

run_env(Base.metadata)
