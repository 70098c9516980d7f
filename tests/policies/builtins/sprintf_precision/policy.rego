package crucible

import rego.v1

warn contains sprintf("cost %.2f USD, ratio %v, small %e", [12.345, 0.5, 0.000123])
