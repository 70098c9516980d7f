"""Tool adapters: how each IaC tool is planned and applied (see base.py for the contract)."""

from __future__ import annotations

from runner.tools.base import ToolAdapter, ToolError

TOOLS = ("opentofu", "terraform", "terragrunt", "pulumi", "ansible")


def adapter_for(tool: str) -> ToolAdapter:
    if tool in ("opentofu", "terraform"):
        from runner.tools.opentofu import OpenTofuAdapter

        return OpenTofuAdapter(tool)
    if tool == "terragrunt":
        from runner.tools.terragrunt import TerragruntAdapter

        return TerragruntAdapter()
    if tool == "pulumi":
        from runner.tools.pulumi import PulumiAdapter

        return PulumiAdapter()
    if tool == "ansible":
        from runner.tools.ansible import AnsibleAdapter

        return AnsibleAdapter()
    raise ToolError(f"the {tool} adapter is not available in this version of Crucible")
