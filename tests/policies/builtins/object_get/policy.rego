package crucible

import rego.v1

retention(rc) := object.get(rc.change.after, ["backup", "retention_days"], 0)

deny contains msg if {
	some rc in input.resource_changes
	rc.type == "aws_db_instance"
	retention(rc) < 7
	msg := sprintf("%s keeps backups for %d days; 7 are required", [rc.address, retention(rc)])
}

warn contains object.get(input, "missing", "fallback")

warn contains "null is a value, not a missing key" if {
	object.get({"a": {"b": null}}, ["a", "b"], "default") == null
}

warn contains sprintf("arrays index by position: %s", [object.get({"xs": ["a", "b"]}, ["xs", 1], "none")])
