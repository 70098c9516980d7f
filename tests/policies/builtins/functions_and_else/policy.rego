package crucible

import rego.v1

size_class(n) := "small" if {
	n < 10
} else := "medium" if {
	n < 100
} else := "large"

bigger(a, b) := a if a >= b

bigger(a, b) := b if b > a

first(xs) := xs[0]

user := input.user

warn contains concat("/", [size_class(1), size_class(50), size_class(500)])

warn contains sprintf("max of 3 and 7 is %d", [bigger(3, 7)])

warn contains sprintf("first: %s", [first(["a", "b"])])

warn contains sprintf("with: %s", [name]) if name := user with input as {"user": "bob"}
