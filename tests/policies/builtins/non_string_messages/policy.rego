package crucible

import rego.v1

# Objects as messages (Spacelift style): Crucible shows their JSON text.
deny contains {"resource": rc.address, "actions": rc.change.actions} if {
	some rc in input.resource_changes
	"delete" in rc.change.actions
}

warn contains 6.0 / 2

warn contains [1, "a"]

warn contains true
