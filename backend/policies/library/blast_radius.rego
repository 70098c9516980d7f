# Blast radius limit (post_plan).
#
# Denies a plan that touches more than `max_changes` resources, and warns from
# `warn_changes` on. Replacements count twice: they destroy and create.
package crucible

import rego.v1

max_changes := 50

warn_changes := 25

weight(actions) := 2 if {
	"create" in actions
	"delete" in actions
} else := 1 if {
	some a in actions
	a in {"create", "update", "delete"}
} else := 0

changes := sum([weight(rc.change.actions) | some rc in input.resource_changes])

deny contains msg if {
	changes > max_changes
	msg := sprintf("this plan changes %d resources (replacements count twice); the limit is %d: split the change", [changes, max_changes])
}

warn contains msg if {
	changes > warn_changes
	changes <= max_changes
	msg := sprintf("this plan changes %d resources; more than %d is a large blast radius", [changes, warn_changes])
}
