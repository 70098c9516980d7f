# Required tags (post_plan).
#
# Every AWS resource that is created or updated and supports tags must carry the
# tags in `required_tags`, with non-empty values. A tag whose value is null or blank
# counts as missing. Tags known only at apply (`after_unknown`) are not judged.
package crucible

import rego.v1

required_tags := {"owner", "cost-center", "environment"}

# Resource types that take tags and are checked. Extend to your providers.
taggable(type) if startswith(type, "aws_")

taggable(type) if startswith(type, "azurerm_")

exempt := {"aws_iam_role_policy_attachment", "aws_s3_bucket_acl", "aws_s3_bucket_public_access_block", "aws_route"}

# The attribute holding the resource's tags. The AWS provider merges its `default_tags`
# into `tags_all` (`tags` is then often null), so `tags_all` is preferred when the plan
# has it; other providers only have `tags`.
tags_attribute(change) := "tags_all" if {
	is_object(change.after.tags_all)
} else := "tags_all" if {
	change.after_unknown.tags_all == true
} else := "tags"

# The tags set on the resource, name -> value (none when the attribute is null or absent).
tags_of(change, attr) := change.after[attr] if {
	is_object(change.after[attr])
} else := {}

deny contains msg if {
	some rc in input.resource_changes
	rc.mode == "managed"
	some action in rc.change.actions
	action in {"create", "update"}
	taggable(rc.type)
	not rc.type in exempt
	is_object(rc.change.after)
	attr := tags_attribute(rc.change)
	not rc.change.after_unknown[attr] == true # every tag known only at apply: nothing to judge
	tags := tags_of(rc.change, attr)
	present := {k | v := tags[k]; is_string(v); trim_space(v) != ""}
	later := {k | rc.change.after_unknown[attr][k] == true} # values known only at apply
	missing := (required_tags - present) - later
	count(missing) > 0
	msg := sprintf("%s is missing required tags: %s", [rc.address, concat(", ", sort(missing))])
}
