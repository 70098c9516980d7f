# Allowed instance types (post_plan).
#
# EC2 instances and launch templates may only use the approved instance families; older
# generations are allowed but warned about. (Families are compared as strings, which is much
# cheaper than a glob per pattern on large plans.) A resource without an instance type (null,
# as launch templates often leave it) or with one known only at apply (`after_unknown`) is
# not judged: there is nothing to compare yet.
package crucible

import rego.v1

allowed_families := ["t3", "t3a", "t4g", "m6i", "m7g", "c7g"]

deprecated_families := {"t2", "m4"}

family(instance_type) := split(instance_type, ".")[0]

instance_types contains [rc.address, t] if {
	some rc in input.resource_changes
	rc.type in {"aws_instance", "aws_launch_template"}
	some action in rc.change.actions
	action in {"create", "update"}
	not rc.change.after_unknown.instance_type # known only at apply
	t := rc.change.after.instance_type
	is_string(t) # null: not set
}

deny contains msg if {
	some [address, t] in instance_types
	not family(t) in allowed_families
	not family(t) in deprecated_families
	msg := sprintf("%s uses instance type %s, which is not allowed (allowed families: %s)", [address, t, concat(", ", allowed_families)])
}

warn contains msg if {
	some [address, t] in instance_types
	family(t) in deprecated_families
	msg := sprintf("%s uses the previous-generation instance type %s: move to a current family", [address, t])
}
