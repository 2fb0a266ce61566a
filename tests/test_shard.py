"""The shard split (sync/shard.py): parsing --shard, balance, stability, and the CLI's usage errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcrsync.cli import main
from gcrsync.engine.plan import SourceSpec
from gcrsync.errors import ConfigError
from gcrsync.sync.shard import Shard, assign, balance, preferred, split_listings
from gcrsync.types import DiscoveredRepo, TagInfo


def skewed(repos: int, seed: int = 1) -> dict[str, int]:
    """Tag counts like real namespaces: most repositories small, a few huge (Pareto)."""
    rng = random.Random(seed)
    return {f"gcr.io/ns\0app-{i:04d}": max(1, int(rng.paretovariate(1.3) * 3)) for i in range(repos)}


def loads(weights: dict[str, int], owners: dict[str, int], n: int) -> list[int]:
    out = [0] * n
    for key, shard in owners.items():
        out[shard] += weights[key]
    return out


@pytest.mark.parametrize(("text", "expected"), [("0/1", Shard(0, 1)), ("3/4", Shard(3, 4)), (" 1/2 ", Shard(1, 2))])
def test_parse(text: str, expected: Shard) -> None:
    assert Shard.parse(text, {}) == expected


@pytest.mark.parametrize("text", ["4/4", "1/0", "-1/3", "1", "a/b", "1/2/3", "0/1001", ""])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        Shard.parse(text, {})


def test_auto_from_the_environment() -> None:
    assert Shard.parse("auto", {"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETIONS": "5"}) == Shard(2, 5)
    assert Shard.parse("auto", {"CI_NODE_INDEX": "1", "CI_NODE_TOTAL": "3"}) == Shard(0, 3)  # GitLab counts from 1
    assert Shard.parse("auto", {"GCRSYNC_SHARD_INDEX": "0", "GCRSYNC_SHARD_COUNT": "2"}) == Shard(0, 2)
    with pytest.raises(ConfigError, match="JOB_COMPLETIONS"):  # Kubernetes sets only the index: say what is missing
        Shard.parse("auto", {"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(ConfigError, match="none of"):
        Shard.parse("auto", {})
    with pytest.raises(ConfigError, match="between 0 and 2"):
        Shard.parse("auto", {"CI_NODE_INDEX": "4", "CI_NODE_TOTAL": "3"})


@pytest.mark.parametrize("args", [["--shard", "3/3"], ["--shard", "auto"], ["--shard", "x"]])
def test_sync_shard_usage_error_is_one_line(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["sync", "localhost:1/ns", "--dest", "localhost:2/m", *args],
                                env={"JOB_COMPLETION_INDEX": "", "CI_NODE_INDEX": ""})
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--shard" in errors[0] and "Traceback" not in result.output


def test_plan_shards_usage_error() -> None:
    result = CliRunner().invoke(main, ["plan", "localhost:1/ns", "--dest", "localhost:2/m", "--shards", "0"])
    assert result.exit_code == 2 and result.output.startswith("error: --shards 0"), result.output


@pytest.mark.parametrize("n", [2, 4, 8])
def test_every_repository_in_exactly_one_shard_and_balanced(n: int) -> None:
    weights = skewed(300)
    owners = assign(weights, n)
    assert set(owners) == set(weights) and set(owners.values()) <= set(range(n))
    assert balance(loads(weights, owners, n)) <= 1.11  # the cap: 10% over the mean
    # Deterministic: the order of the listing does not matter.
    assert assign(dict(reversed(list(weights.items()))), n) == owners


def test_a_repository_heavier_than_the_mean_sets_the_cap() -> None:
    weights = {"a": 100, **{f"s{i}": 10 for i in range(20)}}  # mean 150 over 2 shards; cap 165
    owners = assign(weights, 2)
    assert max(loads(weights, owners, 2)) <= 165


def test_a_tag_more_or_less_moves_few_other_repositories() -> None:
    weights = skewed(300)
    before = assign(weights, 8)
    total = sum(weights.values())
    for key in list(weights)[:40]:
        changed = {**weights, key: weights[key] + 1}
        after = assign(changed, 8)
        assert sum(weights[k] for k in weights if k != key and after[k] != before[k]) <= 0.02 * total


@pytest.mark.parametrize("n", [4, 8])
def test_stable_when_one_repository_appears_or_disappears(n: int) -> None:
    """Adding or removing one repository moves on average well under 1% of the other tags, and never a large
    part (consistent hashing), where a naive split (sorted names dealt round robin) moves most of them."""
    moved: list[float] = []
    for dataset in range(3):
        weights = skewed(300, dataset)
        before = assign(weights, n)
        total = sum(weights.values())
        rng = random.Random(dataset)
        for trial in range(30):
            grown = dict(weights)
            grown[f"gcr.io/ns\0new-{trial}"] = rng.choice(list(weights.values()))
            after = assign(grown, n)
            moved.append(sum(weights[k] for k in weights if after[k] != before[k]) / total)
            shrunk = dict(weights)
            del shrunk[rng.choice(list(weights))]
            after = assign(shrunk, n)
            moved.append(sum(weights[k] for k in shrunk if after[k] != before[k]) / total)
    assert sum(moved) / len(moved) <= 0.01 and max(moved) <= 0.15
    weights = skewed(300)
    naive = {k: i % n for i, k in enumerate(sorted(weights))}
    grown = dict(weights)
    grown["gcr.io/ns\0app-0000a"] = 1  # sorts near the front: every later name shifts
    naive_after = {k: i % n for i, k in enumerate(sorted(grown))}
    assert sum(weights[k] for k in weights if naive_after[k] != naive[k]) > 0.5 * total


def test_split_by_bytes_when_every_tag_has_a_size_and_unlisted_repos_have_one_owner() -> None:
    spec = SourceSpec(registry="gcr.io", namespace="ns", target_prefix="docker.io/m")
    big = DiscoveredRepo("ns/big", {"v1": TagInfo(size=10_000)})
    smalls = [DiscoveredRepo(f"ns/s{i}", {f"v{j}": TagInfo(size=100) for j in range(5)}) for i in range(4)]
    split = split_listings([(spec, [big, *smalls])], 2)
    assert split.by_bytes
    owner_of_big = split.owner(spec, "big")
    assert all(split.owner(spec, f"s{i}") != owner_of_big for i in range(4))  # 1 tag, but 10,000 bytes
    assert split.loads("tags") == ([1, 20] if owner_of_big == 0 else [20, 1])
    # One size missing: weighed by tag count instead.
    smalls[0].tags["v9"] = TagInfo()
    assert not split_listings([(spec, [big, *smalls])], 2).by_bytes
    # A repository only the ledger knows (vanished upstream) belongs to its preferred shard, in every shard's view.
    assert split.owner(spec, "gone") == preferred("gcr.io/ns\0gone", 2)


def test_each_namespace_is_split_on_its_own() -> None:
    """A namespace whose listing failed in one shard (absent from its split) moves nothing of the others."""
    one = SourceSpec(registry="gcr.io", namespace="one", target_prefix="docker.io/m")
    two = SourceSpec(registry="gcr.io", namespace="two", target_prefix="docker.io/m")
    listing = [DiscoveredRepo(f"two/r{i}", {f"v{j}": TagInfo() for j in range(i % 7 + 1)}) for i in range(40)]
    other = [DiscoveredRepo(f"one/r{i}", {f"v{j}": TagInfo() for j in range(30)}) for i in range(5)]
    both, alone = split_listings([(one, other), (two, listing)], 4), split_listings([(two, listing)], 4)
    assert [both.owner(two, f"r{i}") for i in range(40)] == [alone.owner(two, f"r{i}") for i in range(40)]


def test_merge_reports_refuses_what_is_not_a_report_in_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text('{"images": []}')
    result = CliRunner().invoke(main, ["merge-reports", str(junk)])
    assert result.exit_code == 2 and result.output.startswith(f"error: {junk}: not a gcrsync sync --report")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"shard": "0/2", "pulled_blobs": {}}))
    b.write_text(json.dumps({"shard": "1/3", "pulled_blobs": {}}))
    result = CliRunner().invoke(main, ["merge-reports", str(a), str(b)])
    assert result.exit_code == 2 and "not of the same split" in result.output, result.output
