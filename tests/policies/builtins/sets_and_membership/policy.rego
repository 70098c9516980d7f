package crucible

import rego.v1

labels := {l | some l in input.crucible.stack.labels}

special := {"critical", "pci"}

deny contains "critical stacks need a team label and a prod env" if {
	"critical" in labels
	"env:prod" in labels
	some l in labels
	startswith(l, "team/")
}

warn contains sprintf("and %v, or %v, minus %v", [sort(labels & special), sort(labels | special), sort(labels - special)])

warn contains sprintf("intersection %v, union %v", [sort(intersection({{"a", "b"}, {"b", "c"}})), sort(union({{"a", "b"}, {"b", "c"}}))])

warn contains sprintf("in: %v %v %v", ["critical" in labels, "x" in labels, 2 in [1, 2]])
