"""The container healthcheck: exit 0 when this replica's /ready answers 200, else 1.

/ready is 200 once the model is loaded and the registry answers, and 503 while the replica
drains after SIGTERM. Standard library only: the images carry no curl.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    url = f"http://127.0.0.1:{os.environ.get('PROMPTSWAP_PORT') or '8000'}/ready"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
