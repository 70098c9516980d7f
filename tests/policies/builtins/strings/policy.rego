package crucible

import rego.v1

# One object, so a wrong value shows next to its name.
warn contains {
	"lower": lower("ABC"),
	"upper": upper("abc"),
	"split": split("a/b/c", "/"),
	"concat": concat("-", ["a", "b"]),
	"trim": trim("  hello  ", " "),
	"trim_left": trim_left("xxhixx", "x"),
	"trim_right": trim_right("xxhixx", "x"),
	"trim_prefix": trim_prefix("v1.2.3", "v"),
	"trim_suffix": trim_suffix("main.tf", ".tf"),
	"trim_space": trim_space("  a b \t"),
	"startswith": startswith("terraform_data.web", "terraform_"),
	"endswith": endswith("main.tf", ".tf"),
	"contains": contains("abc", "b"),
	"replace": replace("a-b-c", "-", "_"),
	"substring": substring("abcdef", 2, 3),
	"substring_rest": substring("abc", 1, -1),
	"indexof": indexof("abcabc", "c"),
	"indexof_missing": indexof("abc", "z"),
	"indexof_n": indexof_n("abcabc", "a"),
	"replace_n": strings.replace_n({"a": "1", "b": "2"}, "abc"),
	"reverse": strings.reverse("abc"),
	"strings_count": strings.count("cheese", "e"),
	"format_int": format_int(255, 16),
	"to_number": to_number("12.5"),
	"any_prefix_match": strings.any_prefix_match("prod-eu", ["dev-", "prod-"]),
	"any_suffix_match": strings.any_suffix_match("prod-eu", ["-us"]),
}
