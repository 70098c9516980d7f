package crucible

import rego.v1

# No count: one approval is implied.
require_approval if "env:prod" in input.crucible.stack.labels

# Helper rules are not part of the decision.
helper := 42
