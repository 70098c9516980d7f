package crucible

import rego.v1

creates := [rc.address | some rc in input.resource_changes; "create" in rc.change.actions]

types := {rc.type | some rc in input.resource_changes}

actions_by_address := {rc.address: rc.change.actions | some rc in input.resource_changes}

replacements := count([a | actions := actions_by_address[a]; count(actions) == 2])

module_of(rc) := rc.module_address if rc.module_address
else := "root"

changed := [rc | some rc in input.resource_changes; not "no-op" in rc.change.actions; not "read" in rc.change.actions]

per_module := {m: n |
	some rc in changed
	m := module_of(rc)
	n := count([x | some x in changed; module_of(x) == m])
}

warn contains sprintf("%d resources will be created: %s", [count(creates), concat(", ", sort(creates))])

warn contains sprintf("resource types: %s", [concat(", ", sort(types))])

warn contains sprintf("terraform_data.web: %s", [concat("+", actions_by_address["terraform_data.web"])])

warn contains sprintf("%d replacements", [replacements])

warn contains msg if {
	pairs := [s | n := per_module[m]; s := sprintf("%s=%d", [m, n])]
	msg := sprintf("changed per module: %s", [concat(", ", sort(pairs))])
}
