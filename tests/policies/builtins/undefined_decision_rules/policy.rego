package crucible

import rego.v1

deny contains "never" if input.x == 2

warn := ["not", "a", "match"] if input.x == 3

require_approval if input.x > 5

required_approvals := 3 if input.x > 5
