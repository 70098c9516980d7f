package crucible

import rego.v1

warn contains sprintf("%s %s %s %s", [format_int(10, 2), format_int(10, 8), format_int(10, 10), format_int(10, 16)])
