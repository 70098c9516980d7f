# No destroy outside destroy runs (post_plan).
#
# A tracked or proposed run must never delete anything, and that includes replacements
# (delete-then-create or create-then-delete). Deleting is what destroy runs are for.
package crucible

import rego.v1

deny contains msg if {
	input.crucible.run.type != "destroy"
	some rc in input.resource_changes
	"delete" in rc.change.actions
	msg := sprintf(
		"%s would be destroyed (%s) in a %s run: only destroy runs may delete resources",
		[rc.address, concat(", ", rc.change.actions), input.crucible.run.type],
	)
}
