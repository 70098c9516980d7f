# Approval above N changes (approval).
#
# More than `one_approver_above` changed resources need one approval, more than
# `two_approvers_above` need two (from different approvers).
package crucible

import rego.v1

one_approver_above := 10

two_approvers_above := 20

changes := input.crucible.counts.add + input.crucible.counts.change + input.crucible.counts.destroy

require_approval if changes > one_approver_above

default required_approvals := 0

required_approvals := 2 if {
	changes > two_approvers_above
} else := 1 if {
	changes > one_approver_above
}

warn contains msg if {
	require_approval
	msg := sprintf("%d changes: %d approval(s) needed before apply", [changes, required_approvals])
}
