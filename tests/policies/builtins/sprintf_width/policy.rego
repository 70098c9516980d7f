package crucible

import rego.v1

warn contains sprintf("|%5s|%-5s|%5d|", ["ab", "cd", 42])
