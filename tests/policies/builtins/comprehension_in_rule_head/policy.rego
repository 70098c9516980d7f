package crucible

import rego.v1

warn contains sprintf("%d distinct", [count({x | some x in input.xs})])
