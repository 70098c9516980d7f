package crucible

import rego.v1

warn contains sprintf("char %c", [65])
