"""The JSON report written image by image is the same text `json.dumps` makes of the whole."""

from __future__ import annotations

import io
import json

from gcrsync.engine.plan import Plan, PlanItem, SourceSpec
from gcrsync.sync.report import SyncReport


def test_streamed_report_equals_the_whole_dumped_at_once() -> None:
    spec = SourceSpec("r.example", "ns", "t.example/m")
    items = [PlanItem(spec, f"ns/app{i}", f"app{i}", "v1", f"t.example/m/app{i}", source_digest="sha256:" + "a" * 64)
             for i in range(3)]
    items[1].state, items[1].error = "error", "HEAD failed: \u2603 \"quoted\"\nsecond line"
    for report in (SyncReport(plan=Plan(items=items), namespaces=[]), SyncReport(plan=Plan(), namespaces=[])):
        out = io.StringIO()
        report.write_json(out)
        assert out.getvalue() == json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
        assert json.loads(out.getvalue())["totals"] == report.totals()
