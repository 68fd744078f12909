"""``midwatch rehearse`` from the shell: a bundle rehearsed with ``--gate`` decides the exit code, and what
may not be rehearsed is refused before anything starts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from midwatch.cli import main
from runner.sandbox_upstream import FaultyUpstream
from tests.conftest import Harness
from tests.rehearsal.conftest import FAST_PLATFORM, TEST_PROFILE, put_real_secret, spec, tools


def _bundle(tmp_path: Path, production: FaultyUpstream, *, hardened: bool) -> Path:
    bundle = {"spec": yaml.safe_load(spec(production, hardened=hardened)),
              "tools": tools(production, hardened=hardened),
              "items": [{"order_id": f"ORD-{i}"} for i in range(3)]}
    path = tmp_path / "refunds.bundle.yaml"
    path.write_text(yaml.safe_dump(bundle))
    return path


def test_a_fragile_bundle_fails_the_gate_and_prints_its_report_as_json(
        make_harness: Callable[..., Harness], upstream: FaultyUpstream, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    h = make_harness(worker=None, extra=FAST_PLATFORM)
    tenant = h.onboard()
    put_real_secret(h, tenant)  # the bundle's lookup authenticates with the tenant's crm_token (faked in the space)
    profile = tmp_path / "night.yaml"
    profile.write_text(yaml.safe_dump(TEST_PROFILE))
    code = main(["rehearse", str(_bundle(tmp_path, upstream, hardened=False)), "--tenant", tenant.name,
                 "--profile", str(profile), "--items", "6", "--repeat", "2", "--seed", "11", "--gate",
                 "--format", "json"])
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert code == 1 and report["verdict"]["result"] == "fail"
    assert report["source"] == "file" and report["profile"]["name"] == "custom:test-night"
    assert "kill -9" in out.err  # progress goes to stderr, the report alone to stdout
    assert upstream.requests == []
    stored = h.client.get("/v1/rehearsals", headers=tenant.headers).json()["data"]
    assert [(r["source"], r["verdict"], r["agent_version"]) for r in stored] == [("file", "fail", None)]


def test_what_cannot_be_rehearsed_is_refused_before_anything_starts(
        make_harness: Callable[..., Harness], capsys: pytest.CaptureFixture[str]) -> None:
    h = make_harness(worker=None)
    tenant = h.onboard()
    assert main(["rehearse", "nobody", "--tenant", tenant.name]) == 2
    assert "agent 'nobody' not found" in capsys.readouterr().err
    h.put_agent(tenant, "apiVersion: midwatch/v1\nname: lookup\nscope: {tools: [crm.lookup]}\n"
                        "steps: [{id: a, tool: crm.lookup}]\n")
    assert main(["rehearse", "lookup", "--tenant", tenant.name]) == 2
    assert "tool 'crm.lookup' (PUT /v1/tools/crm.lookup)" in capsys.readouterr().err
    # a database restart only against a database the operator names as disposable, never on SQLite
    assert main(["rehearse", "lookup", "--tenant", tenant.name, "--restart-database", "true"]) == 2
    assert "tool 'crm.lookup'" in capsys.readouterr().err  # refused first: nothing to rehearse
    h.put_agent(tenant, "apiVersion: midwatch/v1\nname: echo\nscope: {tools: [sandbox.echo]}\n"
                        "steps: [{id: a, tool: sandbox.echo}]\n")
    assert main(["rehearse", "echo", "--tenant", tenant.name, "--restart-database", "true"]) == 2
    assert "the embedded SQLite database has no server to restart" in capsys.readouterr().err
    assert main(["rehearse", "nobody.yaml"]) == 2
    assert "no such file" in capsys.readouterr().err
