package crucible

import rego.v1

warn contains {
	"base64": base64.encode("crucible"),
	"base64_decode": base64.decode("Y3J1Y2libGU="),
	"base64url": base64url.encode("??>"),
	"hex": hex.encode("hi"),
	"json": json.marshal({"b": 1, "a": [1, 2]}),
	"json_roundtrip": json.unmarshal(`{"k": [true, null]}`),
	"sha256": crypto.sha256("abc"),
	"md5": crypto.md5("abc"),
	"bytes": units.parse_bytes("10KiB"),
	"units": units.parse("1.5K"),
	"semver": semver.compare("1.2.3", "1.10.0"),
	"semver_valid": semver.is_valid("1.2.3-rc.1"),
	"yaml": yaml.unmarshal("a:\n  - 1\n  - x\n"),
	"is_valid": [json.is_valid("{}"), json.is_valid("{")],
}
