package crucible

import rego.v1

warn contains sprintf("%s: %d changes (%s)", [upper(input.name), input.n, concat(", ", input.actions)])

warn contains sprintf("as %%v: %v; as %%s: %s", [input.actions, input.actions])

warn contains sprintf("object: %v", [{"b": [true, null], "a": 1}])

warn contains sprintf("100%% of %s", ["stacks"])

warn contains sprintf("%v|%v|%v", [true, null, 1.5])

warn contains sprintf("%s=%s/%s", [lower("K"), object.get({}, "v", "default"), trim_space(" x ")])

warn contains sprintf("hex %x, padded %03d, negative %d and %d", [255, 7, -7, 180 / 2])

warn contains sprintf("%s,%s;%s", ["a", "b", "c"])

warn contains sprintf("back to back: %s%s", [input.name, input.name])
