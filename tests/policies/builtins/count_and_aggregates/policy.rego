package crucible

import rego.v1

types := {rc.type | some rc in input.resource_changes}

warn contains sprintf("%d changes, %d types, %d characters, %d labels", [
	count(input.resource_changes),
	count(types),
	count("héllo"),
	count(object.keys(input.crucible.counts)),
])

warn contains sprintf("sum %v, max %v, min %v, product %v, sorted %v", [sum([1, 2, 3.5]), max([3, 9, 2]), min({4, 1}), product([2, 3]), sort([3, 1, 2])])
