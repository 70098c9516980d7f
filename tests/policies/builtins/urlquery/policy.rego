package crucible

import rego.v1

warn contains sprintf("%s / %s", [urlquery.encode("a b&c=é"), urlquery.decode("a+b%26c")])
