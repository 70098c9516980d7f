package crucible

import rego.v1

warn contains msg if {
	some rc in input.resource_changes
	some action in rc.change.actions
	action == "create"
	tags := object.get(rc.change.after, "tags", {})
	msg := sprintf("%s is owned by %s", [rc.address, tags.owner])
}
