"""Container healthcheck: GET http://127.0.0.1:<port>/healthz; exit 0 on HTTP 200, 1 otherwise.

Slim images have no curl, so this uses the standard library only. The port is the service's
``WEMCP_<SERVICE>_PORT`` (8000 by default, as the entrypoint sets it)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    service = os.environ.get("SERVICE", "")
    port = os.environ.get(f"WEMCP_{service.upper()}_PORT", "8000") if service else "8000"
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))) as resp:
            ok = resp.status == 200
    except urllib.error.HTTPError as exc:
        print(f"{url}: HTTP {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
