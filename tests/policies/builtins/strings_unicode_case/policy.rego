package crucible

import rego.v1

warn contains sprintf("%s / %s", [upper("héllo àéî"), lower("HÉLLO ÀÉÎ")])
