package crucible

import rego.v1

all_managed if {
	every rc in input.resource_changes {
		rc.mode == "managed"
	}
}

deny contains "data sources are not allowed in this stack" if not all_managed

warn contains "every change deletes" if {
	every rc in input.resource_changes {
		"delete" in rc.change.actions
	}
}

warn contains "every index is valid" if {
	every i, rc in input.resource_changes {
		input.resource_changes[i] == rc
	}
}

warn contains "every label is namespaced" if {
	every label in input.crucible.stack.labels {
		regex.match(`^[a-z]+[:/][a-z]+$`, label)
	}
}
