package crucible

import rego.v1

# Arrays work as well as sets; duplicates collapse.
deny := ["b", "a", "b"]

# A count alone requires approval.
required_approvals := 2
