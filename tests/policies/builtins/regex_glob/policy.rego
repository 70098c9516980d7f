package crucible

import rego.v1

deny contains msg if {
	some rc in input.resource_changes
	not regex.match(`^[a-z][a-z0-9_]*$`, rc.name)
	msg := sprintf("%s: resource names must be snake_case", [rc.address])
}

warn contains regex.replace("db-prod-01", `[0-9]+$`, "NN")

warn contains concat(",", regex.find_n(`[0-9]+`, "a1b22c333", 2))

warn contains concat("|", regex.split(`\s*,\s*`, "a , b,c"))

warn contains sprintf("%v", [[
	glob.match("*.example.com", ["."], "api.example.com"),
	glob.match("*.example.com", ["."], "a.b.example.com"),
	glob.match("**.example.com", ["."], "a.b.example.com"),
	glob.match("prod-*", [], "prod-eu-1"),
	glob.match("t?.micro", ["."], "t3.micro"),
	glob.match("[ab]*", [], "bucket"),
	glob.match("{dev,stage}-*", [], "prod-1"),
]])

warn contains sprintf("quoted: %s", [glob.quote_meta("*.example.com")])

warn contains sprintf("valid: %v/%v", [regex.is_valid(`^a+$`), regex.is_valid(`(`)])
