"""64 clients on loopback mixing generate, stream, classify and uploads: no error but explicit 429s,
server memory flat after warm-up, latency percentiles reported.

CI: 60 s. Full run (PROMPTSWAP_RELIABILITY=full): 10 minutes. Figures go to docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from tests.api.conftest import Site
from tests.reliability.conftest import FULL_RUN, serve, upload
from tests.reliability.load import run_load

CLIENTS = 64
SECONDS = 600.0 if FULL_RUN else 60.0
WARM_UP = SECONDS / 4
MAX_RSS_GROWTH = 0.05
# Every upload adds a version whose runtime form the device cache may keep, up to its budget: memory
# grows by design until then. A 1 MiB budget is reached during warm-up (and evicts forms in use, so
# reloads from the store run under load too); growth after that would be a leak.
DEVICE_CACHE_MB = 1


def test_bounded_load(site: Site, tmp_path: Path) -> None:
    uploads = [
        {
            name: (site.artifacts[task] / name).read_bytes()
            for name in ("adapter_config.json", "adapter_model.safetensors")
        }
        for task in ("pt", "prefix", "lstm")
    ]
    store = (tmp_path / "prompts").as_uri()
    extra = ("--device-cache-mb", str(DEVICE_CACHE_MB), "--trust-forwarded-for")  # clients say who they are
    with serve(site.model_dir, store, tmp_path, *extra) as live:
        for task in ("pt", "prefix", "mpt"):
            assert upload(live.url, task, site.artifacts[task]).status_code == 201
        report = asyncio.run(run_load(live.url, live.process.pid, CLIENTS, SECONDS, uploads))
    summary = report.summary(WARM_UP)
    print(f"load: {json.dumps(summary)}")
    destination = os.environ.get("PROMPTSWAP_LOAD_REPORT")
    if destination:
        Path(destination).write_text(json.dumps(summary, indent=2))
    assert report.errors == [], report.errors[:5]
    assert set(report.requests) == {"generate", "stream", "classify", "upload"}
    assert report.rss_growth(WARM_UP) < MAX_RSS_GROWTH, summary
    assert "Traceback" not in live.log.read_text()
