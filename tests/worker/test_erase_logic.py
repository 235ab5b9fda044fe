"""The erase job's pure logic: which versions an erased session taints, and where a rebuild starts."""

from __future__ import annotations

from sleepd.registry import AdapterMeta
from worker.erase import clean_ancestor, tainted_versions


def meta(version: str, parent: str | None, sessions: list[str]) -> AdapterMeta:
    return AdapterMeta(version=version, parent=parent, base_model="x", rank=4, target_modules=["q_proj"],
                       lineage={"sessions": sessions}, content_hash="0", tenant="acme")  # fmt: skip


CHAIN = [meta("v0001", None, ["a"]), meta("v0002", "v0001", ["b"]), meta("v0003", "v0002", ["c"]),
         meta("v0004", "v0001", ["d"])]  # fmt: skip


def test_a_version_that_learned_an_erased_session_taints_its_descendants_only() -> None:
    assert tainted_versions(CHAIN, {"b"}) == {"v0002", "v0003"}
    assert tainted_versions(CHAIN, {"a"}) == {"v0001", "v0002", "v0003", "v0004"}
    assert tainted_versions(CHAIN, {"zzz"}) == set()
    assert tainted_versions(CHAIN, set(), everything=True) == {"v0001", "v0002", "v0003", "v0004"}


def test_the_rebuild_starts_from_the_nearest_clean_ancestor() -> None:
    by_version = {m.version: m for m in CHAIN}
    assert clean_ancestor("v0003", by_version, {"v0002", "v0003"}) == ("v0001", ["v0003", "v0002"])
    assert clean_ancestor("v0003", by_version, {"v0001", "v0002", "v0003"}) == ("base", ["v0003", "v0002", "v0001"])
    assert clean_ancestor("v0004", by_version, {"v0002", "v0003"}) == ("v0004", [])
