package crucible

import rego.v1

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_security_group_rule"
	some cidr in rc.change.after.cidr_blocks
	not net.cidr_contains("10.0.0.0/8", cidr)
	msg := sprintf("%s opens port %d to %s, outside 10.0.0.0/8", [rc.address, rc.change.after.from_port, cidr])
}
