package crucible

import rego.v1

warn contains "all sums are positive" if {
	every x in input.xs {
		every y in input.ys {
			x + y > 0
		}
	}
}
