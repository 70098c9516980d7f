package crucible

import rego.v1

deny contains "too big" if to_number(input.size) > 10
