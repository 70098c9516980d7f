package crucible

import rego.v1

present := {k | some k, v in input.tags; v != ""}

warn contains sprintf("non-empty tags: %s", [concat(", ", sort(present))])
