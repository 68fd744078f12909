"""Chain-head seals (tenants.audit.seals) on their own: a seal fits exactly one (kind, chain, seq, head) under
one master key, and a chain extended from a head whose seal does not hold carries the broken marker."""

from __future__ import annotations

from tenants.audit.seals import BROKEN, broken_marker, seal, seal_problem
from tenants.kit.master_key import MasterKey

KEY, OTHER = MasterKey.generate(), MasterKey.generate()
HEAD = "a" * 64


def test_a_seal_fits_one_head_of_one_chain_under_one_key() -> None:
    stored = seal("run", "t/r", 7, HEAD, master=KEY)
    assert stored.startswith(KEY.key_id + ":")
    assert seal_problem("run", "t/r", 7, HEAD, stored, master=KEY) is None
    for kind, chain, seq, head in (("audit", "t/r", 7, HEAD), ("run", "t/other", 7, HEAD), ("run", "t/r", 6, HEAD),
                                   ("run", "t/r", 7, "b" * 64)):
        assert "does not match" in str(seal_problem(kind, chain, seq, head, stored, master=KEY))  # type: ignore[arg-type]
    assert KEY.key_id in str(seal_problem("run", "t/r", 7, HEAD, stored, master=OTHER))
    assert "not sealed" in str(seal_problem("run", "t/r", 7, HEAD, None, master=KEY))
    assert "an unknown key" in str(seal_problem("run", "t/r", 7, HEAD, "<script>:00", master=KEY))


def test_extending_from_a_bad_head_carries_the_broken_marker_forward() -> None:
    good = seal("audit", "platform", 3, HEAD, master=KEY)
    assert broken_marker("audit", "platform", (3, HEAD, good), master=KEY) is None
    assert broken_marker("audit", "platform", (2, HEAD, good), master=KEY) == f"{BROKEN}2"  # a moved head
    assert broken_marker("audit", "platform", (3, HEAD, None), master=KEY) == f"{BROKEN}3"
    assert broken_marker("audit", "platform", (9, HEAD, f"{BROKEN}3"), master=KEY) == f"{BROKEN}3"
    assert "at seq 3" in str(seal_problem("audit", "platform", 9, HEAD, f"{BROKEN}3", master=KEY))
