"""The Ansible adapter with the real ansible-playbook (ansible-core is a regular dependency)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from runner.tools import ansible
from runner.tools.base import ToolContext

PLAYBOOK = """
- hosts: all
  gather_facts: false
  tasks:
    - name: write the managed file
      ansible.builtin.copy:
        dest: "{{ target }}"
        content: "managed by crucible\\n"
    - name: say hello
      ansible.builtin.debug:
        msg: hello
"""

RECORDED = [
    "\x1b[0;32mok: [web1]\x1b[0m",
    "",
    "PLAY RECAP " + "*" * 69,
    "\x1b[0;33mweb1\x1b[0m                       : \x1b[0;32mok=3   \x1b[0m \x1b[0;33mchanged=2   \x1b[0m "
    "unreachable=0    failed=0    skipped=1    rescued=0    ignored=0",
    "\x1b[0;31mweb2\x1b[0m                       : ok=1    changed=0    \x1b[0;31munreachable=1   \x1b[0m "
    "failed=0    skipped=0    rescued=0    ignored=0",
]


def test_recap_is_summed_over_hosts_and_colours_are_ignored():
    summary = ansible.parse_recap(RECORDED)
    assert summary == {
        "add": 0, "change": 2, "destroy": 0, "ok": 4, "unreachable": 1, "failed": 0,
        "skipped": 1, "rescued": 0, "ignored": 0,
    }  # fmt: skip


def test_no_recap_is_an_error():
    with pytest.raises(ansible.ToolError, match="no PLAY RECAP"):
        ansible.parse_recap(["ERROR! the playbook: site.yml could not be found"])


def test_playbook_and_inventory_detection(tmp_path):
    with pytest.raises(ansible.ToolError, match=r"site\.yml or playbook\.yml not found"):
        ansible.find_playbook(tmp_path)
    (tmp_path / "playbook.yml").write_text("[]")
    assert ansible.find_playbook(tmp_path) == "playbook.yml"
    (tmp_path / "site.yml").write_text("[]")
    assert ansible.find_playbook(tmp_path) == "site.yml"
    with pytest.raises(ansible.ToolError, match=r"deploy\.yml not found"):
        ansible.find_playbook(tmp_path, "deploy.yml")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = ansible.inventory_args(tmp_path, scratch)
    assert args[0] == "-i" and "ansible_connection: local" in Path(args[1]).read_text()
    (tmp_path / "hosts").write_text("localhost\n")
    assert ansible.inventory_args(tmp_path, scratch) == ["-i", "hosts"]


def test_destroy_is_refused_with_a_reason(tmp_path):
    (tmp_path / "site.yml").write_text("[]")
    ctx = ToolContext(project_dir=tmp_path, scratch=tmp_path, run_type="destroy", tool="ansible")
    with pytest.raises(ansible.ToolError, match="no destroy"):
        ansible.AnsibleAdapter().plan_steps(ctx)


def test_missing_binary_names_it(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ansible.ToolError, match="ansible-playbook not found on PATH"):
        ansible.find_binary()


def test_plan_changes_nothing_and_apply_does(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(os.sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "repo"
    project.mkdir()
    (project / "site.yml").write_text(PLAYBOOK)
    target = tmp_path / "managed.txt"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ctx = ToolContext(project_dir=project, scratch=scratch, run_type="tracked", tool="ansible")
    adapter = ansible.AnsibleAdapter()
    [plan_step] = adapter.plan_steps(ctx)
    [apply_step] = adapter.apply_steps(ctx, None)
    env = {**os.environ, **plan_step.env, "ANSIBLE_LOCAL_TEMP": str(scratch), "HOME": str(tmp_path)}
    extra = ["-e", f"target={target}"]

    plan = subprocess.run(
        [*plan_step.argv, *extra], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    outcome = adapter.read_plan(ctx, plan.stdout.splitlines())
    assert outcome.summary["change"] == 1 and outcome.has_changes
    assert not target.exists()  # check mode changed nothing

    apply = subprocess.run(
        [*apply_step.argv, *extra], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert target.read_text() == "managed by crucible\n"
    again = subprocess.run(
        [*plan_step.argv, *extra], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    assert ansible.parse_recap(again.stdout.splitlines())["change"] == 0  # converged
